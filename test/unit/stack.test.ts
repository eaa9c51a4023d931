import { describe, expect, it } from 'vitest';
import type { Step } from '../../src/core/plan.js';
import { mergeDeactivations, planStack, teardownParts, teardownPlan, verifyExisting } from '../../src/core/stack.js';
import { EXIT } from '../../src/exec/errors.js';
import {
  IMAGE_SECTORS,
  MiB,
  U,
  chainDevs,
  chainRows,
  cloneRow,
  imageRow,
  lvDev,
  ro,
  roDev,
  rw,
  rwDev,
  stateOf,
  createRo,
  createRw,
  snapTable,
  dmRemove,
} from './repoFixtures.js';
import { lvsArgv, recorder, thrownBy } from './support.js';

// SYNTHETIC: LV rows and dm devices come from repoFixtures; `dmsetup table` outputs are hand-written.

const argvs = (steps: Step[]) => steps.map((s) => s.req.argv);
const T = snapTable;
const RO_C1_TABLE = T('/dev/mapper/vg-image', '/dev/mapper/vg-c1', 'P', 8);
const RO_C2_TABLE = T(`/dev/mapper/${ro(U.c1)}`, '/dev/mapper/vg-c2', 'P', 16);
const RW_C3_TABLE = T(`/dev/mapper/${ro(U.c2)}`, '/dev/mapper/vg-c3', 'PO', 128);

const remove = dmRemove;
/** The lockless re-read of the live COW once its lock is held (stillLiveStep). */
const recheck = (ref: string) => lvsArgv(ref);

