/**
 * Live backup points (core/livePoint.ts) against the recording runner: the exact plan (prepare,
 * the four-command switch, the bookkeeping), the refusals before anything is touched, the undo
 * when the switch fails before the hand-over, and what recover does on either side of it.
 * SYNTHETIC: the depth-3 chain of repoFixtures, its top c3 mapped and open (a running VM); the
 * new top's COW has uuid NEXT.
 */
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import * as lvm from '../../src/tools/lvm.js';
import { resumeLivePoint, settleLivePoint, takeLivePoint } from '../../src/core/livePoint.js';
import { backupPointName } from '../../src/core/vmDisks.js';
import { nodeSession } from '../../src/core/node.js';
import type { CloneObj } from '../../src/core/metadata.js';
import {
  chainDevs,
  chainRows,
  cloneRow,
  compact,
  dmInfo,
  DM_INFO,
  ctxOf,
  dmRemove,
  expectObserve,
  stateOf,
  journalBegin,
  journalEnd,
  lvDev,
  lvRow,
  roDev,
  ro,
  rw,
  IMAGE_SECTORS,
  R,
  U,
  VG,
  W,
  type Dev,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, vgsArgv, vgsJson } from './support.js';

const NEXT = 'Nx1Ab2-Cd3E-f4Gh-I5jK-l6Mn-O7pQ-r8St9u';
const POINT = backupPointName('c3', 0);
const NEXT_NAME = `${POINT}-next`;
const RW_TABLE = `0 ${IMAGE_SECTORS} snapshot 253:7 253:8 PO 128`;
const RO_TABLE = `0 ${IMAGE_SECTORS} snapshot /dev/mapper/${ro(U.c2)} /dev/mapper/vg-c3 P 128`;
const NEW_RW_TABLE = `0 ${IMAGE_SECTORS} snapshot /dev/mapper/${ro(U.c3)} /dev/mapper/vg-c3--b0--next PO 128`;
const c3Of = (rows: Array<Record<string, unknown>>, devs: Dev[]) =>
  stateOf(rows, devs).repo.byName.get('c3') as CloneObj;
const nextRow = (state: 'initializing' | 'live' = 'initializing', name = NEXT_NAME) =>
  cloneRow(name, NEXT, U.c3, { chunk: 128, active: 'exclusive', open: true, minor: 11, state });

/** The checks before anything changes: the VM device's snapshot status, then its table. */
const looked = (r: ReturnType<typeof recorder>, status = `0 ${IMAGE_SECTORS} snapshot 16/32768 16`) =>
  r
    .expect(['dmsetup', 'status', rw(U.c3)], { ...R, stdout: `${status}\n` })
    .expect(['dmsetup', 'table', rw(U.c3)], { ...R, stdout: `${RW_TABLE}\n` });

/** The new top's COW: -aey, zeroed, initializing, on c3 with its chunk (and, cached, the marker). */
const newCowArgv = (extraTags: string[] = []) =>
  lvm.createLvReq(
    {
      vg: VG,
      name: NEXT_NAME,
      bytes: 16 * 1024 * 1024,
      activate: 'ey',
      zero: true,
      tags: [
        'cowstack_role:clone',
        'cowstack_state:initializing',
        `cowstack_parent:${U.c3}`,
        'cowstack_chunk:128',
        ...extraTags,
      ],
    },
    {},
  ).argv;

/** Prepare: the journal entry, the new COW (-aey, zeroed, initializing), the point's ro device loaded, not live. */
const prepared = (r: ReturnType<typeof recorder>) =>
  r
    .expect(journalBegin('c3', 'live-backup'), W)
    .expect(newCowArgv(), W)
    .expect(['dmsetup', 'create', ro(U.c3), '--uuid', `COWSTACK-ro-${compact(U.c3)}`, '--notable'], W)
    .expect(['dmsetup', 'reload', ro(U.c3), '--readonly', '--table', RO_TABLE], W)
    .expect(lvsArgv(`${VG}/${NEXT_NAME}`), { ...R, stdout: lvsJson([nextRow()]) })
    // The entry again, naming the new COW: from now on its header is recover's proof of a switch.
    .expect(journalBegin('c3', 'live-backup'), W);

