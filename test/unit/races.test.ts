/**
 * Issue 10: decisions made from an observation taken before a lock are made again under it
 * (a clone committed on another node while this one waited for its COW's lock is never mapped
 * writable), ancestors are released inside the operation's journal entry and best-effort,
 * a same-name create race is a clear refusal, and status / tree / recover see what a lost
 * race (or an older cowstack) left behind.
 * SYNTHETIC: LV rows and dm devices from repoFixtures; stderr texts in the shape lvm2 prints.
 */
import { describe, expect, it } from 'vitest';
import { commitClone, createClone, mapClone, unmapClone } from '../../src/core/clones.js';
import { nodeSession } from '../../src/core/node.js';
import { recover } from '../../src/core/recover.js';
import { nodeStatus, tree } from '../../src/core/report.js';
import { planStack } from '../../src/core/stack.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  commitMarkArgv,
  U,
  VG,
  chainDevs,
  chainRows,
  cloneRow,
  expectObserve,
  expectObserveDevicesFirst,
  expectObserveRepo,
  lvcreateArgv,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  ro,
  roDev,
  rw,
  rwDev,
  stateOf,
  stillLive,
  W,
  R,
  createRo,
  snapTable,
  dmRemove,
  ctxOf,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, thrownBy, vgsArgv, vgsJson } from './support.js';

const T = snapTable;
const remove = dmRemove;
const COMMIT = commitMarkArgv('vg/c3');
/** c3 as another node left it after committing it: committed, LVM read-only, active exclusively here now. */
const committedNow = (): [string[], { kind: 'read'; stdout: string }] => [
  lvsArgv('vg/c3'),
  {
    kind: 'read',
    stdout: lvsJson([cloneRow('c3', U.c3, U.c2, { state: 'committed', chunk: 128, active: 'exclusive', minor: 8 })]),
  },
];
const JOURNAL_LS = ['ls', '-1', '-A', '--', '/var/lib/cowstack/journal'];