describe('planStack', () => {
  it('builds a depth-3 chain from nothing: image, ro snapshots of the committed clones, rw snapshot on top', () => {
    const state = stateOf(chainRows());
    const plan = planStack(state, state.repo.byName.get('c3')!);
    expect(argvs(plan.steps)).toEqual([
      ['lvchange', '-asy', 'vg/image'],
      ['lvchange', '-asy', 'vg/c1'],
      createRo(U.c1, RO_C1_TABLE),
      ['lvchange', '-asy', 'vg/c2'],
      createRo(U.c2, RO_C2_TABLE),
      ['lvchange', '-aey', 'vg/c3'],
      recheck('vg/c3'),
      createRw(U.c3, RW_C3_TABLE),
    ]);
    expect(plan.steps.map((s) => s.req.kind)).toEqual([...Array(6).fill('write'), 'read', 'write']);
    expect(
      plan.steps.filter((s) => s.req.kind === 'write').every((s) => s.req.root === true && s.req.timeout === 'change'),
    ).toBe(true);
    expect(plan.device).toBe(`/dev/mapper/${rw(U.c3)}`);
    expect(plan.sectors).toBe(IMAGE_SECTORS);
    expect(plan.verify).toEqual([]);
    expect(plan.layers.map((l) => [l.obj.name, l.device, l.role])).toEqual([
      ['image', '/dev/mapper/vg-image', undefined],
      ['c1', `/dev/mapper/${ro(U.c1)}`, 'ro'],
      ['c2', `/dev/mapper/${ro(U.c2)}`, 'ro'],
      ['c3', `/dev/mapper/${rw(U.c3)}`, 'rw'],
    ]);
  });

  it('gives every activation and mapping step its undo', () => {
    const state = stateOf(chainRows());
    const plan = planStack(state, state.repo.byName.get('c3')!);
    expect(plan.steps.map((s) => s.undo?.map((u) => u.argv))).toEqual([
      [['lvchange', '-an', 'vg/image']],
      [['lvchange', '-an', 'vg/c1']],
      [remove(ro(U.c1))],
      [['lvchange', '-an', 'vg/c2']],
      [remove(ro(U.c2))],
      [['lvchange', '-an', 'vg/c3']],
      undefined,
      [remove(rw(U.c3))],
    ]);
    expect(plan.steps.flatMap((s) => s.undo ?? []).every((u) => u.kind === 'write')).toBe(true);
  });

  it('scopes the LVM steps to the repository devices', () => {
    const state = stateOf(chainRows());
    const plan = planStack(state, state.repo.byName.get('c1')!, { devices: ['/dev/sdb'] });
    const config = ['--config', 'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }'];
    expect(argvs(plan.steps)).toEqual([
      ['lvchange', ...config, '-asy', 'vg/image'],
      ['lvchange', ...config, '-asy', 'vg/c1'],
      createRo(U.c1, RO_C1_TABLE),
    ]);
    expect(plan.steps[0]!.undo![0]!.argv).toEqual(['lvchange', ...config, '-an', 'vg/image']);
  });

  it('doubles the dashes of VG and LV names in the device paths of the tables', () => {
    const state = stateOf(
      [imageRow('deb-12', U.image, { vg: 'my-vg' }), cloneRow('vm-1', U.c1, U.image, { vg: 'my-vg' })],
      [],
      'my-vg',
    );
    const plan = planStack(state, state.repo.byName.get('vm-1')!);
    expect(argvs(plan.steps)).toEqual([
      ['lvchange', '-asy', 'my-vg/deb-12'],
      ['lvchange', '-aey', 'my-vg/vm-1'],
      recheck('my-vg/vm-1'),
      createRw(U.c1, T('/dev/mapper/my--vg-deb--12', '/dev/mapper/my--vg-vm--1', 'PO', 8)),
    ]);
  });

  it('skips what already exists and lists existing snapshots for verification', () => {
    // image and c1 mapped here for a sibling; c2 and c3 not yet.
    const rows = chainRows();
    rows[0] = imageRow('image', U.image, { active: 'shared', open: true, minor: 3 });
    rows[1] = cloneRow('c1', U.c1, U.image, { state: 'committed', active: 'shared', open: true, minor: 4 });
    const state = stateOf(rows, [
      lvDev('image', U.image, 3, 1, true),
      lvDev('c1', U.c1, 4, 1, true),
      roDev(U.c1, 5, 1),
    ]);
    const plan = planStack(state, state.repo.byName.get('c3')!);
    expect(argvs(plan.steps)).toEqual([
      ['lvchange', '-asy', 'vg/c2'],
      createRo(U.c2, RO_C2_TABLE),
      ['lvchange', '-aey', 'vg/c3'],
      recheck('vg/c3'),
      createRw(U.c3, RW_C3_TABLE),
    ]);
    expect(
      plan.verify.map((v) => ({
        name: v.name,
        table: v.table,
        origin: v.origin.name,
        cow: v.cow.name,
        originDevice: v.originDevice,
      })),
    ).toEqual([
      { name: ro(U.c1), table: RO_C1_TABLE, origin: 'image', cow: 'c1', originDevice: '/dev/mapper/vg-image' },
    ]);
  });

  it('plans nothing for a committed target already mapped; verifies each layer', () => {
    const rows = chainRows({ mapped: true });
    const state = stateOf(rows.slice(0, 3), chainDevs().slice(0, 5));
    const plan = planStack(state, state.repo.byName.get('c2')!);
    expect(plan.steps).toEqual([]);
    expect(plan.device).toBe(`/dev/mapper/${ro(U.c2)}`);
    expect(plan.verify.map((v) => [v.name, v.table, v.originDevice])).toEqual([
      [ro(U.c1), RO_C1_TABLE, '/dev/mapper/vg-image'],
      [ro(U.c2), RO_C2_TABLE, `/dev/mapper/${ro(U.c1)}`],
    ]);
  });

  it('maps a committed target read-only on top: shared activations, no rw device', () => {
    const state = stateOf(chainRows());
    const plan = planStack(state, state.repo.byName.get('c2')!);
    expect(argvs(plan.steps)).toEqual([
      ['lvchange', '-asy', 'vg/image'],
      ['lvchange', '-asy', 'vg/c1'],
      createRo(U.c1, RO_C1_TABLE),
      ['lvchange', '-asy', 'vg/c2'],
      createRo(U.c2, RO_C2_TABLE),
    ]);
    expect(plan.device).toBe(`/dev/mapper/${ro(U.c2)}`);
    expect(plan.layers.at(-1)?.role).toBe('ro');
  });

  it('refreshes a live COW that is already active exclusively instead of activating it', () => {
    const state = stateOf(chainRows({ c3: { active: 'exclusive', minor: 8 } }));
    const plan = planStack(state, state.repo.byName.get('c3')!);
    expect(argvs(plan.steps).slice(4)).toEqual([
      createRo(U.c2, RO_C2_TABLE),
      ['lvchange', '--refresh', 'vg/c3'],
      recheck('vg/c3'),
      createRw(U.c3, RW_C3_TABLE),
    ]);
    expect(plan.steps[5]!.undo).toBeUndefined();
  });

  it('refuses (6) a chain that stands on an unsealed image', () => {
    const rows = chainRows();
    rows[0] = imageRow('image', U.image, { state: 'writable' });
    const state = stateOf(rows);
    const e = thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED);
    expect(e.message).toBe('vg/image is not a sealed image; clones may only stand on sealed images');
    expect(e.hint).toBe('seal it first: cowstack image seal image');
  });

  it('refuses (6) an initializing clone in the chain, pointing at recover', () => {
    const rows = chainRows();
    rows[1] = cloneRow('c1', U.c1, U.image, { state: 'initializing' });
    const state = stateOf(rows);
    const e = thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED);
    expect(e.message).toBe('vg/c1 is initializing; only committed clones can be parents');
    expect(e.hint).toContain('cowstack recover');
  });

  it('refuses (6) to map an initializing clone itself', () => {
    const state = stateOf(chainRows({ c3: { state: 'initializing' } }));
    const e = thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED);
    expect(e.message).toContain('vg/c3 is initializing');
    expect(e.hint).toContain('cowstack recover');
  });

  it('refuses (6) a live clone used as a parent', () => {
    const rows = chainRows();
    rows[2] = cloneRow('c2', U.c2, U.c1, { state: 'live', chunk: 16 });
    const state = stateOf(rows);
    expect(thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED).message).toBe(
      'vg/c2 is live; only committed clones can be parents',
    );
  });

  it('refuses (6) a live COW that is active shared on this node', () => {
    const state = stateOf(chainRows({ c3: { active: 'shared', minor: 8 } }));
    const e = thrownBy(() => planStack(state, state.repo.byName.get('c3')!), EXIT.REFUSED);
    expect(e.message).toBe('vg/c3 is active shared on this node; a live COW must be exclusive');
    expect(e.hint).toBe('deactivate it first: cowstack deactivate vg/c3');
  });

  it('throws on a broken chain', () => {
    const state = stateOf(chainRows().filter((r) => r.lv_name !== 'c1'));
    expect(() => planStack(state, state.repo.byName.get('c3')!)).toThrow('the chain is broken');
  });
});