/** The point committed (read-only) and renamed, the new COW named after the top. */
const pointRenamed = (r: ReturnType<typeof recorder>) =>
  r
    .expect(
      lvm.changeLvReq(
        `${VG}/c3`,
        { readOnly: true, tags: { del: ['cowstack_state:live'], add: ['cowstack_state:committed'] } },
        {},
      ).argv,
      W,
    )
    .expect(lvm.renameLvReq(VG, 'c3', POINT).argv, W)
    .expect(lvm.renameLvReq(VG, NEXT_NAME, 'c3').argv, W);

/** pointRenamed, and the new top marked live; not shared yet. */
const pointCommitted = (r: ReturnType<typeof recorder>) =>
  pointRenamed(r).expect(
    lvm.tagLvReq(`${VG}/c3`, { del: ['cowstack_state:initializing'], add: ['cowstack_state:live'] }, {}).argv,
    W,
  );

/** After the switch: the VM's device named after the new COW, the point committed, read-only, shared. */
const finished = (r: ReturnType<typeof recorder>, device = rw(U.c3)) =>
  pointCommitted(r.expect(['dmsetup', 'rename', device, rw(NEXT)], W)).expect(
    lvm.activateReq(`${VG}/${POINT}`, 'shared', {}).argv,
    W,
  );

describe('live backup point of a running disk', () => {
  it('prepares, switches in four dmsetup calls (suspend, hand-over, load, resume), commits the point', async () => {
    const rows = chainRows({ mapped: true });
    const devs = chainDevs(1);
    const r = finished(
      prepared(looked(recorder()))
        .expect(['dmsetup', 'suspend', rw(U.c3)], W)
        .expect(['dmsetup', 'resume', ro(U.c3)], W)
        .expect(['dmsetup', 'reload', rw(U.c3), '--table', NEW_RW_TABLE], W)
        .expect(['dmsetup', 'resume', rw(U.c3)], W),
    ).expect(journalEnd('c3', 'live-backup'), W);
    const res = await takeLivePoint(ctxOf(r), stateOf(rows, devs), c3Of(rows, devs), POINT);
    expect(res).toMatchObject({ top: 'c3', point: POINT });
    expect(res.pauseMs).toBeGreaterThanOrEqual(0);
    r.verify();
  });

  it('a failed hand-over: the point device goes, then the VM resumes on its own table', async () => {
    const rows = chainRows({ mapped: true });
    const devs = chainDevs(1);
    const r = prepared(looked(recorder()))
      .expect(['dmsetup', 'suspend', rw(U.c3)], W)
      .expect(['dmsetup', 'resume', ro(U.c3)], { ...W, exitCode: 1, stderr: 'device-mapper: resume ioctl failed' })
      .expect(dmRemove(ro(U.c3)), W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W)
      .expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W)
      .expect(journalEnd('c3', 'live-backup'), W);
    await expect(takeLivePoint(ctxOf(r), stateOf(rows, devs), c3Of(rows, devs), POINT)).rejects.toThrow(
      /resume ioctl failed/,
    );
    r.verify();
  });

  it.each([
    ['not mapped here', chainRows(), [] as Dev[], undefined, /not mapped on local/],
    [
      'interrupted before',
      chainRows({ mapped: true }),
      [...chainDevs(1), roDev(U.c3, 10, 0)],
      undefined,
      /interrupted/,
    ],
    [
      'an overflowed COW',
      chainRows({ mapped: true }),
      chainDevs(1),
      `0 ${IMAGE_SECTORS} snapshot Overflow`,
      /overflow/,
    ],
  ])('refuses %s, touching nothing', async (_what, rows, devs, status, message) => {
    const r = recorder();
    if (status) r.expect(['dmsetup', 'status', rw(U.c3)], { ...R, stdout: `${status}\n` });
    const e = await rejectionOf(takeLivePoint(ctxOf(r), stateOf(rows, devs), c3Of(rows, devs), POINT), EXIT.REFUSED);
    expect(e.message).toMatch(message);
    r.verify();
  });
});

