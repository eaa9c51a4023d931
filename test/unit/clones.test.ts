import { describe, expect, it } from 'vitest';
import {
  chunkSectorsOf,
  commitClone,
  createClone,
  discardClone,
  growClone,
  mapClone,
  unmapClone,
} from '../../src/core/clones.js';
import { EXIT } from '../../src/exec/errors.js';
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
  expectObserveRepo,
  lvcreateArgv,
  foreignRow,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  ro,
  rw,
  rwDev,
  DM_INFO,
  dmInfo,
  stillLive,
  type Dev,
  W,
  R,
  createRo,
  createRw,
  snapTable,
  dmRemove,
  markLiveArgv,
  markLiveLog,
  expectObserveDevicesFirst,
  ctxOf,
} from './repoFixtures.js';
import {
  capture,
  conflictStderr,
  deltaDumpArgv,
  leaseDump,
  lvsArgv,
  lvsJson,
  recorder,
  rejectionOf,
  thrownBy,
  vgsArgv,
  vgsJson,
} from './support.js';

// SYNTHETIC unless marked REAL: LV rows come from repoFixtures, dmsetup/dd outputs are hand-written;
// REAL ones come from test/fixtures/lvm2-2.03.16-bookworm.

const SETTLE = ['udevadm', 'settle', '--timeout=10'];

const T = snapTable;
const remove = dmRemove;

/** The commands of a clone creation after the observation (the mark names the new LV's uuid: no lvs after it). */
function expectCreate(
  r: RecordingRunner,
  name: string,
  parentUuid: string,
  bytes: number,
  chunk: number,
): RecordingRunner {
  return r
    .expect(journalBegin(name, 'create-clone'), W)
    .expect(lvcreateArgv(name, parentUuid, bytes, chunk), W)
    .expect(markLiveArgv(`vg/${name}`), { kind: 'write', stdout: markLiveLog(`vg/${name}`, U.n1) })
    .expect(journalEnd(name, 'create-clone'), W);
}

// SYNTHETIC: the paxos leases at the offsets in the LVs' lock args (repoFixtures: 70254592 + minor MiB),
// in the real layout: c3's held by host 2, the image's by host 3.
const C3_LEASE = ['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:78643200:1048576'];
const IMAGE_LEASE = ['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:73400320:1048576'];
const C3_HELD = leaseDump({ offset: 78643200, vg: VG, uuid: U.c3, owner: 2, timestamp: 10398, lver: 3 });
const IMAGE_HELD = leaseDump({ offset: 73400320, vg: VG, uuid: U.image, owner: 3, timestamp: 10377 });
// REAL delta leases (hosts 1 and 2, named .node1 / .node2), lockspace renamed to this VG's.
const DELTA = capture('sanlock-dump-delta.txt').replace(/lvm_repo/g, '  lvm_vg');
// SYNTHETIC: `vgs vg` with three hosts tagged (host 3 has no delta lease in DELTA: the tag names it).
const VG_REPORT = vgsJson([
  {
    vg_name: 'vg',
    vg_lock_type: 'sanlock',
    vg_shared: 1,
    vg_tags: ['cowstack_host:1:node1', 'cowstack_host:2:node2', 'cowstack_host:3:node3'],
  },
]);
// The REAL refusal of `lvchange -aey` (lvchange-aey-conflict.stderr) with the LV name changed.
const lockRefused = (lv: string) => conflictStderr().replace(/repo\/probe/g, lv);

describe('chunkSectorsOf', () => {
  it.each([
    ['4K', 8],
    ['8K', 16],
    ['64K', 128],
    ['1M', 2048],
    ['4096', 8],
  ])('%s is %d sectors', (text, sectors) => {
    expect(chunkSectorsOf(text)).toBe(sectors);
  });

  it.each(['3K', '2M', '6K', '2K', '512', '0'])('rejects %s (2)', (text) => {
    thrownBy(() => chunkSectorsOf(text), EXIT.USAGE);
  });
});

