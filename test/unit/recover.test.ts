import { describe, expect, it } from 'vitest';
import { JOURNAL_DIR, readJournal } from '../../src/core/journal.js';
import { recover } from '../../src/core/recover.js';
import { stagingFiles } from '../../src/core/stage/files.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  commitMarkArgv,
  MiB,
  U,
  VG,
  chainDevs,
  chainRows,
  cloneRow,
  expectObserve,
  expectAncestorsReleased,
  expectObserveDevicesFirst,
  imageRow,
  journalBegin,
  journalEnd,
  journalFile,
  lvDev,
  ro,
  rw,
  rwDev,
  roDev,
  compact,
  type Dev,
  W,
  dmRemove,
  expectJournalRead,
  JOURNAL_LS,
  ctxOf,
  daemonStopArgv,
} from './repoFixtures.js';
import { recorder } from './support.js';

// SYNTHETIC: LV rows and dm devices come from repoFixtures; journal entries and dmsetup outputs are hand-written.

const STARTED = '2026-01-12T10:31:02.417Z';
const remove = dmRemove;

const expectJournal = expectJournalRead;
const entry = (op: string, name: string, uuid?: string, vg = VG) =>
  `${JSON.stringify({ op, vg, name, ...(uuid ? { uuid } : {}), started: STARTED })}\n`;

/**
 * What recover reads after settling the journal: nodeStatus (observe, dmsetup status, a table per
 * cowstack device, the journal again), then one more observation for the initializing check.
 */
function expectAftermath(
  r: RecordingRunner,
  rows: Array<Record<string, unknown>>,
  devs: Dev[] = [],
  o: { status?: string; tables?: Record<string, string>; journal?: Record<string, string> } = {},
): RecordingRunner {
  // The look for unused devices and activations (nothing to release here), then the status.
  expectObserve(r, rows, devs);
  expectObserve(r, rows, devs).expect(['dmsetup', 'status'], { kind: 'read', stdout: o.status ?? '' });
  const tables = devs
    .filter((x) => x.uuid.startsWith('COWSTACK-'))
    .map((d) => `${d.name}: ${o.tables?.[d.name] ?? '0 8 zero'}\n`);
  r.expect(['dmsetup', 'table'], { kind: 'read', stdout: tables.join('') });
  return expectJournal(r, o.journal ?? {});
}

/** The stack torn down by unmapClone under its own journal entry. */
const expectUnmapAll = (r: RecordingRunner) =>
  r
    .expect(journalBegin('c3', 'unmap'), W)
    .expect(remove(rw(U.c3)), W)
    .expect(['lvchange', '-an', 'vg/c3'], W)
    .expect(remove(ro(U.c2)), W)
    .expect(['lvchange', '-an', 'vg/c2'], W)
    .expect(remove(ro(U.c1)), W)
    .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
    .expect(journalEnd('c3', 'unmap'), W);

// SYNTHETIC: `dmsetup table` and `dmsetup status` of the mapped chain.
const TABLES = {
  [ro(U.c1)]: '0 131072 snapshot 253:3 253:4 P 8\n',
  [ro(U.c2)]: '0 131072 snapshot 253:5 253:6 P 16\n',
  [rw(U.c3)]: '0 131072 snapshot 253:7 253:8 PO 128\n',
};
const STATUS = [
  'vg-image: 0 131072 linear 8:16 2048',
  'vg-c1: 0 32768 linear 8:16 133120',
  `${ro(U.c1)}: 0 131072 snapshot 96/32768 16`,
  'vg-c2: 0 32768 linear 8:16 165888',
  `${ro(U.c2)}: 0 131072 snapshot 1040/32768 16`,
  'vg-c3: 0 32768 linear 8:16 198656',
  `${rw(U.c3)}: 0 131072 snapshot 27853/32768 112`,
  '',
].join('\n');