describe('verifyExisting', () => {
  // image, c1 and ro(c1) are mapped; c2's stack is being built on top of them.
  const setup = () => {
    const rows = chainRows();
    rows[0] = imageRow('image', U.image, { active: 'shared', open: true, minor: 3 });
    rows[1] = cloneRow('c1', U.c1, U.image, { state: 'committed', active: 'shared', open: true, minor: 4 });
    const state = stateOf(rows, [
      lvDev('image', U.image, 3, 1, true),
      lvDev('c1', U.c1, 4, 1, true),
      roDev(U.c1, 5, 0),
    ]);
    return { state, plan: planStack(state, state.repo.byName.get('c2')!) };
  };

  it('accepts a device whose table is the one it would build (devices by major:minor)', async () => {
    const { state, plan } = setup();
    const r = recorder().expect(['dmsetup', 'table', ro(U.c1)], {
      kind: 'read',
      stdout: '0 131072 snapshot 253:3 253:4 P 8\n',
    });
    await verifyExisting(r, state, plan);
    r.verify();
  });

  it.each([
    ['another COW device', '0 131072 snapshot 253:3 253:12 P 8'],
    ['another origin device', '0 131072 snapshot 253:11 253:4 P 8'],
    ['another chunk size', '0 131072 snapshot 253:3 253:4 P 16'],
    ['a transient COW', '0 131072 snapshot 253:3 253:4 N 8'],
    ['another length', '0 262144 snapshot 253:3 253:4 P 8'],
    ['another target', '0 131072 linear 253:3 0'],
    ['no table at all', ''],
  ])('refuses (1) a device with %s', async (_what, found) => {
    const { state, plan } = setup();
    const r = recorder().expect(['dmsetup', 'table', ro(U.c1)], { kind: 'read', stdout: `${found}\n` });
    let caught: unknown;
    await verifyExisting(r, state, plan).catch((e) => (caught = e));
    expect(caught).toMatchObject({
      exitCode: EXIT.FAILED,
      message: `device ${ro(U.c1)} exists but its table is not the one cowstack expects for c1`,
    });
    expect((caught as { data: Record<string, unknown> }).data).toMatchObject({
      device: ro(U.c1),
      expected: RO_C1_TABLE,
    });
    r.verify();
  });
});