describe('recover of an interrupted live backup point', () => {
  const entry = { op: 'live-backup' as const, vg: VG, name: 'c3', uuid: U.c3, point: POINT, started: '' };
  const rows = [...chainRows({ mapped: true }), nextRow()];
  const suspendedTop = chainDevs(1).map((d) => (d.name === rw(U.c3) ? { ...d, attr: 'L-sw' } : d));
  const nextDev = lvDev(NEXT_NAME, NEXT, 11, 0);
  /** Before any lvs (which would block on the suspended device): dmsetup alone. */
  const devicesFirst = (r: ReturnType<typeof recorder>, devs: Dev[]) =>
    r.expect(DM_INFO, { ...R, stdout: dmInfo(devs) });

  it('killed while the VM was suspended, before the hand-over: undone (point device first, then resume)', async () => {
    const r = devicesFirst(recorder(), [...suspendedTop, { ...roDev(U.c3, 10, 0), attr: '-I-r' }, nextDev])
      .expect(dmRemove(ro(U.c3)), W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W);
    expectObserve(r, rows, [...chainDevs(1), nextDev]).expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W);
    expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('undone');
    r.verify();
  });

  it('killed after the hand-over: finished (new table loaded, VM resumed, never on the invalidated one)', async () => {
    const ro1 = { ...roDev(U.c3, 10, 0), attr: 'L--r' };
    const r = devicesFirst(recorder(), [...suspendedTop, ro1, nextDev])
      .expect(['dmsetup', 'table', ro(U.c3)], { ...R, stdout: `${RO_TABLE}\n` })
      .expect(['dmsetup', 'reload', rw(U.c3), '--table', NEW_RW_TABLE], W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W);
    finished(expectObserve(r, rows, [...chainDevs(1), { ...ro1, open: 1 }, nextDev]));
    expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('finished');
    r.verify();
  });

  it("the second live point of a disk: its VM device is found by name (its dm uuid is the first top's)", async () => {
    const first = 'Fi1Rs2-tT3o-p4Xy-Z5ab-c6De-F7gH-i8Jk9L';
    const byName = chainDevs(1).map((d) => (d.name === rw(U.c3) ? { ...d, uuid: `COWSTACK-rw-${compact(first)}` } : d));
    const r = devicesFirst(recorder(), [...byName, nextDev]);
    expectObserve(r, rows, [...byName, nextDev]).expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W);
    expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('undone');
    r.verify();
  });
});

/**
 * A power cut after the switch leaves no device at all: the new top's COW alone says whether the
 * VM's device was loaded on it (the snapshot constructor wrote its header there), and only once
 * the journal entry names that COW (made and zeroed).
 */