describe('createClone', () => {
  const image = (o: Parameters<typeof imageRow>[2] = {}) => imageRow('image', U.image, o);

  it('creates an initializing COW, zeroes its first chunk, marks it live, all under a journal entry', async () => {
    const r = expectCreate(expectObserveRepo(recorder(), [image(), foreignRow('swap')]), 'n1', U.image, 16 * MiB, 8);
    const res = await createClone(ctxOf(r), { name: 'n1', from: 'image' });
    expect(res).toEqual({
      name: 'n1',
      vg: VG,
      parent: 'image',
      cowBytes: 16 * MiB,
      chunkSectors: 8,
      uuid: U.n1,
      action: 'created',
    });
    const begin = r.calls[1]!;
    expect(begin).toMatchObject({ root: true, kind: 'write' });
    expect(JSON.parse(String(begin.input))).toEqual({
      op: 'create-clone',
      vg: VG,
      name: 'n1',
      started: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    expect(r.calls[2]).toMatchObject({ root: true, timeout: 'change' }); // lvcreate, which also zeroes
    r.verify();
  });

  it('takes an explicit COW size (rounded up to whole 4 MiB extents) and chunk size', async () => {
    const r = expectCreate(expectObserveRepo(recorder(), [image()]), 'n1', U.image, 12 * MiB, 128);
    const res = await createClone(ctxOf(r), { name: 'n1', from: 'image', cowSize: '10M', chunk: '64K' });
    expect(res).toMatchObject({ cowBytes: 12 * MiB, chunkSectors: 128, action: 'created' });
    r.verify();
  });

  it.each([
    [64 * MiB, 16 * MiB],
    [100 * MiB, 28 * MiB], // 25 MiB rounds up to 7 extents
    [16 * MiB, 8 * MiB], // 4 MiB is below the 8 MiB minimum
    [8 * MiB, 8 * MiB],
    [2048 * MiB, 512 * MiB],
  ])('defaults the COW of a %d-byte image to 25%% in whole extents, at least 8 MiB: %d', async (imageBytes, cow) => {
    const r = expectCreate(expectObserveRepo(recorder(), [image({ size: imageBytes })]), 'n1', U.image, cow, 8);
    expect((await createClone(ctxOf(r), { name: 'n1', from: 'image' })).cowBytes).toBe(cow);
    r.verify();
  });

  it('honours another default percentage', async () => {
    const r = expectCreate(expectObserveRepo(recorder(), [image({ size: 100 * MiB })]), 'n1', U.image, 12 * MiB, 8);
    await createClone(ctxOf(r), { name: 'n1', from: 'image', defaultPercent: 10 });
    r.verify();
  });

  const cowSizeFromImage =
    'sizes the default COW of a clone of a committed clone from the image (virtual size), not the parent COW';
  it(cowSizeFromImage, async () => {
    const rows = [image({ size: 1024 * MiB }), cloneRow('c1', U.c1, U.image, { state: 'committed', size: 16 * MiB })];
    const r = expectCreate(expectObserveRepo(recorder(), rows), 'n1', U.c1, 256 * MiB, 8);
    expect(await createClone(ctxOf(r), { name: 'n1', from: 'c1' })).toMatchObject({
      parent: 'c1',
      cowBytes: 256 * MiB,
    });
    r.verify();
  });

  it('undoes everything when marking it live fails: remove the LV, close the journal entry', async () => {
    const r = expectObserveRepo(recorder(), [image()])
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * MiB, 8), W)
      .expect(markLiveArgv('vg/n1'), {
        kind: 'write',
        exitCode: 5,
        stderr: '  Failed to update metadata of vg/n1 on disk.\n',
      })
      .expect(['lvremove', '-y', 'vg/n1'], W)
      .expect(journalEnd('n1', 'create-clone'), W);
    expect((await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.FAILED)).message).toContain(
      'Failed to update metadata',
    );
    r.verify();
  });

  it('is idempotent: an existing clone of the same parent is reported, nothing is written', async () => {
    const r = expectObserveRepo(recorder(), [image(), cloneRow('n1', U.n1, U.image, { size: 20 * MiB, chunk: 16 })]);
    const res = await createClone(ctxOf(r), { name: 'n1', from: 'image' });
    expect(res).toEqual({
      name: 'n1',
      vg: VG,
      parent: 'image',
      uuid: U.n1,
      cowBytes: 20 * MiB,
      chunkSectors: 16,
      action: 'none',
    });
    expect(r.calls.map((c) => c.kind)).toEqual(['read']);
    r.verify();
  });

  it('completes an interrupted creation of the same clone with its own chunk size', async () => {
    const r = expectObserveRepo(recorder(), [
      image(),
      cloneRow('n1', U.n1, U.image, { state: 'initializing', size: 20 * MiB, chunk: 16 }),
    ])
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(['lvchange', '-aey', 'vg/n1'], W)
      .expect(
        [
          'dd',
          'if=/dev/zero',
          'of=/dev/mapper/vg-n1',
          'bs=8192',
          'count=1',
          'oflag=direct',
          'conv=fsync',
          'status=none',
        ],
        W,
      )
      .expect(
        ['lvchange', '-an', '--deltag', 'cowstack_state:initializing', '--addtag', 'cowstack_state:live', 'vg/n1'],
        W,
      )
      .expect(journalEnd('n1', 'create-clone'), W);
    const res = await createClone(ctxOf(r), { name: 'n1', from: 'image' });
    expect(res).toEqual({
      name: 'n1',
      vg: VG,
      parent: 'image',
      uuid: U.n1,
      cowBytes: 20 * MiB,
      chunkSectors: 16,
      action: 'completed',
    });
    r.verify();
  });

  it('refuses (6) a parent that is not sealed, and writes nothing', async () => {
    const r = expectObserveRepo(recorder(), [image({ state: 'writable' })]);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toBe("image is writable: a clone's parent must be a sealed image or a committed clone");
    expect(e.hint).toBe('seal it first: cowstack image seal image');
    r.verify();
  });

  it('refuses (6) a live clone as parent, suggesting a commit', async () => {
    const r = expectObserveRepo(recorder(), chainRows());
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'c3' }), EXIT.REFUSED);
    expect(e.message).toBe("c3 is live: a clone's parent must be a sealed image or a committed clone");
    expect(e.hint).toBe('commit it first: cowstack clone commit c3');
    r.verify();
  });

  it('NOT_FOUND (7) for a parent that does not exist', async () => {
    const r = expectObserveRepo(recorder(), [image()]);
    expect((await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'nope' }), EXIT.NOT_FOUND)).message).toBe(
      'no image or clone named nope in vg',
    );
    r.verify();
  });

  it.each([
    ['an LV cowstack does not manage', foreignRow('n1'), 'vg/n1 already exists and is not managed by cowstack'],
    ['a clone of another parent', cloneRow('n1', U.n1, U.c1), 'vg/n1 already exists (a clone of another parent)'],
    ['an image', imageRow('n1', U.n1), 'vg/n1 already exists (an image)'],
  ])('refuses (6) a name taken by %s', async (_what, row, message) => {
    const r = expectObserveRepo(recorder(), [image(), row]);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toBe(message);
    expect(e.hint).toBe('pick another name');
    r.verify();
  });

  it('rejects (2) a COW smaller than one chunk', async () => {
    const r = expectObserveRepo(recorder(), [image()]);
    const e = await rejectionOf(
      createClone(ctxOf(r), { name: 'n1', from: 'image', cowSize: '4K', chunk: '64K' }),
      EXIT.USAGE,
    );
    expect(e.message).toBe('COW size 4 KiB is smaller than the chunk size 64 KiB');
    r.verify();
  });

  it('rejects (2) a COW that cannot hold header, metadata and data chunks', async () => {
    const r = expectObserveRepo(recorder(), [image()]);
    const e = await rejectionOf(
      createClone(ctxOf(r), { name: 'n1', from: 'image', cowSize: '128K', chunk: '64K' }),
      EXIT.USAGE,
    );
    expect(e.message).toContain('needs at least 3 chunks of 64 KiB');
    r.verify();
  });

  it.each(['3K', '2M'])('rejects (2) the chunk size %s before running anything', async (chunk) => {
    const r = recorder();
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image', chunk }), EXIT.USAGE);
    expect(e.message).toBe(`chunk size "${chunk}" must be a power of two from 4K to 1M`);
    expect(r.calls).toEqual([]);
    r.verify();
  });

  // The VG's free space rides on every lvs row (vg_free, vg_mda_free): checked before any write.
  it('refuses (6) a COW larger than the VG has free, before the journal entry or any write', async () => {
    const r = expectObserveRepo(recorder(), [{ ...image(), vg_free: 8 * MiB, vg_mda_free: 3_000_000 }]);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toBe('vg has 8 MiB free, the COW of n1 needs 16 MiB');
    expect(r.calls.map((c) => c.kind)).toEqual(['read']);
    r.verify();
  });

  it('refuses (6) when the metadata area has no room for one more LV, naming the fix', async () => {
    const r = expectObserveRepo(recorder(), [{ ...image(), vg_free: 1024 * MiB, vg_mda_free: 700 }]);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toContain('the metadata area of vg is full (700 bytes free');
    expect(e.hint).toContain('cluster init --max-lvs');
    r.verify();
  });

  it('turns an lvcreate refused for lease space into a refusal (6) that says so; nothing is left', async () => {
    // SYNTHETIC, after the message the issue quotes from the testbed's 4 GiB LUN (lvmlock could not grow).
    const stderr =
      '  Extend sanlock LV vg/lvmlock to size 2.75 GiB failed\n' +
      '  No space for sanlock lock, extend the internal lvmlock LV.\n';
    const r = expectObserveRepo(recorder(), [{ ...image(), vg_free: 1024 * MiB, vg_mda_free: 3_000_000 }])
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * MiB, 8), { kind: 'write', exitCode: 5, stderr })
      .expect(journalEnd('n1', 'create-clone'), W);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toContain('no sanlock lease space left in vg');
    r.verify();
  });

  it('rejects (2) a bad clone name before running anything', async () => {
    const r = recorder();
    await rejectionOf(createClone(ctxOf(r), { name: 'a/b', from: 'image' }), EXIT.USAGE);
    expect(r.calls).toEqual([]);
    r.verify();
  });
});

