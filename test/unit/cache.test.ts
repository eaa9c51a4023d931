/**
 * Node-local caches: the replica's place in the stack (pure planning), and the exact argv
 * of cache init, replicate (fresh, resumed, failed verification) and drop.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { dropCaches } from '../../src/core/cache/eviction.js';
import { listCaches } from '../../src/core/cache/list.js';
import { replicate } from '../../src/core/cache/replicate.js';
import { initCache } from '../../src/core/cache/vg.js';
import { mapClone } from '../../src/core/clones.js';
import { cacheLvFrom } from '../../src/core/cache/meta.js';
import { nodeSession, type NodeSession } from '../../src/core/node.js';
import { parseCacheModes } from '../../src/core/config.js';
import { planStack, teardownPlan } from '../../src/core/stack.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { parseLvs } from '../../src/tools/lvm.js';
import {
  newReplicaLv,
  lvcreateInactive,
  cloneRow,
  compact,
  expectObserve,
  imageRow,
  lvDev,
  MiB,
  rw,
  stateOf,
  U,
  VG,
  type Dev,
  stillLive,
  CACHE_VG,
  cacheVgRow,
  expectAllLvUuids,
  expectCache,
  REPLICA_SHA,
  replicaRow,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, thrownBy, vgsArgv, vgsJson, PV_COLUMNS, REPORT } from './support.js';

const CVG = CACHE_VG;
const SHA = REPLICA_SHA;
const OTHER_SHA = 'cd'.repeat(32);
const NOW = 1795000000;
const RP = `rp_${compact(U.image)}`;
const RP_PATH = `/dev/mapper/${CVG}-${RP}`;

const cacheState = (rows: Array<Record<string, unknown>>, free = 1024 * MiB) => ({
  vg: CVG,
  exists: true,
  freeBytes: free,
  sizeBytes: 2048 * MiB,
  extentBytes: 4 * MiB,
  lvs: parseLvs(lvsJson(rows))
    .map(cacheLvFrom)
    .filter((c) => c !== undefined),
});
const ctxOf = (runner: RecordingRunner, extra: Partial<NodeSession> = {}): NodeSession =>
  nodeSession({
    runner,
    vg: VG,
    cacheVg: CVG,
    ...extra,
  });

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(NOW * 1000);
});
afterEach(() => vi.useRealTimers());

describe('replicas in the device stack', () => {
  const rows = [imageRow('image', U.image, { sha: SHA }), cloneRow('vm', U.c1, U.image)];

  it('a complete replica of exactly this image LV and content replaces the image LV at the bottom', () => {
    const state = { ...stateOf(rows), cache: cacheState([replicaRow({ used: NOW - 60 })]) };
    const plan = planStack(state, state.repo.byName.get('vm')!);
    expect(plan.replica).toBe(RP);
    expect(plan.steps.map((s) => s.req.argv)).toEqual([
      ['lvchange', '-aey', `${CVG}/${RP}`],
      ['lvchange', '--deltag', `cowstack_used:${NOW - 60}`, '--addtag', `cowstack_used:${NOW}`, `${CVG}/${RP}`],
      ['lvchange', '-aey', `${VG}/vm`],
      lvsArgv(`${VG}/vm`),
      [
        'dmsetup',
        'create',
        rw(U.c1),
        '--uuid',
        `COWSTACK-rw-${compact(U.c1)}`,
        '--table',
        `0 ${(64 * MiB) / 512} snapshot ${RP_PATH} /dev/mapper/${VG}-vm PO 8`,
      ],
    ]);
  });

  it('ignores a replica that is incomplete, of another content, or of another LV under the same name', () => {
    for (const r of [
      replicaRow({ state: 'copying', copied: 4 * MiB }),
      replicaRow({ sha: OTHER_SHA }),
      replicaRow({ origin: U.img2 }),
    ]) {
      const state = { ...stateOf(rows), cache: cacheState([r]) };
      const plan = planStack(state, state.repo.byName.get('vm')!);
      expect(plan.replica).toBeUndefined();
      expect(plan.steps[0]!.req.argv).toEqual(['lvchange', '-asy', `${VG}/image`]);
      expect(plan.device).toBe(`/dev/mapper/${rw(U.c1)}`);
    }
    // A cache LV whose name does not match its origin tag is not cowstack's replica.
    expect(cacheState([replicaRow({ name: 'rp_renamed' })]).lvs).toEqual([]);
  });

  it('an already mapped stack on the replica plans nothing (not even the used mark)', () => {
    const mapped = [
      imageRow('image', U.image, { sha: SHA }),
      cloneRow('vm', U.c1, U.image, { active: 'exclusive', open: true, minor: 8 }),
    ];
    const devs: Dev[] = [
      lvDev('vm', U.c1, 8, 1),
      { name: rw(U.c1), uuid: `COWSTACK-rw-${compact(U.c1)}`, open: 1, minor: 9 },
      { name: `${CVG}-${RP}`, uuid: 'LVM-x', open: 1, minor: 20 },
    ];
    const state = {
      ...stateOf(mapped, devs),
      cache: cacheState([replicaRow({ active: true, open: true, used: NOW - 5 })]),
    };
    const plan = planStack(state, state.repo.byName.get('vm')!);
    expect(plan.steps).toEqual([]);
    expect(plan.verify).toHaveLength(1);
  });

  it('teardown over a replica never deactivates the image LV another clone may still use', () => {
    const mapped = [
      imageRow('image', U.image, { sha: SHA, active: 'shared', open: true, minor: 3 }),
      cloneRow('vm', U.c1, U.image, { active: 'exclusive', open: true, minor: 8 }),
    ];
    const devs: Dev[] = [
      lvDev('image', U.image, 3, 1, true),
      lvDev('vm', U.c1, 8, 1),
      { name: rw(U.c1), uuid: `COWSTACK-rw-${compact(U.c1)}`, open: 0, minor: 9 },
      { name: `${CVG}-${RP}`, uuid: 'LVM-x', open: 1, minor: 20 },
    ];
    const state = { ...stateOf(mapped, devs), cache: cacheState([replicaRow({ active: true, open: true })]) };
    const steps = teardownPlan(state, state.repo.byName.get('vm')!, { removeTop: true });
    expect(steps.map((s) => s.req.argv)).toEqual([
      ['dmsetup', 'remove', '--retry', rw(U.c1)],
      ['lvchange', '-an', `${VG}/vm`],
    ]);
  });
});

describe('cache replicate', () => {
  const img = (o: { active?: boolean; sha?: string } = {}) =>
    imageRow('image', U.image, {
      size: 128 * MiB,
      sha: o.sha ?? SHA,
      active: o.active ? 'shared' : undefined,
      minor: 3,
    });
  const copyArgv = (from: number, count: number) => [
    'dd',
    `if=/dev/mapper/${VG}-image`,
    `of=${RP_PATH}`,
    'bs=4M',
    `skip=${from}`,
    `seek=${from}`,
    `count=${count}`,
    'iflag=direct',
    'oflag=direct',
    'conv=fsync,notrunc',
    'status=none',
  ];
  const progressArgv = (a: number, b: number) => [
    'lvchange',
    '--deltag',
    `cowstack_copied:${a}`,
    '--addtag',
    `cowstack_copied:${b}`,
    `${CVG}/${RP}`,
  ];
  // The clean-up's observation: no cache LV in use by a stack and no write-back marker, so
  // the cache VG is not looked at again.
  const gcAfter = (r: RecordingRunner) =>
    expectObserve(r, [img({ active: true })], [lvDev('image', U.image, 3, 0, true)]).expect(
      ['lvchange', '-an', `${VG}/image`],
      { kind: 'write' },
    );

  const replicateCopiesAndSeals =
    'creates, copies in recorded chunks with direct 4 MiB I/O, verifies against the image sha256, then seals it';
  it(replicateCopiesAndSeals, async () => {
    const r = recorder();
    expectObserve(r, [img()]);
    expectCache(r, []);
    r.expect(newReplicaLv(128 * MiB), { kind: 'write' })
      .expect(['lvchange', '-aey', `${CVG}/${RP}`], { kind: 'write' })
      .expect(['lvchange', '-asy', `${VG}/image`], { kind: 'write' })
      .expect(copyArgv(0, 16), { kind: 'write' })
      .expect(progressArgv(0, 64 * MiB))
      .expect(copyArgv(16, 16), { kind: 'write' })
      .expect(progressArgv(64 * MiB, 128 * MiB))
      .expect(['sha256sum', RP_PATH], { kind: 'read', stdout: `${SHA}  ${RP_PATH}\n` })
      .expect(
        [
          'lvchange',
          '--permission',
          'r',
          '--deltag',
          'cowstack_cstate:copying',
          '--addtag',
          'cowstack_cstate:complete',
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${RP}`,
        ],
        { kind: 'write' },
      );
    gcAfter(r);
    const res = await replicate(ctxOf(r), 'image');
    r.verify();
    expect(res).toMatchObject({ action: 'replicated', replica: RP, sha256: SHA, copiedBytes: 128 * MiB, evicted: [] });
  });

  it('resumes an interrupted copy where its progress tag says, and is a no-op once complete', async () => {
    const r = recorder();
    expectObserve(r, [img()]);
    expectCache(r, [replicaRow({ state: 'copying', copied: 64 * MiB, size: 128 * MiB })]);
    r.expect(['lvchange', '-aey', `${CVG}/${RP}`])
      .expect(['lvchange', '-asy', `${VG}/image`])
      .expect(copyArgv(16, 16))
      .expect(progressArgv(64 * MiB, 128 * MiB))
      .expect(['sha256sum', RP_PATH], { stdout: `${SHA}  ${RP_PATH}\n` })
      .expect([
        'lvchange',
        '--permission',
        'r',
        '--deltag',
        'cowstack_cstate:copying',
        '--addtag',
        'cowstack_cstate:complete',
        '--addtag',
        `cowstack_used:${NOW}`,
        `${CVG}/${RP}`,
      ]);
    gcAfter(r);
    expect((await replicate(ctxOf(r), 'image')).action).toBe('resumed');
    r.verify();

    const again = recorder();
    expectObserve(again, [img()]);
    expectCache(again, [replicaRow({ size: 128 * MiB })]);
    expect((await replicate(ctxOf(again), 'image')).action).toBe('none');
    again.verify();
  });

  it('a copy that does not match the image checksum is never marked complete; the next run starts over', async () => {
    const r = recorder();
    expectObserve(r, [img({ active: true })], [lvDev('image', U.image, 3, 0, true)]);
    expectCache(r, [replicaRow({ state: 'copying', copied: 64 * MiB, size: 128 * MiB, active: true })]);
    r.expect(copyArgv(16, 16))
      .expect(progressArgv(64 * MiB, 128 * MiB))
      .expect(['sha256sum', RP_PATH], { stdout: `${OTHER_SHA}  ${RP_PATH}\n` })
      .expect(progressArgv(128 * MiB, 0));
    const e = await rejectionOf(replicate(ctxOf(r), 'image'), EXIT.FAILED);
    r.verify();
    expect(e.message).toContain(OTHER_SHA);
    expect(e.message).toContain(SHA);
  });

  const replicaDropAndEvict =
    'drops stale replicas, evicts the least recently used unused one for room, refuses when nothing can go';
  it(replicaDropAndEvict, async () => {
    const staleUuid = 'St4le0-aaaa-bbbb-cccc-dddd-eeee-ffffff';
    const oldUuid = U.img2;
    const r = recorder();
    expectObserve(r, [img(), imageRow('other', oldUuid, { sha: OTHER_SHA })]);
    expectCache(
      r,
      [replicaRow({ origin: staleUuid }), replicaRow({ origin: oldUuid, sha: OTHER_SHA, used: 5, active: true })],
      8 * MiB,
    );
    expectAllLvUuids(r, [U.image, oldUuid]);
    r.expect(['lvremove', '-y', `${CVG}/rp_${compact(staleUuid)}`]);
    expectCache(r, [replicaRow({ origin: oldUuid, sha: OTHER_SHA, used: 5, active: true })], 72 * MiB);
    r.expect(['lvchange', '-an', `${CVG}/rp_${compact(oldUuid)}`]).expect([
      'lvremove',
      '-y',
      `${CVG}/rp_${compact(oldUuid)}`,
    ]);
    r.expect(newReplicaLv(128 * MiB))
      .expect(['lvchange', '-aey', `${CVG}/${RP}`])
      .expect(['lvchange', '-asy', `${VG}/image`], { exitCode: 5, stderr: 'I/O error' })
      // A failed step undoes the ones before it: no half-made replica is left behind.
      .expect(['lvchange', '-an', `${CVG}/${RP}`])
      .expect(['lvremove', '-y', `${CVG}/${RP}`]);
    await rejectionOf(replicate(ctxOf(r), 'image'), EXIT.FAILED);
    r.verify();

    const full = recorder();
    expectObserve(full, [img(), imageRow('other', oldUuid, { sha: OTHER_SHA })]);
    expectCache(full, [replicaRow({ origin: oldUuid, sha: OTHER_SHA, open: true, active: true })], 8 * MiB);
    const e = await rejectionOf(replicate(ctxOf(full), 'image'), EXIT.REFUSED);
    full.verify();
    expect(e.message).toContain('128 MiB are needed');
  });

  it('refuses an image without a recorded checksum, and a node without a cache VG', async () => {
    const r = recorder();
    expectObserve(r, [imageRow('image', U.image)]);
    expect((await rejectionOf(replicate(ctxOf(r), 'image'), EXIT.REFUSED)).message).toContain('no recorded sha256');
    const n = recorder();
    expectObserve(n, [img()]);
    n.expect(vgsArgv(CVG), {
      exitCode: 5,
      stderr: `  Volume group "${CVG}" not found\n  Cannot process volume group ${CVG}\n`,
    }).expect(lvsArgv(CVG), {
      exitCode: 5,
      stderr: `  Volume group "${CVG}" not found\n  Cannot process volume group ${CVG}\n`,
    });
    const e = await rejectionOf(replicate(ctxOf(n), 'image'), EXIT.NOT_FOUND);
    expect(e.hint).toContain('cowstack cache init');
    n.verify();
  });
});

describe('cache init and drop', () => {
  const pv = ([name, vg]: [string, string]) =>
    `{"pv_name":"${name}", "vg_name":"${vg}", "pv_uuid":"x", "pv_size":"1", "dev_size":"1"}`;
  const pvs = (rows: Array<[string, string]>) => `{"report":[{"pv":[${rows.map(pv).join(',')}]}]}`;
  const real = (r: RecordingRunner, path: string, to = path) =>
    r.expect(['realpath', '-e', '--', path], { stdout: `${to}\n` });

  it('creates a local VG on an empty disk and is a no-op on the same disk afterwards', async () => {
    const r = recorder();
    real(r, '/dev/vdb');
    r.expect(['pvs', ...REPORT, '-o', PV_COLUMNS], { stdout: pvs([['/dev/sda', 'repo']]) });
    real(r, '/dev/sda');
    r.expect(['realpath', '-e', '--', '/dev/vdb'], { stdout: '/dev/vdb\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/vdb/holders'], { stdout: '' })
      .expect(['blkid', '-p', '-o', 'export', '/dev/vdb'], { exitCode: 2 })
      .expect(['vgcreate', '--setautoactivation', 'n', CVG, '/dev/vdb'], { kind: 'write' })
      .expect(vgsArgv(CVG), { stdout: vgsJson([cacheVgRow(2048 * MiB)]) });
    expect(await initCache(ctxOf(r), '/dev/vdb')).toMatchObject({ vg: CVG, action: 'created', sizeBytes: 2048 * MiB });
    r.verify();

    const again = recorder();
    real(again, '/dev/vdb');
    again.expect(['pvs', ...REPORT, '-o', PV_COLUMNS], { stdout: pvs([['/dev/vdb', CVG]]) });
    real(again, '/dev/vdb');
    again.expect(vgsArgv(CVG), { stdout: vgsJson([cacheVgRow(2048 * MiB)]) });
    expect((await initCache(ctxOf(again), '/dev/vdb')).action).toBe('none');
    again.verify();
  });

  it('refuses a PV of another VG, a disk with a signature, and a bad path, naming them', async () => {
    const r = recorder();
    real(r, '/dev/sda');
    r.expect(['pvs', ...REPORT, '-o', PV_COLUMNS], { stdout: pvs([['/dev/sda', 'repo']]) });
    real(r, '/dev/sda');
    expect((await rejectionOf(initCache(ctxOf(r), '/dev/sda'), EXIT.REFUSED)).message).toContain(
      '/dev/sda already belongs to VG repo',
    );
    const s = recorder();
    real(s, '/dev/vdb');
    s.expect(['pvs', ...REPORT, '-o', PV_COLUMNS], { stdout: pvs([]) })
      .expect(['realpath', '-e', '--', '/dev/vdb'], { stdout: '/dev/vdb\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/vdb/holders'], { stdout: '' })
      .expect(['blkid', '-p', '-o', 'export', '/dev/vdb'], { stdout: 'TYPE=ext4\n' });
    expect((await rejectionOf(initCache(ctxOf(s), '/dev/vdb'), EXIT.REFUSED)).message).toContain('TYPE=ext4');
    await rejectionOf(initCache(ctxOf(recorder()), '/dev/../etc/passwd'), EXIT.USAGE);
  });

  it('drop refuses a replica in use and removes an unused one', async () => {
    const r = recorder();
    expectCache(r, [replicaRow({ active: true, open: true })]);
    expectObserve(r, [imageRow('image', U.image, { sha: SHA })]);
    expect((await rejectionOf(dropCaches(ctxOf(r), { image: 'image' }), EXIT.REFUSED)).message).toContain('in use');
    const d = recorder();
    expectCache(d, [replicaRow({ active: true })]);
    expectObserve(d, [imageRow('image', U.image, { sha: SHA })]);
    d.expect(['lvchange', '-an', `${CVG}/${RP}`], { kind: 'write' }).expect(['lvremove', '-y', `${CVG}/${RP}`], {
      kind: 'write',
    });
    expect(await dropCaches(ctxOf(d), { image: 'image' })).toMatchObject({ dropped: [RP], action: 'dropped' });
    d.verify();
  });

  it("drop --stale keeps the caches of another repository's LVs: only an origin no VG has is stale", async () => {
    // One cache VG serves every repository of the node: d1 is a clone in another VG, its
    // write-back cache may hold the only copy of a VM's writes; s2 exists nowhere.
    const wb = (origin: string) => ({
      ...replicaRow({ origin, name: `wb_${compact(origin)}` }),
      lv_tags: ['cowstack_cache:writeback', `cowstack_origin:${origin}`],
    });
    const r = recorder();
    expectCache(r, [replicaRow({ origin: U.img2 }), wb(U.d1), replicaRow({ origin: U.s2 })]);
    expectObserve(r, [imageRow('image', U.image, { sha: SHA })]);
    expectAllLvUuids(r, [U.image, U.img2, U.d1, 'Xx0000-aaaa-bbbb-cccc-dddd-eeee-ffffff']);
    r.expect(['lvremove', '-y', `${CVG}/rp_${compact(U.s2)}`], { kind: 'write' });
    expect(await dropCaches(ctxOf(r), { stale: true })).toEqual({
      cacheVg: CVG,
      dropped: [`rp_${compact(U.s2)}`],
      action: 'dropped',
    });
    r.verify();
  });

  it("cache list calls stale only a cache whose origin no VG has, not another repository's", async () => {
    const r = recorder();
    expectCache(r, [replicaRow({ origin: U.img2 }), replicaRow({ origin: U.s2 }), replicaRow()]);
    expectObserve(r, [imageRow('image', U.image, { sha: SHA })]);
    expectAllLvUuids(r, [U.image, U.img2]);
    const list = await listCaches(ctxOf(r));
    r.verify();
    expect(list.caches.map((c) => [c.origin.uuid, c.origin.name, c.state])).toEqual([
      [U.img2, undefined, 'complete'],
      [U.s2, undefined, 'stale'],
      [U.image, 'image', 'complete'],
    ]);
  });
});

describe('cache modes', () => {
  it('parses comma lists and names a bad mode', () => {
    expect(parseCacheModes('replica')).toEqual(['replica']);
    expect(parseCacheModes(['none'])).toEqual(['none']);
    expect(thrownBy(() => parseCacheModes('replica,bogus'), EXIT.USAGE).message).toContain('"bogus"');
    thrownBy(() => parseCacheModes('none,replica'), EXIT.USAGE);
  });
});

describe('clone map --cache replica', () => {
  const replicaOnFirstMap =
    'makes the verified replica on first map, then maps the clone on it (the image LV is released again)';
  it(replicaOnFirstMap, async () => {
    const rows = [imageRow('image', U.image, { sha: SHA }), cloneRow('vm', U.c1, U.image)];
    const r = recorder();
    expectCache(r, []);
    expectObserve(r, rows);
    // replicate()
    expectObserve(r, rows);
    expectCache(r, []);
    r.expect(
      lvcreateInactive(
        RP,
        64 * MiB,
        [
          'cowstack_cache:replica',
          `cowstack_origin:${U.image}`,
          'cowstack_cstate:copying',
          'cowstack_copied:0',
          `cowstack_sha256:${SHA}`,
        ],
        CVG,
      ),
    )
      .expect(['lvchange', '-aey', `${CVG}/${RP}`])
      .expect(['lvchange', '-asy', `${VG}/image`])
      .expect([
        'dd',
        `if=/dev/mapper/${VG}-image`,
        `of=${RP_PATH}`,
        'bs=4M',
        'skip=0',
        'seek=0',
        'count=16',
        'iflag=direct',
        'oflag=direct',
        'conv=fsync,notrunc',
        'status=none',
      ])
      .expect(['lvchange', '--deltag', 'cowstack_copied:0', '--addtag', `cowstack_copied:${64 * MiB}`, `${CVG}/${RP}`])
      .expect(['sha256sum', RP_PATH], { stdout: `${SHA}  ${RP_PATH}\n` })
      .expect([
        'lvchange',
        '--permission',
        'r',
        '--deltag',
        'cowstack_cstate:copying',
        '--addtag',
        'cowstack_cstate:complete',
        '--addtag',
        `cowstack_used:${NOW}`,
        `${CVG}/${RP}`,
      ]);
    // the clean-up after replicate(): the replica is not under any stack yet, the cache VG is not read
    expectObserve(
      r,
      [imageRow('image', U.image, { sha: SHA, active: 'shared', minor: 3 }), cloneRow('vm', U.c1, U.image)],
      [lvDev('image', U.image, 3, 0, true)],
    ).expect(['lvchange', '-an', `${VG}/image`]);
    // mapClone again, now on the replica
    expectCache(r, [replicaRow({ active: true, used: NOW })]);
    expectObserve(r, rows);
    r.expect(['install', '-D', '-m', '0600', '/proc/self/fd/0', `/var/lib/cowstack/journal/${VG}.vm.map.json`])
      .expect(['lvchange', '--addtag', `cowstack_used:${NOW}`, `${CVG}/${RP}`])
      .expect(['lvchange', '-aey', `${VG}/vm`])
      .expect(...stillLive('vm', U.c1))
      .expect([
        'dmsetup',
        'create',
        rw(U.c1),
        '--uuid',
        `COWSTACK-rw-${compact(U.c1)}`,
        '--table',
        `0 ${(64 * MiB) / 512} snapshot ${RP_PATH} /dev/mapper/${VG}-vm PO 8`,
      ])
      .expect(['rm', '-f', '--', `/var/lib/cowstack/journal/${VG}.vm.map.json`]);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['replica'] });
    r.verify();
    expect(res).toMatchObject({ action: 'mapped', replica: RP });
  });
});

describe('lvchange applies --addtag before --deltag: a tag is never both deleted and added', () => {
  it('a complete replica reports every byte copied, also without its progress tag (cache list said 0)', () => {
    const row = replicaRow({ size: 128 * MiB });
    row.lv_tags = (row.lv_tags as string[]).filter((t) => !t.startsWith('cowstack_copied:'));
    const [c] = parseLvs(lvsJson([row])).map(cacheLvFrom);
    expect(c).toMatchObject({ kind: 'replica', state: 'complete', copiedBytes: 128 * MiB });
    const [copying] = parseLvs(lvsJson([replicaRow({ state: 'copying', copied: 64 * MiB, size: 128 * MiB })])).map(
      cacheLvFrom,
    );
    expect(copying).toMatchObject({ state: 'copying', copiedBytes: 64 * MiB });
  });
});