describe('teardownPlan', () => {
  const c3Of = (state: ReturnType<typeof stateOf>) => state.repo.byName.get('c3')!;

  it('tears the whole unused stack down, top first, releasing each layer when its last opener goes', () => {
    const state = stateOf(chainRows({ mapped: true }), chainDevs(0));
    const steps = teardownPlan(state, c3Of(state), { removeTop: true });
    expect(argvs(steps)).toEqual([
      remove(rw(U.c3)),
      ['lvchange', '-an', 'vg/c3'],
      remove(ro(U.c2)),
      ['lvchange', '-an', 'vg/c2'],
      remove(ro(U.c1)),
      ['lvchange', '-an', 'vg/c1', 'vg/image'],
    ]);
    expect(steps.every((s) => s.req.kind === 'write')).toBe(true);
  });

  it("teardownParts: the target's own steps, then the ancestors; an open top leaves neither", () => {
    const state = stateOf(chainRows({ mapped: true }), chainDevs(0));
    const { own, ancestors } = teardownParts(state, c3Of(state), { removeTop: true });
    expect(argvs(own)).toEqual([remove(rw(U.c3)), ['lvchange', '-an', 'vg/c3']]);
    expect(argvs(mergeDeactivations(ancestors))).toEqual(
      argvs(teardownPlan(state, c3Of(state), { removeTop: true }).slice(2)),
    );
    // Nothing of the target left (unmapped, inactive): every step is an ancestor's.
    const rows = chainRows({ mapped: true, c3: { active: undefined, open: false } });
    const devs = chainDevs(0)
      .filter((d) => d.name !== rw(U.c3) && d.name !== 'vg-c3')
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
    const bare = stateOf(rows, devs);
    const parts = teardownParts(bare, c3Of(bare), { removeTop: true });
    expect(parts.own).toEqual([]);
    expect(argvs(mergeDeactivations(parts.ancestors))).toEqual(
      argvs(teardownPlan(bare, c3Of(bare), { removeTop: true })),
    );
    expect(argvs(teardownPlan(bare, c3Of(bare), { removeTop: true }))[0]).toEqual(remove(ro(U.c2)));
    const busy = stateOf(chainRows({ mapped: true }), chainDevs(1));
    expect(teardownParts(busy, c3Of(busy), { removeTop: true })).toEqual({ own: [], ancestors: [] });
  });

  it('stops at a read-only layer a sibling still maps (open 2)', () => {
    const rows = [
      ...chainRows({ mapped: true }),
      cloneRow('s2', U.s2, U.c2, { active: 'exclusive', open: true, minor: 10 }),
    ];
    const devs = chainDevs(0).map((d) => (d.name === ro(U.c2) ? { ...d, open: 2 } : d));
    devs.push(lvDev('s2', U.s2, 10, 1), rwDev(U.s2, 11, 1));
    const state = stateOf(rows, devs);
    expect(argvs(teardownPlan(state, c3Of(state), { removeTop: true }))).toEqual([
      remove(rw(U.c3)),
      ['lvchange', '-an', 'vg/c3'],
    ]);
  });

  it('keeps the image active while another chain still holds it', () => {
    const rows = [
      ...chainRows({ mapped: true }),
      cloneRow('d1', U.d1, U.image, { active: 'exclusive', open: true, minor: 12 }),
    ];
    const devs = chainDevs(0).map((d) => (d.name === 'vg-image' ? { ...d, open: 2 } : d));
    devs.push(lvDev('d1', U.d1, 12, 1), rwDev(U.d1, 13, 1));
    const state = stateOf(rows, devs);
    expect(argvs(teardownPlan(state, c3Of(state), { removeTop: true }))).toEqual([
      remove(rw(U.c3)),
      ['lvchange', '-an', 'vg/c3'],
      remove(ro(U.c2)),
      ['lvchange', '-an', 'vg/c2'],
      remove(ro(U.c1)),
      ['lvchange', '-an', 'vg/c1'],
    ]);
  });

  it('removes nothing while the top device is open', () => {
    const state = stateOf(chainRows({ mapped: true }), chainDevs(1));
    expect(teardownPlan(state, c3Of(state), { removeTop: true })).toEqual([]);
  });

  it('forceTop removes an open top with dmsetup remove --force --retry, then the rest normally', () => {
    const state = stateOf(chainRows({ mapped: true }), chainDevs(1));
    const steps = teardownPlan(state, c3Of(state), { removeTop: true, forceTop: true });
    expect(argvs(steps)).toEqual([
      ['dmsetup', 'remove', '--force', '--retry', rw(U.c3)],
      ['lvchange', '-an', 'vg/c3'],
      remove(ro(U.c2)),
      ['lvchange', '-an', 'vg/c2'],
      remove(ro(U.c1)),
      ['lvchange', '-an', 'vg/c1', 'vg/image'],
    ]);
  });

  it('forceTop on an unopened top is a plain remove', () => {
    const state = stateOf(chainRows({ mapped: true }), chainDevs(0));
    expect(teardownPlan(state, c3Of(state), { removeTop: true, forceTop: true })[0]!.req.argv).toEqual(
      remove(rw(U.c3)),
    );
  });

  it('without removeTop starts at the read-only layers (garbage collection after a commit)', () => {
    // c3 was committed and released: its rw device and activation are gone; ro(c2) has no opener now.
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3) && d.name !== 'vg-c3')
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
    const state = stateOf(rows, devs);
    expect(argvs(teardownPlan(state, state.repo.byName.get('c2')!, { removeTop: false }))).toEqual([
      remove(ro(U.c2)),
      ['lvchange', '-an', 'vg/c2'],
      remove(ro(U.c1)),
      ['lvchange', '-an', 'vg/c1', 'vg/image'],
    ]);
  });

  it('deactivates an active but unmapped live COW and nothing else when nothing else is active', () => {
    const state = stateOf(chainRows({ c3: { active: 'exclusive', minor: 8 } }), [lvDev('c3', U.c3, 8, 0)]);
    expect(argvs(teardownPlan(state, c3Of(state), { removeTop: true }))).toEqual([['lvchange', '-an', 'vg/c3']]);
  });

  it('scopes its lvchange steps', () => {
    const state = stateOf(chainRows({ c3: { active: 'exclusive', minor: 8 } }), [lvDev('c3', U.c3, 8, 0)]);
    expect(argvs(teardownPlan(state, c3Of(state), { removeTop: true, scope: { devices: ['/dev/sdb'] } }))).toEqual([
      ['lvchange', '--config', 'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }', '-an', 'vg/c3'],
    ]);
  });
});

// keep the size constant honest
it('the chain fixture image is 64 MiB', () => {
  expect(IMAGE_SECTORS * 512).toBe(64 * MiB);
});