describe('recover of a live backup point after a power cut', () => {
  const named = { op: 'live-backup' as const, vg: VG, name: 'c3', uuid: U.c3, point: POINT, started: '', next: NEXT };
  const cold = [...chainRows(), cloneRow(NEXT_NAME, NEXT, U.c3, { chunk: 128, state: 'initializing' })];
  const nextCow = `/dev/mapper/vg-${POINT.replace(/-/g, '--')}--next`;
  const HEADER = '  1883336275           1\n           1         128\n';
  const ZEROS = '           0           0\n           0           0\n';
  /** Nothing to resume (no device), the one observation, then the new COW's header read and closed again. */
  const headerRead = (r: ReturnType<typeof recorder>, header: string) =>
    expectObserve(r.expect(DM_INFO, { ...R, stdout: dmInfo([]) }), cold, [])
      .expect(lvm.activateReq(`${VG}/${NEXT_NAME}`, 'exclusive', {}).argv, W)
      .expect(['blockdev', '--flushbufs', nextCow], W)
      .expect(['od', '-An', '-v', '-tu4', '-w8', '-j', '0', '-N', '16', nextCow], { ...R, stdout: header })
      .expect(lvm.deactivateReq(`${VG}/${NEXT_NAME}`, {}).argv, W);
  const settle = async (
    r: ReturnType<typeof recorder>,
    entry: typeof named | Omit<typeof named, 'next'>,
    dry = false,
  ) => settleLivePoint(ctxOf(r, { dryRun: dry }), entry, await resumeLivePoint(ctxOf(r), entry));

  it('the header is there: finished (the point committed, the new COW the live top, both unmapped)', async () => {
    const r = pointCommitted(headerRead(recorder(), HEADER));
    expect(await settle(r, named)).toBe('finished');
    r.verify();
  });

  it('no header: the switch was not made, undone (the new COW removed, the disk is the old top)', async () => {
    const r = headerRead(recorder(), ZEROS).expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W);
    expect(await settle(r, named)).toBe('undone');
    r.verify();
  });

  it('an entry that does not name the new COW: undone without reading it (its bytes may be stale)', async () => {
    const { next: _next, ...unnamed } = named;
    const r = expectObserve(recorder().expect(DM_INFO, { ...R, stdout: dmInfo([]) }), cold, []).expect(
      lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv,
      W,
    );
    expect(await settle(r, unnamed)).toBe('undone');
    r.verify();
  });

  it('--dry-run refuses: the header cannot be read without activating the COW', async () => {
    const r = expectObserve(recorder().expect(DM_INFO, { ...R, stdout: dmInfo([]) }), cold, []);
    const e = await rejectionOf(settle(r, named, true), EXIT.REFUSED);
    expect(e.message).toContain(`${VG}/${NEXT_NAME}`);
    r.verify();
  });

  it('the finish had marked the new top live: finished without reading anything', async () => {
    const live = [...chainRows(), cloneRow(NEXT_NAME, NEXT, U.c3, { chunk: 128 })];
    const r = pointRenamed(expectObserve(recorder().expect(DM_INFO, { ...R, stdout: dmInfo([]) }), live, []));
    expect(await settle(r, named)).toBe('finished');
    r.verify();
  });
});

/**
 * A disk with a write-back cache on this node (dm-writecache `cowstack-wb-<c3>`, minor 12, over
 * c3's COW): drained while the VM runs, drained again under the suspend and checked (0 blocks in
 * use), the point's table loaded on the drained COW, the new top cached afresh (`wb_<NEXT>`).
 */