describe('mapClone', () => {
  const mapSteps = (r: RecordingRunner) =>
    r
      .expect(['lvchange', '-asy', 'vg/image'], W)
      .expect(['lvchange', '-asy', 'vg/c1'], W)
      .expect(createRo(U.c1, T('/dev/mapper/vg-image', '/dev/mapper/vg-c1', 'P', 8)), W)
      .expect(['lvchange', '-asy', 'vg/c2'], W)
      .expect(createRo(U.c2, T(`/dev/mapper/${ro(U.c1)}`, '/dev/mapper/vg-c2', 'P', 16)), W);

  it('maps the whole depth-3 stack under a journal entry and returns the VM disk', async () => {
    const r = mapSteps(expectObserve(recorder(), chainRows()).expect(journalBegin('c3', 'map'), W))
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...stillLive('c3', U.c3, U.c2))
      .expect(createRw(U.c3, T(`/dev/mapper/${ro(U.c2)}`, '/dev/mapper/vg-c3', 'PO', 128)), W)
      .expect(journalEnd('c3', 'map'), W);
    const res = await mapClone(ctxOf(r), 'c3');
    expect(res).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      parent: 'c2',
      device: `/dev/mapper/${rw(U.c3)}`,
      mode: 'rw',
      action: 'mapped',
    });
    expect(JSON.parse(String(r.calls[2]!.input))).toMatchObject({ op: 'map', vg: VG, name: 'c3', uuid: U.c3 });
    r.verify();
  });

  it('maps a committed clone read-only', async () => {
    const r = mapSteps(expectObserve(recorder(), chainRows()).expect(journalBegin('c2', 'map'), W)).expect(
      journalEnd('c2', 'map'),
      W,
    );
    expect(await mapClone(ctxOf(r), 'c2')).toMatchObject({
      device: `/dev/mapper/${ro(U.c2)}`,
      mode: 'ro',
      parent: 'c1',
      action: 'mapped',
    });
    r.verify();
  });

  it('verifies an existing stack against the kernel tables and changes nothing', async () => {
    const rows = chainRows({ mapped: true }).slice(0, 3);
    const r = expectObserve(recorder(), rows, chainDevs().slice(0, 5))
      .expect(['dmsetup', 'table', ro(U.c1)], { kind: 'read', stdout: '0 131072 snapshot 253:3 253:4 P 8\n' })
      .expect(['dmsetup', 'table', ro(U.c2)], { kind: 'read', stdout: '0 131072 snapshot 253:5 253:6 P 16\n' });
    expect(await mapClone(ctxOf(r), 'c2')).toMatchObject({
      device: `/dev/mapper/${ro(U.c2)}`,
      mode: 'ro',
      action: 'none',
    });
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('refuses (1) to build on an existing device with a foreign table, before writing anything', async () => {
    const rows = chainRows({ mapped: true }).slice(0, 3);
    const r = expectObserve(recorder(), rows, chainDevs().slice(0, 5)).expect(['dmsetup', 'table', ro(U.c1)], {
      kind: 'read',
      stdout: '0 131072 snapshot 253:3 253:40 P 8\n',
    });
    expect((await rejectionOf(mapClone(ctxOf(r), 'c2'), EXIT.FAILED)).message).toContain(
      `device ${ro(U.c1)} exists but its table`,
    );
    r.verify();
  });

  const lockRefusalUndone =
    'turns a lock refusal of the live COW into LOCK_CONFLICT (4) naming it, after undoing the steps already done';
  it(lockRefusalUndone, async () => {
    const r = mapSteps(expectObserve(recorder(), chainRows()).expect(journalBegin('c3', 'map'), W))
      .expect(['lvchange', '-aey', 'vg/c3'], { kind: 'write', exitCode: 5, stderr: lockRefused('vg/c3') })
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1'], W)
      .expect(['lvchange', '-an', 'vg/image'], W)
      .expect(journalEnd('c3', 'map'), W)
      .expect(lvsArgv('vg/c3'), { kind: 'read', stdout: lvsJson([chainRows()[3]!]) })
      .expect(C3_LEASE, { kind: 'read', stdout: C3_HELD })
      .expect(vgsArgv('vg'), { kind: 'read', stdout: VG_REPORT })
      .expect(deltaDumpArgv('vg'), { kind: 'read', stdout: DELTA });
    const e = await rejectionOf(mapClone(ctxOf(r), 'c3'), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('vg/c3 is locked by another host (held by node2, sanlock host_id 2)');
    expect(e.data).toMatchObject({ vg: VG, lv: 'c3', uuid: U.c3, holder: { hostId: 2, host: 'node2' } });
    r.verify();
  });

  it('names the layer whose activation was refused, not the clone being mapped', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'map'), W)
      .expect(['lvchange', '-asy', 'vg/image'], { kind: 'write', exitCode: 5, stderr: lockRefused('vg/image') })
      .expect(journalEnd('c3', 'map'), W)
      .expect(lvsArgv('vg/image'), { kind: 'read', stdout: lvsJson([chainRows()[0]!]) })
      .expect(IMAGE_LEASE, { kind: 'read', stdout: IMAGE_HELD })
      .expect(vgsArgv('vg'), { kind: 'read', stdout: VG_REPORT })
      .expect(deltaDumpArgv('vg'), { kind: 'read', stdout: DELTA });
    const e = await rejectionOf(mapClone(ctxOf(r), 'c3'), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('vg/image is locked by another host (held by node3, sanlock host_id 3)');
    expect(e.data).toMatchObject({ vg: VG, lv: 'image', uuid: U.image, holder: { hostId: 3, host: 'node3' } });
    r.verify();
  });

  it('rejects (2) mapping an image', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect((await rejectionOf(mapClone(ctxOf(r), 'image'), EXIT.USAGE)).hint).toBe(
      'clone it: cowstack clone create NAME --from image',
    );
    r.verify();
  });
});