describe('map racing a commit on another node (item 1)', () => {
  const ancestors = (r: RecordingRunner) =>
    r
      .expect(['lvchange', '-asy', 'vg/image'], W)
      .expect(['lvchange', '-asy', 'vg/c1'], W)
      .expect(createRo(U.c1, T('/dev/mapper/vg-image', '/dev/mapper/vg-c1', 'P', 8)), W)
      .expect(['lvchange', '-asy', 'vg/c2'], W)
      .expect(createRo(U.c2, T(`/dev/mapper/${ro(U.c1)}`, '/dev/mapper/vg-c2', 'P', 16)), W);

  it('re-reads the COW under its lock; refuses (6) and undoes the stack when it was committed meanwhile', async () => {
    // Observed live (before the lock); by the time -aey succeeded, node2 had committed and released it.
    const r = ancestors(expectObserve(recorder(), chainRows()).expect(journalBegin('c3', 'map'), W))
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...committedNow())
      // undo, newest first: the COW's lock is released again, then the ancestors, then the entry
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1'], W)
      .expect(['lvchange', '-an', 'vg/image'], W)
      .expect(journalEnd('c3', 'map'), W);
    const e = await rejectionOf(mapClone(ctxOf(r), 'c3'), EXIT.REFUSED);
    expect(e.message).toBe(
      'vg/c3 is committed (changed by another operation while this one waited for its lock); ' +
        'refusing to map it writable',
    );
    expect(e.hint).toBe('a committed clone is mapped read-only: run cowstack clone map c3 again');
    expect(r.calls.some((c) => c.argv.includes(rw(U.c3)))).toBe(false); // no writable device was ever made
    r.verify();
  });

  it('refuses (6) when the COW was removed meanwhile (lvs finds nothing)', async () => {
    const r = ancestors(expectObserve(recorder(), chainRows()).expect(journalBegin('c3', 'map'), W))
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(lvsArgv('vg/c3'), { kind: 'read', exitCode: 5, stderr: '  Failed to find logical volume "vg/c3"\n' })
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1'], W)
      .expect(['lvchange', '-an', 'vg/image'], W)
      .expect(journalEnd('c3', 'map'), W);
    expect((await rejectionOf(mapClone(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toContain('vg/c3 was removed');
    r.verify();
  });

  it('never plans a writable device over a read-only LV, even one tagged live', () => {
    const rows = chainRows();
    rows[3] = { ...rows[3]!, lv_permissions: 'read-only', lv_attr: '-ri-------' };
    const state = stateOf(rows);
    const e = thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED);
    expect(e.message).toBe('vg/c3 is marked live but its LV is read-only; refusing to map it writable');
  });

  it('refuses (6) to map a committed clone that still has a writable device here', async () => {
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', minor: 8 } });
    const r = expectObserve(recorder(), rows, chainDevs(0));
    expect((await rejectionOf(mapClone(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toBe(
      'vg/c3 is committed but has a writable mapping on this node',
    );
    r.verify();
  });
});

describe('commit re-checks under the lock (item 1)', () => {
  it('refuses (6) and releases the COW again when another node committed it during the wait for -aey', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...committedNow())
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(journalEnd('c3', 'commit'), W);
    const e = await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.REFUSED);
    expect(e.message).toContain('vg/c3 is committed (changed by another operation');
    expect(e.hint).toBe('a committed clone is mapped read-only: run cowstack clone commit c3 again');
    expect(r.calls.some((c) => JSON.stringify(c.argv) === JSON.stringify(COMMIT))).toBe(false);
    r.verify();
  });

  it('commits normally when the re-read still shows it live', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...stillLive('c3', U.c3, U.c2))
      .expect(COMMIT, W)
      .expect(journalEnd('c3', 'commit'), W);
    expect((await commitClone(ctxOf(r), 'c3')).action).toBe('committed');
    r.verify();
  });
});

describe('ancestors are released inside the journal entry (item 5)', () => {
  it('commit removes its journal entry only after the unused ancestors are released', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(0))
      .expect(journalBegin('c3', 'commit'), W)
      .expect(remove(rw(U.c3)), W)
      .expect(COMMIT, W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
      .expect(journalEnd('c3', 'commit'), W);
    expect(await commitClone(ctxOf(r), 'c3')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      parent: 'c2',
      action: 'committed',
    });
    const at = (argv: string[]) => r.calls.findIndex((c) => JSON.stringify(c.argv) === JSON.stringify(argv));
    expect(at(journalEnd('c3', 'commit'))).toBeGreaterThan(at(['lvchange', '-an', 'vg/image']));
    r.verify();
  });

  it('a commit killed while releasing the ancestors is finished by a re-run (only what nothing uses)', async () => {
    // c3 committed and released; ro(c2) and the rest still up, nothing opens ro(c2).
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3) && d.name !== 'vg-c3')
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
    const r = expectObserve(recorder(), rows, devs)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);
    expect((await commitClone(ctxOf(r), 'c3')).action).toBe('none');
    r.verify();
  });
});

describe('unmap: the release of a shared ancestor is best-effort (item 7)', () => {
  it('succeeds when a sibling took the parent device meanwhile; warns and closes its journal entry', async () => {
    const r = expectObserveDevicesFirst(recorder(), chainRows({ mapped: true }), chainDevs(0))
      .expect(journalBegin('c3', 'unmap'), W)
      .expect(remove(rw(U.c3)), W)
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(remove(ro(U.c2)), {
        kind: 'write',
        exitCode: 1,
        stderr: `device-mapper: remove ioctl on ${ro(U.c2)}  failed: Device or resource busy\n`,
      })
      .expect(journalEnd('c3', 'unmap'), W);
    const res = await unmapClone(ctxOf(r), 'c3');
    expect(res).toMatchObject({ name: 'c3', action: 'unmapped' });
    expect(res.warnings).toEqual([expect.stringContaining('releasing unused ancestors on this node failed')]);
    r.verify();
  });
});