describe('readJournal', () => {
  it('reads the default journal directory', () => {
    expect(JOURNAL_DIR).toBe('/var/lib/cowstack/journal');
  });

  it('reads every .json entry, skips other files, and keeps a torn entry as one without a VG', async () => {
    const r = expectJournal(recorder(), {
      'vg.c3.map.json': entry('map', 'c3', U.c3),
      'vg.c9.commit.json': '{"op":"commit","vg":"v',
      'vg.c3.map.json.cowstack-new': '',
    });
    expect(await readJournal(r)).toEqual([
      { op: 'map', vg: VG, name: 'c3', uuid: U.c3, started: STARTED, file: journalFile('c3', 'map') },
      { op: 'map', vg: '', name: '', started: '', file: journalFile('c9', 'commit') },
    ]);
    expect(r.calls[0]).toMatchObject({ kind: 'read' });
    expect(r.calls[1]).toMatchObject({ kind: 'read', root: true, allowFailure: true });
    r.verify();
  });

  it('is empty when the directory does not exist yet', async () => {
    const r = recorder().expect(JOURNAL_LS, {
      kind: 'read',
      exitCode: 2,
      stderr: "ls: cannot access '/var/lib/cowstack/journal': No such file or directory\n",
    });
    expect(await readJournal(r)).toEqual([]);
    r.verify();
  });
});