describe('unmapClone', () => {
  it('tears the unused stack down under a journal entry', async () => {
    const r = expectObserveDevicesFirst(recorder(), chainRows({ mapped: true }), chainDevs(0))
      .expect(journalBegin('c3', 'unmap'), W)
      .expect(remove(rw(U.c3)), W)
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
      .expect(journalEnd('c3', 'unmap'), W);
    expect(await unmapClone(ctxOf(r), 'c3')).toEqual({ name: 'c3', vg: VG, uuid: U.c3, action: 'unmapped' });
    r.verify();
  });

  // The plain shape: c1's writable snapshot stands on the image LV and c1's LV (devs_used).
  const plainDevs = (imageOpen: number, diskOpen = 0) => [
    lvDev('image', U.image, 1, imageOpen, true),
    lvDev('c1', U.c1, 2, 1),
    { ...rwDev(U.c1, 3, diskOpen), uses: ['vg-c1', 'vg-image'] },
  ];

  it('takes a plain mapping down from the devices alone: no lvs, one lvchange for the COW and the image', async () => {
    const r = recorder()
      .expect(DM_INFO, { kind: 'read', stdout: dmInfo(plainDevs(1)) })
      .expect(journalBegin('c1', 'unmap'), W)
      .expect(remove(rw(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
      .expect(journalEnd('c1', 'unmap'), W);
    expect(await unmapClone(ctxOf(r), 'c1')).toEqual({ name: 'c1', vg: VG, uuid: U.c1, action: 'unmapped' });
    r.verify();
  });

  it('keeps the image active when something else holds it open (another clone of it)', async () => {
    const r = recorder()
      .expect(DM_INFO, { kind: 'read', stdout: dmInfo(plainDevs(2)) })
      .expect(journalBegin('c1', 'unmap'), W)
      .expect(remove(rw(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1'], W)
      .expect(journalEnd('c1', 'unmap'), W);
    expect((await unmapClone(ctxOf(r), 'c1')).action).toBe('unmapped');
    r.verify();
  });

  it('observes the repository when the plain disk is open, and refuses (6) as before', async () => {
    const rows = [
      imageRow('image', U.image, { active: 'shared' }),
      cloneRow('c1', U.c1, U.image, { active: 'exclusive' }),
    ];
    const r = expectObserveDevicesFirst(recorder(), rows, plainDevs(1, 1));
    for (let i = 0; i < 3; i++) expectObserve(r.expect(SETTLE, R), rows, plainDevs(1, 1));
    expectHolders(r, rw(U.c1), 'dm-3', [], [[4242, 'libvirt-qemu', 'qemu-system-x86']]);
    await rejectionOf(unmapClone(ctxOf(r), 'c1'), EXIT.REFUSED);
    r.verify();
  });

  it('does nothing for a clone that is not mapped here', async () => {
    const r = expectObserveDevicesFirst(recorder(), chainRows());
    expect((await unmapClone(ctxOf(r), 'c3')).action).toBe('none');
    r.verify();
  });
});

/** whoHolds: sysfs holders of the device, then fuser (pids on stdout, as psmisc prints them) and ps. */
function expectHolders(
  r: RecordingRunner,
  name: string,
  kernel: string,
  holders: Array<[string, string]>,
  procs: Array<[number, string, string]>,
): RecordingRunner {
  r.expect(['realpath', '-e', '--', `/dev/mapper/${name}`], { kind: 'read', stdout: `/dev/${kernel}\n` }).expect(
    ['ls', '-1', '-A', '--', `/sys/class/block/${kernel}/holders`],
    {
      kind: 'read',
      stdout: holders.map(([k]) => `${k}\n`).join(''),
    },
  );
  for (const [k, n] of holders)
    r.expect(['cat', '--', `/sys/class/block/${k}/dm/name`], { kind: 'read', stdout: `${n}\n` });
  r.expect(['fuser', `/dev/mapper/${name}`], {
    kind: 'read',
    exitCode: procs.length ? 0 : 1,
    stdout: procs.map(([pid]) => `  ${pid}`).join(''),
    stderr: procs.length ? `/dev/mapper/${name}:` : '',
  });
  if (procs.length) {
    r.expect(['ps', '-o', 'pid=,user=,comm=', '-p', procs.map(([pid]) => pid).join(',')], {
      kind: 'read',
      stdout: procs.map(([pid, user, comm]) => `${String(pid).padStart(7)} ${user} ${comm}\n`).join(''),
    });
  }
  return r;
}

describe('commitClone', () => {
  const COMMIT = commitMarkArgv('vg/c3');
  /** The node after c3 was committed and released: ancestors still mapped, nothing opens ro(c2). */
  const afterCommitRows = () => chainRows({ mapped: true, c3: { state: 'committed', active: undefined, open: false } });
  const afterCommitDevs = (): Dev[] =>
    chainDevs()
      .filter((d) => d.name !== rw(U.c3) && d.name !== 'vg-c3')
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
  /** The ancestors the commit left unused, released inside its journal entry (planned from the first observation). */
  const gcSteps = (r: RecordingRunner) =>
    r
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);
  const expectGc = (r: RecordingRunner) =>
    expectObserve(r, afterCommitRows(), afterCommitDevs())
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);

  const commitSteps =
    'unmaps, marks the clone committed and read-only while holding it, releases it, then collects the ancestors';
  it(commitSteps, async () => {
    const r = gcSteps(
      expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(0))
        .expect(journalBegin('c3', 'commit'), W)
        .expect(remove(rw(U.c3)), W)
        .expect(COMMIT, W),
    ).expect(journalEnd('c3', 'commit'), W);
    expect(await commitClone(ctxOf(r), 'c3')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      parent: 'c2',
      action: 'committed',
    });
    const at = (argv: string[]) => r.calls.findIndex((c) => JSON.stringify(c.argv) === JSON.stringify(argv));
    expect(at(COMMIT)).toBeGreaterThan(at(remove(rw(U.c3))));
    r.verify();
  });

  it('takes the COW exclusively first when it is not active here', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...stillLive('c3', U.c3, U.c2))
      .expect(COMMIT, W)
      .expect(journalEnd('c3', 'commit'), W);
    expect((await commitClone(ctxOf(r), 'c3')).action).toBe('committed');
    r.verify();
  });

  it('refuses (6) while the VM disk is open, naming its holders, and writes nothing', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1));
    // A transient opener (udev's probe) gets three chances to go before cowstack refuses.
    for (let i = 0; i < 3; i++) expectObserve(r.expect(SETTLE, R), chainRows({ mapped: true }), chainDevs(1));
    expectHolders(r, rw(U.c3), 'dm-9', [['dm-14', 'vm7-part1']], [[4242, 'libvirt-qemu', 'qemu-system-x86']]);
    const e = await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.REFUSED);
    expect(e.message).toBe(
      `vg/c3 is in use on this node (${rw(U.c3)} open 1 time(s): device vm7-part1, ` +
        'process qemu-system-x86 (pid 4242, user libvirt-qemu)); refusing to commit it',
    );
    expect(e.hint).toBe('stop the VM using it, or pass --force (its users will get I/O errors)');
    expect(e.data).toEqual({
      device: rw(U.c3),
      open: 1,
      holders: ['device vm7-part1', 'process qemu-system-x86 (pid 4242, user libvirt-qemu)'],
    });
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('waits for udev when the disk is open only for a moment (a probe after a write), then commits', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1));
    expectObserve(r.expect(SETTLE, R), chainRows({ mapped: true }), chainDevs())
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['dmsetup', 'remove', '--retry', rw(U.c3)], W)
      .expect(COMMIT, W);
    gcSteps(r).expect(journalEnd('c3', 'commit'), W);
    expect((await commitClone(ctxOf(r), 'c3')).action).toBe('committed');
    r.verify();
  });

  it('with --force removes the open disk with dmsetup remove --force', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1))
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['dmsetup', 'remove', '--force', '--retry', rw(U.c3)], W)
      .expect(COMMIT, W);
    gcSteps(r).expect(journalEnd('c3', 'commit'), W);
    expect((await commitClone(ctxOf(r), 'c3', { force: true })).action).toBe('committed');
    r.verify();
  });

  it('is idempotent for a committed clone released everywhere here', async () => {
    const r = expectObserve(recorder(), chainRows({ c3: { state: 'committed' } }));
    expect(await commitClone(ctxOf(r), 'c3')).toEqual({ name: 'c3', vg: VG, uuid: U.c3, parent: 'c2', action: 'none' });
    r.verify();
  });

  it('finishes a commit interrupted after the state change: releases the COW, then the ancestors', async () => {
    const rows = chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', open: false, minor: 8 } });
    const devs = chainDevs()
      .filter((d) => d.name !== rw(U.c3))
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d.name === 'vg-c3' ? { ...d, open: 0 } : d));
    const r = expectGc(expectObserve(recorder(), rows, devs).expect(['lvchange', '-an', 'vg/c3'], W));
    expect((await commitClone(ctxOf(r), 'c3')).action).toBe('committed');
    r.verify();
  });

  it('fails (1) for a committed clone that still has a writable mapping here', async () => {
    const r = expectObserve(
      recorder(),
      chainRows({ mapped: true, c3: { state: 'committed', active: 'exclusive', open: true, minor: 8 } }),
      chainDevs(0),
    );
    expect((await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.FAILED)).hint).toBe('run cowstack recover');
    r.verify();
  });

  it('refuses (6) an initializing clone', async () => {
    const r = expectObserve(recorder(), chainRows({ c3: { state: 'initializing' } }));
    expect((await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toBe(
      'vg/c3 is initializing; only a live clone can be committed',
    );
    r.verify();
  });

  it('refuses (6) a live COW active shared here, before writing anything', async () => {
    const r = expectObserve(recorder(), chainRows({ c3: { active: 'shared', minor: 8 } }), [lvDev('c3', U.c3, 8, 0)]);
    expect((await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toBe(
      'vg/c3 is active shared on this node; a live COW must be exclusive',
    );
    r.verify();
  });

  it('turns a lock refusal into LOCK_CONFLICT (4)', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'commit'), W)
      .expect(['lvchange', '-aey', 'vg/c3'], { kind: 'write', exitCode: 5, stderr: lockRefused('vg/c3') })
      .expect(journalEnd('c3', 'commit'), W)
      .expect(lvsArgv('vg/c3'), { kind: 'read', stdout: lvsJson([chainRows()[3]!]) })
      .expect(C3_LEASE, { kind: 'read', exitCode: 1, stderr: 'open error -19\n' });
    expect((await rejectionOf(commitClone(ctxOf(r), 'c3'), EXIT.LOCK_CONFLICT)).message).toBe(
      'vg/c3 is locked by another host',
    );
    r.verify();
  });
});