describe('same-name clone create on two nodes (item 7)', () => {
  it('the loser gets a clear refusal (6), and nothing of the winner is removed', async () => {
    const r = expectObserveRepo(recorder(), [imageRow('image', U.image)])
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * 1024 * 1024, 8), {
        kind: 'write',
        exitCode: 5,
        stderr: '  Logical Volume "n1" already exists in volume group "vg"\n',
      })
      .expect(journalEnd('n1', 'create-clone'), W);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toBe('vg/n1 already exists: another operation created it at the same time');
    expect(r.calls.some((c) => c.argv[0] === 'lvremove')).toBe(false);
    r.verify();
  });
});

describe('same-name clone create: the loser finds it initializing', () => {
  it('refuses (6) "already exists" when the other node holds its COW while finishing it', async () => {
    const row = cloneRow('n1', U.n1, U.image, { state: 'initializing' });
    const r = expectObserveRepo(recorder(), [imageRow('image', U.image), row])
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(['lvchange', '-aey', 'vg/n1'], {
        kind: 'write',
        exitCode: 5,
        stderr: '  LV locked by other host: vg/n1\n',
      })
      .expect(journalEnd('n1', 'create-clone'), W)
      .expect(lvsArgv('vg/n1'), { kind: 'read', stdout: lvsJson([row]) })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:70254592:1048576'], {
        kind: 'read',
        exitCode: 1,
        stderr: 'open error -19\n',
      });
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toMatch(/^vg\/n1 already exists: another operation is creating it right now/);
    r.verify();
  });
});

describe('a writable device over a committed clone is seen and repaired (item 1)', () => {
  const rows = () => chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', minor: 8 } });

  it('status reports it as a problem and a warning', async () => {
    const r = expectObserve(recorder(), rows(), chainDevs(1))
      .expect(['dmsetup', 'status'], { kind: 'read', stdout: '' })
      .expect(['dmsetup', 'table'], {
        kind: 'read',
        stdout: chainDevs()
          .filter((d) => d.uuid.startsWith('COWSTACK-'))
          .map((d) => `${d.name}: 0 8 zero\n`)
          .join(''),
      })
      .expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    const st = await nodeStatus(nodeSession({ runner: r, vg: VG }));
    expect(st.devices.find((d) => d.name === rw(U.c3))?.problem).toContain(
      'writable mapping over committed, read-only clone vg/c3',
    );
    expect(st.warnings).toEqual([expect.stringContaining(`${rw(U.c3)}: writable mapping over committed`)]);
    r.verify();
  });

  it('tree marks it', async () => {
    const r = expectObserve(recorder(), rows(), chainDevs(1))
      .expect(['dmsetup', 'status'], { kind: 'read', stdout: '' })
      .expect(vgsArgv('vg'), {
        kind: 'read',
        stdout: vgsJson([{ vg_name: 'vg', vg_lock_type: 'sanlock', vg_shared: 1, vg_tags: [] }]),
      });
    const [root] = await tree(nodeSession({ runner: r, vg: VG }));
    const c3 = root!.children[0]!.children[0]!.children[0]!;
    expect(c3).toMatchObject({ name: 'c3', state: 'committed', mappedHere: 'rw' });
    expect(c3.problem).toContain('writable mapping over committed');
    r.verify();
  });

  it('recover removes it when unopened (nothing written) and releases the COW and the unused ancestors', async () => {
    const r = recorder().expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    expectObserve(r, rows(), chainDevs(0)).expect(remove(rw(U.c3)), W);
    // commitClone finishes it like an interrupted commit: the COW, then the ancestors.
    const after = chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', open: false, minor: 8 } });
    const afterDevs = chainDevs()
      .filter((d) => d.name !== rw(U.c3))
      .map((d) => (d.name === ro(U.c2) || d.name === 'vg-c3' ? { ...d, open: 0 } : d));
    expectObserve(r, after, afterDevs).expect(['lvchange', '-an', 'vg/c3'], W);
    const gcRows = chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } });
    const gcDevs = afterDevs.filter((d) => d.name !== 'vg-c3');
    expectObserve(r, gcRows, gcDevs)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);
    const clean = chainRows({ c3: { state: 'committed' } });
    expectObserve(r, clean); // releaseUnused looks again: nothing left
    expectObserve(r, clean).expect(['dmsetup', 'status'], R).expect(['dmsetup', 'table'], R).expect(JOURNAL_LS, R);
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      {
        op: 'writable-over-committed',
        name: 'c3',
        decision: 'finished',
        detail: expect.stringContaining('removed (nothing written)'),
      },
    ]);
    r.verify();
  });

  it('recover keeps an open one and says why', async () => {
    const r = recorder().expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    expectObserve(r, rows(), chainDevs(1)); // releaseUnused reuses this observation: nothing unused
    expectObserve(r, rows(), chainDevs(1))
      .expect(['dmsetup', 'status'], R)
      .expect(['dmsetup', 'table'], {
        kind: 'read',
        stdout: chainDevs()
          .filter((d) => d.uuid.startsWith('COWSTACK-'))
          .map((d) => `${d.name}: 0 8 zero\n`)
          .join(''),
      })
      .expect(JOURNAL_LS, R);
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      {
        op: 'writable-over-committed',
        name: 'c3',
        decision: 'failed',
        detail: expect.stringContaining('is open 1 time(s), kept'),
      },
    ]);
    expect(rep.warnings).toEqual([expect.stringContaining('writable mapping over committed')]);
    r.verify();
  });
});

