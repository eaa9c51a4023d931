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
import { lvsArgv, lvsJson, recorder, rejectionOf } from './support.js';

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

/** Prepare: the journal entry, the new COW (-aey, zeroed, initializing), the point's ro device loaded, not live. */
const prepared = (r: ReturnType<typeof recorder>) =>
  r
    .expect(journalBegin('c3', 'live-backup'), W)
    .expect(
      lvm.createLvReq(
        {
          vg: VG,
          name: NEXT_NAME,
          bytes: 16 * 1024 * 1024,
          activate: 'ey',
          zero: true,
          tags: ['cowstack_role:clone', 'cowstack_state:initializing', `cowstack_parent:${U.c3}`, 'cowstack_chunk:128'],
        },
        {},
      ).argv,
      W,
    )
    .expect(['dmsetup', 'create', ro(U.c3), '--uuid', `COWSTACK-ro-${compact(U.c3)}`, '--notable'], W)
    .expect(['dmsetup', 'reload', ro(U.c3), '--readonly', '--table', RO_TABLE], W)
    .expect(lvsArgv(`${VG}/${NEXT_NAME}`), { ...R, stdout: lvsJson([nextRow()]) });

/** After the switch: the VM's device named after the new COW, the point committed, read-only, shared. */
const finished = (r: ReturnType<typeof recorder>, device = rw(U.c3)) =>
  r
    .expect(['dmsetup', 'rename', device, rw(NEXT)], W)
    .expect(
      lvm.changeLvReq(
        `${VG}/c3`,
        { readOnly: true, tags: { del: ['cowstack_state:live'], add: ['cowstack_state:committed'] } },
        {},
      ).argv,
      W,
    )
    .expect(lvm.renameLvReq(VG, 'c3', POINT).argv, W)
    .expect(lvm.renameLvReq(VG, NEXT_NAME, 'c3').argv, W)
    .expect(
      lvm.tagLvReq(`${VG}/c3`, { del: ['cowstack_state:initializing'], add: ['cowstack_state:live'] }, {}).argv,
      W,
    )
    .expect(lvm.activateReq(`${VG}/${POINT}`, 'shared', {}).argv, W);

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