describe('discardClone', () => {
  it('refuses (6) a clone with children', async () => {
    const r = expectObserve(recorder(), chainRows());
    const e = await rejectionOf(discardClone(ctxOf(r), 'c2'), EXIT.REFUSED);
    expect(e.message).toBe('vg/c2 has 1 child clone(s): c3');
    expect(e.data).toEqual({ children: ['c3'] });
    r.verify();
  });

  it('is a no-op for a clone that does not exist', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect(await discardClone(ctxOf(r), 'gone')).toEqual({ name: 'gone', vg: VG, action: 'none' });
    r.verify();
  });

  it('rejects (2) an image', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect((await rejectionOf(discardClone(ctxOf(r), 'image'), EXIT.USAGE)).hint).toBe('use cowstack image rm image');
    r.verify();
  });

  it('unmaps, deactivates and removes a mapped clone, then collects its unused ancestors', async () => {
    // The ancestors are released inside the journal entry, planned from the same observation.
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(0))
      .expect(journalBegin('c3', 'discard'), W)
      .expect(remove(rw(U.c3)), W)
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(['lvremove', '-y', 'vg/c3'], W)
      .expect(remove(ro(U.c2)), W)
      .expect(['lvchange', '-an', 'vg/c2'], W)
      .expect(remove(ro(U.c1)), W)
      .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W)
      .expect(journalEnd('c3', 'discard'), W);
    expect(await discardClone(ctxOf(r), 'c3')).toEqual({ name: 'c3', vg: VG, uuid: U.c3, action: 'discarded' });
    r.verify();
  });

  it('as rm refuses (6) a clone still mapped here', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(0));
    expect((await rejectionOf(discardClone(ctxOf(r), 'c3', { mustBeUnmapped: true }), EXIT.REFUSED)).message).toBe(
      'vg/c3 is mapped on this node',
    );
    r.verify();
  });
});

describe('growClone', () => {
  it('extends the COW with lvextend to whole extents', async () => {
    const r = expectObserve(recorder(), chainRows()).expect(['lvextend', '-L', `${32 * MiB}b`, 'vg/c3'], W);
    expect(await growClone(ctxOf(r), 'c3', '30M')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      cowBytes: 32 * MiB,
      action: 'grown',
    });
    expect(r.calls.at(-1)).toMatchObject({ root: true, timeout: 'change' });
    r.verify();
  });

  it.each(['16M', '8M', '13M'])('is a no-op when %s is not larger than the 16 MiB COW', async (size) => {
    const r = expectObserve(recorder(), chainRows());
    expect(await growClone(ctxOf(r), 'c3', size)).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      cowBytes: 16 * MiB,
      action: 'none',
    });
    r.verify();
  });

  it('refuses (6) to grow a committed clone', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect((await rejectionOf(growClone(ctxOf(r), 'c2', '64M'), EXIT.REFUSED)).message).toBe(
      "vg/c2 is committed; only a live clone's COW can grow",
    );
    r.verify();
  });
});