describe('recover releases what nothing uses (item 5)', () => {
  it('an unopened ro snapshot and the shared activations under it (a commit killed past its journal)', async () => {
    // What a killed commit of c3 left: ro(c2) open 0 on ro(c1) on the image, all active shared.
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3) && d.name !== 'vg-c3')
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
    const r = recorder().expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    expectObserve(r, rows, devs)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);
    const clean = chainRows({ c3: { state: 'committed' } });
    expectObserve(r, clean);
    expectObserve(r, clean).expect(['dmsetup', 'status'], R).expect(['dmsetup', 'table'], R).expect(JOURNAL_LS, R);
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      { op: 'unused', name: 'c2', decision: 'finished', detail: expect.stringContaining(`${ro(U.c2)} was not open`) },
    ]);
    r.verify();
  });

  it('a shared activation of an image that nothing opens', async () => {
    const rows = [imageRow('image', U.image, { active: 'shared', minor: 3 })];
    const r = recorder().expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    expectObserve(r, rows, [lvDev('image', U.image, 3, 0, true)]).expect(['lvchange', '-an', 'vg/image'], W);
    expectObserve(r, [imageRow('image', U.image)]);
    expectObserve(r, [imageRow('image', U.image)])
      .expect(['dmsetup', 'status'], R)
      .expect(['dmsetup', 'table'], R)
      .expect(JOURNAL_LS, R);
    const rep = await recover(ctxOf(r));
    expect(rep.actions).toEqual([
      {
        op: 'unused',
        name: 'image',
        decision: 'finished',
        detail: expect.stringContaining('active shared with nothing using it'),
      },
    ]);
    r.verify();
  });

  it('leaves alone what is used: an open read-only stack and a live clone active exclusively', async () => {
    const rows = chainRows({ mapped: true });
    const devs = chainDevs(1);
    const r = recorder().expect(JOURNAL_LS, { kind: 'read', stdout: '' });
    expectObserve(r, rows, devs);
    expectObserve(r, rows, devs)
      .expect(['dmsetup', 'status'], R)
      .expect(['dmsetup', 'table'], {
        kind: 'read',
        stdout: devs
          .filter((d) => d.uuid.startsWith('COWSTACK-'))
          .map((d) => `${d.name}: 0 8 zero\n`)
          .join(''),
      })
      .expect(JOURNAL_LS, R);
    expect((await recover(ctxOf(r))).actions).toEqual([]);
    r.verify();
  });
});

// Silence "unused" for fixtures kept for symmetry with clones.test.ts.
void roDev;
void rwDev;