describe('live backup point of a write-back cached disk', () => {
  const CVG = 'cowstack_cache';
  const MARKER = 'cowstack_wbhost:node1';
  const wb = (uuid: string) => `cowstack-wb-${compact(uuid)}`;
  const WB_RW_TABLE = `0 ${IMAGE_SECTORS} snapshot 253:7 253:12 PO 128`;
  const WB_NEW_RW_TABLE = `0 ${IMAGE_SECTORS} snapshot /dev/mapper/${ro(U.c3)} /dev/mapper/${wb(NEXT)} PO 128`;
  const NEXT_WB_TABLE =
    `0 ${(16 * 1024 * 1024) / 512} writecache s /dev/mapper/vg-c3--b0--next ` +
    `/dev/mapper/${CVG}-wb_${compact(NEXT)} 4096 0`;
  const marked = (row: Record<string, unknown>): Record<string, unknown> => ({
    ...row,
    lv_tags: [...(row.lv_tags as string[]), MARKER],
  });
  const rows = chainRows({ mapped: true }).map((row) => (row.lv_name === 'c3' ? marked(row) : row));
  const wbDev = (uuid: string, minor: number, open = 1): Dev => ({
    name: wb(uuid),
    uuid: `COWSTACK-wb-${compact(uuid)}`,
    open,
    minor,
  });
  const devs = [...chainDevs(1), wbDev(U.c3, 12)];
  const status = (used: number) => `0 32768 writecache 0 4080 ${4080 - used} 0 10 5 ${used} 0 0 0 ${used} 0 0 0\n`;

  /** Steps 1-9: journal, new COW (marked), empty point device, journal naming it, new cache, drain (VM runs). */
  const preparedWb = (r: ReturnType<typeof recorder>, dirty = 256) =>
    r
      .expect(['dmsetup', 'status', rw(U.c3)], { ...R, stdout: `0 ${IMAGE_SECTORS} snapshot 16/32768 16\n` })
      .expect(['dmsetup', 'table', rw(U.c3)], { ...R, stdout: `${WB_RW_TABLE}\n` })
      .expect(['uname', '-n'], { ...R, stdout: 'node1\n' })
      .expect(journalBegin('c3', 'live-backup'), W)
      .expect(newCowArgv([MARKER]), W)
      .expect(['dmsetup', 'create', ro(U.c3), '--uuid', `COWSTACK-ro-${compact(U.c3)}`, '--notable'], W)
      .expect(lvsArgv(`${VG}/${NEXT_NAME}`), { ...R, stdout: lvsJson([marked(nextRow())]) })
      .expect(journalBegin('c3', 'live-backup'), W)
      .expect(['dmsetup', 'status', wb(U.c3)], { ...R, stdout: status(dirty) })
      .expect(
        lvm.createLvReq({
          vg: CVG,
          name: `wb_${compact(NEXT)}`,
          bytes: 16 * 1024 * 1024,
          tags: ['cowstack_cache:writeback', `cowstack_origin:${NEXT}`],
        }).argv,
        W,
      )
      .expect(lvm.activateReq(`${CVG}/wb_${compact(NEXT)}`, 'exclusive').argv, W)
      .expect(
        [
          'dd',
          'if=/dev/zero',
          `of=/dev/mapper/${CVG}-wb_${compact(NEXT)}`,
          'bs=4096',
          'count=1',
          'oflag=direct',
          'conv=fsync',
          'status=none',
        ],
        W,
      )
      .expect(['dmsetup', 'create', wb(NEXT), '--uuid', `COWSTACK-wb-${compact(NEXT)}`, '--table', NEXT_WB_TABLE], W)
      .expect(['dmsetup', 'message', wb(U.c3), '0', 'flush'], W);

  /** Steps 10-11 and the check: suspend, the last flush, the status that must say 0. */
  const drained = (r: ReturnType<typeof recorder>, left = 0) =>
    r
      .expect(['dmsetup', 'suspend', rw(U.c3)], W)
      .expect(['dmsetup', 'message', wb(U.c3), '0', 'flush'], W)
      .expect(['dmsetup', 'status', wb(U.c3)], { ...R, stdout: status(left) });

  /** The old cache goes before the point is committed, then the point's marker. */
  const oldCacheGone = (r: ReturnType<typeof recorder>) =>
    r
      .expect(dmRemove(wb(U.c3)), W)
      .expect(lvm.deactivateReq(`${CVG}/wb_${compact(U.c3)}`).argv, W)
      .expect(lvm.removeLvReq(`${CVG}/wb_${compact(U.c3)}`).argv, W)
      .expect(lvm.tagLvReq(`${VG}/c3`, { del: [MARKER] }, {}).argv, W);

  /** The usual finish after the rename (finished() without the rename: the old cache goes in between). */
  const committed = (r: ReturnType<typeof recorder>) =>
    pointCommitted(r).expect(lvm.activateReq(`${VG}/${POINT}`, 'shared', {}).argv, W);

  const takeWb = (r: ReturnType<typeof recorder>) =>
    takeLivePoint(ctxOf(r), stateOf(rows, devs), stateOf(rows, devs).repo.byName.get('c3') as CloneObj, POINT);

  it('drains, checks 0 under the suspend, loads the point on the drained COW, caches the new top afresh', async () => {
    const r = drained(preparedWb(recorder()))
      .expect(['dmsetup', 'reload', ro(U.c3), '--readonly', '--table', RO_TABLE], W)
      .expect(['dmsetup', 'resume', ro(U.c3)], W)
      .expect(['dmsetup', 'reload', rw(U.c3), '--table', WB_NEW_RW_TABLE], W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W)
      .expect(['dmsetup', 'rename', rw(U.c3), rw(NEXT)], W);
    committed(oldCacheGone(r)).expect(journalEnd('c3', 'live-backup'), W);
    const res = await takeWb(r);
    expect(res).toMatchObject({
      top: 'c3',
      point: POINT,
      writeback: { drainedBlocks: 256, cache: `/dev/mapper/${wb(NEXT)}` },
    });
    r.verify();
  });

  it('refuses when blocks are still in the cache under the suspend: undone, the VM resumed on its table', async () => {
    const undone = (r: ReturnType<typeof recorder>) =>
      r
        .expect(dmRemove(ro(U.c3)), W)
        .expect(['dmsetup', 'resume', rw(U.c3)], W)
        .expect(dmRemove(wb(NEXT)), W)
        .expect(lvm.removeLvReq(`${CVG}/wb_${compact(NEXT)}`).argv, W)
        .expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W)
        .expect(journalEnd('c3', 'live-backup'), W);
    const r = undone(drained(preparedWb(recorder()), 3));
    const e = await rejectionOf(takeWb(r), EXIT.REFUSED);
    expect(e.message).toMatch(`${wb(U.c3)} still holds 3 block(s) not on the COW after its flush`);
    r.verify();
    // A re-run after that failure starts from the top again, on the disk as it was, and succeeds.
    const again = drained(preparedWb(recorder(), 5))
      .expect(['dmsetup', 'reload', ro(U.c3), '--readonly', '--table', RO_TABLE], W)
      .expect(['dmsetup', 'resume', ro(U.c3)], W)
      .expect(['dmsetup', 'reload', rw(U.c3), '--table', WB_NEW_RW_TABLE], W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W)
      .expect(['dmsetup', 'rename', rw(U.c3), rw(NEXT)], W);
    committed(oldCacheGone(again)).expect(journalEnd('c3', 'live-backup'), W);
    expect((await takeWb(again)).writeback?.drainedBlocks).toBe(5);
    again.verify();
  });

  it('--dry-run prints the whole plan (the new cache named for the uuid to come) and runs no write', async () => {
    const { DryRunRunner } = await import('../../src/exec/dryRunRunner.js');
    const r = recorder()
      .expect(['dmsetup', 'status', rw(U.c3)], { ...R, stdout: `0 ${IMAGE_SECTORS} snapshot 16/32768 16\n` })
      .expect(['dmsetup', 'table', rw(U.c3)], { ...R, stdout: `${WB_RW_TABLE}\n` })
      .expect(['uname', '-n'], { ...R, stdout: 'node1\n' });
    const dry = new DryRunRunner(r);
    const ctx = nodeSession({ runner: dry, vg: VG, dryRun: true });
    await takeLivePoint(ctx, stateOf(rows, devs), stateOf(rows, devs).repo.byName.get('c3') as CloneObj, POINT);
    r.verify();
    const planned = dry.planned.map((p) => p.argv.filter((a) => !a.startsWith('--config')).join(' '));
    expect(planned.filter((p) => p.startsWith('dmsetup'))).toEqual([
      `dmsetup create ${ro(U.c3)} --uuid COWSTACK-ro-${compact(U.c3)} --notable`,
      expect.stringMatching(`^dmsetup create cowstack-wb-NEWTOPUUID --uuid COWSTACK-wb-NEWTOPUUID --table `),
      `dmsetup message ${wb(U.c3)} 0 flush`,
      `dmsetup suspend ${rw(U.c3)}`,
      `dmsetup message ${wb(U.c3)} 0 flush`,
      `dmsetup reload ${ro(U.c3)} --readonly --table ${RO_TABLE}`,
      `dmsetup resume ${ro(U.c3)}`,
      `dmsetup reload ${rw(U.c3)} --table ${WB_NEW_RW_TABLE.replace(compact(NEXT), 'NEWTOPUUID')}`,
      `dmsetup resume ${rw(U.c3)}`,
      `dmsetup rename ${rw(U.c3)} cowstack-rw-<the new COW uuid>`,
      `dmsetup remove --retry ${wb(U.c3)}`,
    ]);
  });

  describe('recover', () => {
    const entry = {
      op: 'live-backup' as const,
      vg: VG,
      name: 'c3',
      uuid: U.c3,
      point: POINT,
      started: '',
      writeback: CVG,
    };
    const nextDev = lvDev(NEXT_NAME, NEXT, 11, 1);
    const newWb = wbDev(NEXT, 13, 0);
    const rowsWithNext = [...rows, marked(nextRow())];
    const suspendedTop = devs.map((d) => (d.name === rw(U.c3) ? { ...d, attr: 'L-sw' } : d));

    it('killed after step 13 (point live, VM suspended on the old cache): the new cache found, finished', async () => {
      const ro1 = { ...roDev(U.c3, 10, 0), attr: 'L--r' };
      const r = recorder()
        .expect(DM_INFO, { ...R, stdout: dmInfo([...suspendedTop, ro1, nextDev, newWb]) })
        .expect(['dmsetup', 'table', ro(U.c3)], { ...R, stdout: `${RO_TABLE}\n` })
        .expect(['dmsetup', 'table'], {
          ...R,
          stdout:
            `${wb(U.c3)}: 0 32768 writecache s 253:8 253:20 4096 0\n` +
            `${wb(NEXT)}: 0 32768 writecache s 253:11 253:21 4096 0\n`,
        })
        .expect(['dmsetup', 'reload', rw(U.c3), '--table', WB_NEW_RW_TABLE], W)
        .expect(['dmsetup', 'resume', rw(U.c3)], W);
      expectObserve(r, rowsWithNext, [...devs, { ...ro1, open: 1 }, nextDev, { ...newWb, open: 1 }])
        .expect(lvsArgv(`${CVG}/wb_${compact(U.c3)}`), {
          ...R,
          stdout: lvsJson([
            lvRow({
              vg: CVG,
              name: `wb_${compact(U.c3)}`,
              uuid: 'Wb',
              size: 16 * 1024 * 1024,
              tags: [],
              active: 'exclusive',
            }),
          ]),
        })
        .expect(['dmsetup', 'message', wb(U.c3), '0', 'flush'], W)
        .expect(['dmsetup', 'status', wb(U.c3)], { ...R, stdout: status(0) })
        .expect(['dmsetup', 'rename', rw(U.c3), rw(NEXT)], W);
      committed(oldCacheGone(r));
      expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('finished');
      r.verify();
    });

    it('killed after step 11 (drained, point not live): undone, the new cache and COW removed', async () => {
      const r = recorder()
        .expect(DM_INFO, {
          ...R,
          stdout: dmInfo([...suspendedTop, { ...roDev(U.c3, 10, 0), attr: '---r' }, nextDev, newWb]),
        })
        .expect(dmRemove(ro(U.c3)), W)
        .expect(['dmsetup', 'resume', rw(U.c3)], W);
      expectObserve(r, rowsWithNext, [...devs, nextDev, newWb])
        .expect(lvsArgv(`${CVG}/wb_${compact(NEXT)}`), {
          ...R,
          stdout: lvsJson([
            lvRow({ vg: CVG, name: `wb_${compact(NEXT)}`, uuid: 'Wn', size: 16 * 1024 * 1024, tags: [] }),
          ]),
        })
        .expect(dmRemove(wb(NEXT)), W)
        .expect(lvm.removeLvReq(`${CVG}/wb_${compact(NEXT)}`).argv, W)
        .expect(lvm.removeLvReq(`${VG}/${NEXT_NAME}`, {}).argv, W);
      expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('undone');
      r.verify();
    });

    it('a power cut after the switch: the new cache written back into the new COW, header read, finished', async () => {
      const coldRows = [
        ...chainRows().map((row) => (row.lv_name === 'c3' ? marked(row) : row)),
        marked(cloneRow(NEXT_NAME, NEXT, U.c3, { chunk: 128, state: 'initializing' })),
      ];
      const cacheLv = (uuid: string) =>
        lvRow({
          vg: CVG,
          name: `wb_${compact(uuid)}`,
          uuid: `Wb${uuid.slice(2)}`,
          size: 16 * 1024 * 1024,
          tags: ['cowstack_cache:writeback', `cowstack_origin:${uuid}`],
        });
      const cvg = { vg_name: CVG, vg_uuid: 'x', vg_size: 2 ** 31, vg_free: 2 ** 30, vg_extent_size: 4 * 2 ** 20 };
      const nextCow = `/dev/mapper/vg-${POINT.replace(/-/g, '--')}--next`;
      const newCache = `${CVG}/wb_${compact(NEXT)}`;
      const r = expectObserve(recorder().expect(DM_INFO, { ...R, stdout: dmInfo([]) }), coldRows, [])
        .expect(vgsArgv(CVG), { ...R, stdout: vgsJson([{ ...cvg, lv_count: 2 }]) })
        .expect(lvsArgv(CVG), { ...R, stdout: lvsJson([cacheLv(U.c3), cacheLv(NEXT)]) });
      expectObserve(r, coldRows, [])
        // The new cache, attached again over the new COW and written back: the header may be in it only.
        .expect(lvm.activateReq(`${VG}/${NEXT_NAME}`, 'exclusive', {}).argv, W)
        .expect(lvm.activateReq(newCache, 'exclusive').argv, W)
        .expect(['dmsetup', 'create', wb(NEXT), '--uuid', `COWSTACK-wb-${compact(NEXT)}`, '--table', NEXT_WB_TABLE], W)
        .expect(['dmsetup', 'status', wb(NEXT)], { ...R, stdout: status(3) })
        .expect(['dmsetup', 'message', wb(NEXT), '0', 'flush'], W)
        .expect(['dmsetup', 'message', wb(NEXT), '0', 'cleaner'], W)
        .expect(['dmsetup', 'status', wb(NEXT)], { ...R, stdout: status(0) })
        .expect(dmRemove(wb(NEXT)), W)
        .expect(lvm.deactivateReq(newCache).argv, W)
        .expect(lvm.removeLvReq(newCache).argv, W)
        .expect(lvm.tagLvReq(`${VG}/${NEXT_NAME}`, { del: [MARKER] }, {}).argv, W)
        .expect(['blockdev', '--flushbufs', nextCow], W)
        .expect(['od', '-An', '-v', '-tu4', '-w8', '-j', '0', '-N', '16', nextCow], {
          ...R,
          stdout: '  1883336275           1\n           1         128\n',
        })
        .expect(lvm.deactivateReq(`${VG}/${NEXT_NAME}`, {}).argv, W)
        // The old cache was drained before the switch: removed unread.
        .expect(lvsArgv(`${CVG}/wb_${compact(U.c3)}`), { ...R, stdout: lvsJson([cacheLv(U.c3)]) })
        .expect(lvm.deactivateReq(`${CVG}/wb_${compact(U.c3)}`).argv, W)
        .expect(lvm.removeLvReq(`${CVG}/wb_${compact(U.c3)}`).argv, W)
        .expect(lvm.tagLvReq(`${VG}/c3`, { del: [MARKER] }, {}).argv, W);
      pointCommitted(r);
      const cold = { ...entry, next: NEXT };
      expect(await settleLivePoint(ctxOf(r), cold, await resumeLivePoint(ctxOf(r), cold))).toBe('finished');
      r.verify();
    });

    it('a re-run after a finished recover does nothing', async () => {
      const done = rows.map((row) =>
        row.lv_name === 'c3'
          ? cloneRow(POINT, U.c3, U.c2, { state: 'committed', chunk: 128, active: 'shared', open: true, minor: 8 })
          : row,
      );
      const top = marked(cloneRow('c3', NEXT, U.c3, { chunk: 128, active: 'exclusive', open: true, minor: 11 }));
      const renamed = { ...chainDevs(1).find((d) => d.name === rw(U.c3))!, name: rw(NEXT) };
      const after = [...chainDevs(1).filter((d) => d.name !== rw(U.c3)), renamed, roDev(U.c3, 10, 1), wbDev(NEXT, 13)];
      const r = recorder().expect(DM_INFO, { ...R, stdout: dmInfo(after) });
      expectObserve(r, [...done, top], after);
      expect(await settleLivePoint(ctxOf(r), entry, await resumeLivePoint(ctxOf(r), entry))).toBe('finished');
      r.verify();
    });
  });
});