describe('recover', () => {
  it('does nothing when nothing was in flight', async () => {
    const r = expectAftermath(expectJournal(recorder(), {}), chainRows());
    expect(await recover(ctxOf(r))).toEqual({ vg: VG, actions: [], warnings: [] });
    r.verify();
  });

  it("leaves another repository's devices alone: an unopened one over its LV is not an orphan", async () => {
    // A second repository VG on the node (config repositories): its clone d1 mapped read-only
    // here and unopened. The LV's own device names the other VG's uuid; this VG has no d1.
    const other = { name: 'repo2-d1', uuid: `LVM-${'Q'.repeat(32)}${compact(U.d1)}`, open: 1, minor: 30 };
    const devs = [other, roDev(U.d1, 31, 0)];
    const r = expectAftermath(expectJournal(recorder(), {}), chainRows(), devs);
    const rep = await recover(ctxOf(r));
    expect(rep).toEqual({ vg: VG, actions: [], warnings: [] });
    r.verify();
  });

  it('undoes an interrupted map whose top device nobody opened', async () => {
    const r = expectJournal(recorder(), { 'vg.c3.map.json': entry('map', 'c3', U.c3) });
    expectObserve(r, chainRows({ mapped: true }), chainDevs(0)); // settle looks
    // unmapClone looks again and tears down
    expectUnmapAll(expectObserveDevicesFirst(r, chainRows({ mapped: true }), chainDevs(0)));
    r.expect(journalEnd('c3', 'map'), W);
    expectAftermath(r, chainRows());
    expect(await recover(ctxOf(r))).toEqual({
      vg: VG,
      actions: [{ op: 'map', name: 'c3', decision: 'undone' }],
      warnings: [],
    });
    r.verify();
  });

  it('releases a live COW held exclusively with nothing over it (a create --map cut after its mark)', async () => {
    const rows = [imageRow('image', U.image), cloneRow('n1', U.n1, U.image, { active: 'exclusive', minor: 8 })];
    const devs = [lvDev('n1', U.n1, 8, 0)];
    const r = expectJournal(recorder(), { 'vg.n1.create-clone.json': entry('create-clone', 'n1') });
    expectObserve(r, rows, devs).expect(journalEnd('n1', 'create-clone'), W); // live: nothing to undo
    expectObserve(r, rows, devs).expect(['lvchange', '-an', 'vg/n1'], W);
    expectAftermath(r, [imageRow('image', U.image), cloneRow('n1', U.n1, U.image)]);
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      { op: 'create-clone', name: 'n1', decision: 'nothing-to-do' },
      {
        op: 'unused',
        name: 'n1',
        decision: 'finished',
        detail: 'vg/n1 was active exclusively with nothing using it: released with what only it used (1 step(s))',
      },
    ]);
    r.verify();
  });

  it('keeps a map whose top device is open (it finished and a VM uses it), reporting COW usage', async () => {
    const r = expectJournal(recorder(), { 'vg.c3.map.json': entry('map', 'c3', U.c3) });
    expectObserve(r, chainRows({ mapped: true }), chainDevs(1)).expect(journalEnd('c3', 'map'), W);
    expectAftermath(r, chainRows({ mapped: true }), chainDevs(1), { status: STATUS, tables: TABLES });
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([{ op: 'map', name: 'c3', decision: 'kept' }]);
    expect(rep.warnings).toEqual(['c3: COW 85% full (warning at 80%): grow it with cowstack clone grow']);
    expect(r.calls.filter((c) => c.kind === 'write').map((c) => c.argv)).toEqual([journalEnd('c3', 'map')]);
    r.verify();
  });

  it('finishes an interrupted commit (unmapped, not yet marked) and collects the ancestors', async () => {
    const rows = chainRows({ mapped: true });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3))
      .map((d) => (d.name === ro(U.c2) || d.name === 'vg-c3' ? { ...d, open: 0 } : d));
    const r = expectJournal(recorder(), { 'vg.c3.commit.json': entry('commit', 'c3', U.c3) });
    expectObserve(r, rows, devs);
    expectObserve(r, rows, devs)
      .expect(journalBegin('c3', 'commit'), W)
      .expect(commitMarkArgv('vg/c3'), W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
      .expect(journalEnd('c3', 'commit'), W);
    r.expect(journalEnd('c3', 'commit'), W);
    expectAftermath(r, chainRows({ c3: { state: 'committed' } }));
    expect(await recover(ctxOf(r))).toEqual({
      vg: VG,
      actions: [{ op: 'commit', name: 'c3', decision: 'finished' }],
      warnings: [],
    });
    r.verify();
  });

  it('finishes a commit interrupted after the state change: releases the COW still held exclusively', async () => {
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', open: false, minor: 8 } });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3))
      .map((d) => (d.name === ro(U.c2) || d.name === 'vg-c3' ? { ...d, open: 0 } : d));
    const r = expectJournal(recorder(), { 'vg.c3.commit.json': entry('commit', 'c3', U.c3) });
    expectObserve(r, rows, devs);
    expectObserve(r, rows, devs).expect(['lvchange', '-an', 'vg/c3'], W);
    expectObserve(
      r,
      chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } }),
      devs.filter((d) => d.name !== 'vg-c3'),
    )
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);
    r.expect(journalEnd('c3', 'commit'), W);
    expectAftermath(r, chainRows({ c3: { state: 'committed' } }));
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'commit', name: 'c3', decision: 'finished' }]);
    r.verify();
  });

  it('finishes an interrupted migrate-release from the record its entry kept, then frees the ancestors', async () => {
    const HANDOVER = 'cowstack_handover:2048:16';
    const rows = chainRows({ mapped: true });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3))
      .map((d) => (d.name === ro(U.c2) || d.name === 'vg-c3' ? { ...d, open: 0 } : d));
    const released = chainRows({ mapped: true, c3: { active: undefined, open: false } });
    released[3] = { ...released[3]!, lv_tags: [...(released[3]!.lv_tags as string[]), HANDOVER] };
    const line = { op: 'migrate-release', vg: VG, name: 'c3', uuid: U.c3, started: STARTED, handover: HANDOVER };
    const r = expectJournal(recorder(), { 'vg.c3.migrate-release.json': `${JSON.stringify(line)}\n` });
    expectObserve(r, rows, devs);
    expectObserve(r, rows, devs)
      .expect(journalBegin('c3', 'migrate-release'), W)
      .expect(['lvchange', '-an', '--addtag', HANDOVER, 'vg/c3'], W)
      .expect(journalEnd('c3', 'migrate-release'), W);
    r.expect(journalEnd('c3', 'migrate-release'), W);
    const unheld = devs.filter((d) => d.name !== 'vg-c3');
    expectAncestorsReleased(expectObserve(r, released, unheld));
    expectAftermath(r, chainRows());
    expect((await recover(ctxOf(r))).actions).toEqual([
      { op: 'migrate-release', name: 'c3', decision: 'finished' },
      {
        op: 'unused',
        name: 'c2',
        decision: 'finished',
        detail: `${ro(U.c2)} was not open: released with what only it used (4 step(s))`,
      },
    ]);
    r.verify();
  });

  it('undoes an interrupted migrate-prepare whose placeholder nothing opened', async () => {
    const rows = chainRows({ mapped: true, c3: { active: undefined, open: false } });
    const devs = [
      ...chainDevs()
        .slice(0, 5)
        .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d)),
      rwDev(U.c3, 9, 0),
    ];
    const r = expectJournal(recorder(), { 'vg.c3.migrate-prepare.json': entry('migrate-prepare', 'c3', U.c3) });
    expectObserve(r, rows, devs);
    expectObserve(r, rows, devs).expect(['dmsetup', 'table', rw(U.c3)], { kind: 'read', stdout: '0 131072 error\n' });
    const unmap = expectObserveDevicesFirst(r, rows, devs)
      .expect(journalBegin('c3', 'unmap'), W)
      .expect(remove(rw(U.c3)), W);
    expectAncestorsReleased(unmap).expect(journalEnd('c3', 'unmap'), W);
    r.expect(journalEnd('c3', 'migrate-prepare'), W);
    expectAftermath(r, chainRows());
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'migrate-prepare', name: 'c3', decision: 'undone' }]);
    r.verify();
  });

  it('undoes an interrupted clone creation: deactivates and removes the initializing LV', async () => {
    const rows = [
      imageRow('image', U.image),
      cloneRow('n1', U.n1, U.image, { state: 'initializing', active: 'exclusive', minor: 10 }),
    ];
    const r = expectJournal(recorder(), { 'vg.n1.create-clone.json': entry('create-clone', 'n1') });
    expectObserve(r, rows, [lvDev('n1', U.n1, 10, 0)])
      .expect(['lvchange', '-an', 'vg/n1'], W)
      .expect(['lvremove', '-y', 'vg/n1'], W)
      .expect(journalEnd('n1', 'create-clone'), W);
    expectAftermath(r, [imageRow('image', U.image)]);
    expect(await recover(ctxOf(r))).toEqual({
      vg: VG,
      actions: [{ op: 'create-clone', name: 'n1', decision: 'undone' }],
      warnings: [],
    });
    r.verify();
  });

  it('removes an inactive half-made LV without deactivating it', async () => {
    const rows = [imageRow('image', U.image), cloneRow('n1', U.n1, U.image, { state: 'initializing' })];
    const r = expectJournal(recorder(), { 'vg.n1.create-clone.json': entry('create-clone', 'n1') });
    expectObserve(r, rows).expect(['lvremove', '-y', 'vg/n1'], W).expect(journalEnd('n1', 'create-clone'), W);
    expectAftermath(r, [imageRow('image', U.image)]);
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'create-clone', name: 'n1', decision: 'undone' }]);
    r.verify();
  });

  it('leaves a creation that completed alone and drops its entry', async () => {
    const rows = [imageRow('image', U.image), cloneRow('n1', U.n1, U.image)];
    const r = expectJournal(recorder(), { 'vg.n1.create-clone.json': entry('create-clone', 'n1') });
    expectObserve(r, rows).expect(journalEnd('n1', 'create-clone'), W);
    expectAftermath(r, rows);
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'create-clone', name: 'n1', decision: 'nothing-to-do' }]);
    r.verify();
  });

  it('leaves alone an LV made under the same name after the entry (its end record lost): uuid differs', async () => {
    // A discard whose `end` never reached the disk, then the name created again: not that LV.
    const rows = [imageRow('image', U.image), cloneRow('n1', U.n1, U.image)];
    const r = expectJournal(recorder(), { 'vg.n1.discard.json': entry('discard', 'n1', U.c3) });
    expectObserve(r, rows).expect(journalEnd('n1', 'discard'), W);
    expectAftermath(r, rows);
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'discard', name: 'n1', decision: 'nothing-to-do' }]);
    r.verify();
  });

  it('stops the BitTorrent client and tracker a killed staging run left, whatever became of its LV', async () => {
    const f = stagingFiles(U.image);
    const rows = [imageRow('other', U.c1)];
    const r = expectJournal(recorder(), { 'vg.image.stage.json': entry('stage', 'image', U.image) })
      .expect(daemonStopArgv(f.pid), W)
      .expect(daemonStopArgv(f.trackerPid), W)
      .expect(journalEnd('image', 'stage'), W);
    expectAftermath(r, rows);
    expect((await recover(ctxOf(r))).actions).toEqual([{ op: 'stage', name: 'image', decision: 'finished' }]);
    r.verify();
  });

  it('removes a torn journal file and reports it as such', async () => {
    const r = expectJournal(recorder(), { 'vg.c3.map.json': '{"op":"map","vg":"v' }).expect(
      ['rm', '-f', '--', journalFile('c3', 'map')],
      W,
    );
    expectAftermath(r, chainRows());
    expect(await recover(ctxOf(r))).toEqual({
      vg: VG,
      actions: [
        {
          op: 'journal',
          name: journalFile('c3', 'map'),
          decision: 'nothing-to-do',
          detail: 'unreadable entry removed',
        },
      ],
      warnings: [],
    });
    expect(r.calls.find((c) => c.argv[0] === 'rm')).toMatchObject({ kind: 'write', root: true });
    r.verify();
  });

  it('leaves entries of other VGs alone', async () => {
    const files = { 'other.x1.map.json': entry('map', 'x1', U.c1, 'other') };
    const r = expectAftermath(expectJournal(recorder(), files), chainRows(), [], { journal: files });
    expect(await recover(ctxOf(r))).toEqual({ vg: VG, actions: [], warnings: [] });
    expect(r.calls.some((c) => c.kind === 'write')).toBe(false);
    r.verify();
  });

  it('warns about initializing LVs that no journal entry on this node owns', async () => {
    const rows = [...chainRows(), cloneRow('n9', U.n1, U.image, { state: 'initializing', size: 8 * MiB })];
    const r = expectAftermath(expectJournal(recorder(), {}), rows);
    expect((await recover(ctxOf(r))).warnings).toEqual([
      'vg/n9 is still initializing and no operation on this node owns it: it is being created on another node, ' +
        'or was abandoned there (cowstack recover on that node removes it)',
    ]);
    r.verify();
  });

  it('reports a failed settlement, keeps its entry and warns about it', async () => {
    const r = expectJournal(recorder(), { 'vg.c3.map.json': entry('map', 'c3', U.c3) });
    expectObserve(r, chainRows({ mapped: true }), chainDevs(0));
    expectObserveDevicesFirst(r, chainRows({ mapped: true }), chainDevs(0))
      .expect(journalBegin('c3', 'unmap'), W)
      .expect(remove(rw(U.c3)), {
        kind: 'write',
        exitCode: 1,
        stderr: 'device-mapper: remove ioctl on cowstack-rw failed: Device or resource busy\n',
      })
      .expect(journalEnd('c3', 'unmap'), W);
    expectAftermath(r, chainRows({ mapped: true }), chainDevs(0), {
      status: STATUS,
      tables: TABLES,
      journal: { 'vg.c3.map.json': entry('map', 'c3', U.c3) },
    });
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      { op: 'map', name: 'c3', decision: 'failed', detail: expect.stringContaining('Device or resource busy') },
    ]);
    expect(rep.warnings).toEqual([
      'c3: COW 85% full (warning at 80%): grow it with cowstack clone grow',
      `interrupted map of c3 (since ${STARTED}): run cowstack recover`,
    ]);
    r.verify();
  });
});
