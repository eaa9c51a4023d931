/**
 * The lazy read cache of an image (dm-cache smq writethrough, read-only table, over the image
 * LV): exact argv of map --cache lazy when it is created, re-attached cleanly, re-attached
 * after a crash (reset), reset because cache_check fails or the device reports needs_check;
 * its detach when the last clone on it is unmapped; eviction and drop of the LV pair; the
 * dry run; sizes; and the status parser against REAL `dmsetup status` output of the testbed.
 */
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { dropCaches } from '../../src/core/cache/eviction.js';
import { lazyDataBytes, lazyMetaBytes } from '../../src/core/cache/lazy.js';
import { listCaches } from '../../src/core/cache/list.js';
import { replicate } from '../../src/core/cache/replicate.js';
import { mapClone, unmapClone } from '../../src/core/clones.js';
import { nodeSession, type NodeSession } from '../../src/core/node.js';
import { parseCacheModes } from '../../src/core/config.js';
import { recover } from '../../src/core/recover.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { parseCacheStatus, parseDmLines, parseNamedLines } from '../../src/tools/dmsetup.js';
import {
  newReplicaLv,
  lvcreateInactive,
  cloneRow,
  compact,
  expectObserve,
  expectObserveDevicesFirst,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  lvRow,
  MiB,
  rw,
  U,
  VG,
  type Dev,
  stillLive,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, vgsArgv, vgsJson } from './support.js';

const CVG = 'cowstack_cache';
const W = { kind: 'write' } as const;
const NOW = 1795000000;
const SHA = 'ab'.repeat(32);
const LM = `lm_${compact(U.image)}`;
const LC = `lc_${compact(U.image)}`;
const LM_PATH = `/dev/mapper/${CVG}-${LM}`;
const LC_PATH = `/dev/mapper/${CVG}-${LC}`;
const LCDEV = `cowstack-lc-${compact(U.image)}`;
const IMG_SECTORS = (64 * MiB) / 512;
const TABLE = `0 ${IMG_SECTORS} cache ${LM_PATH} ${LC_PATH} /dev/mapper/${VG}-image 128 1 writethrough smq 0`;

/** REAL: `dmsetup status` of a lazy cache device on the testbed (Debian 12, Linux 6.1). */
const fixture = (name: string) =>
  readFileSync(new URL(`../fixtures/linux-6.1-bookworm/${name}`, import.meta.url), 'utf8');

const vgRow = (free = 1024 * MiB) => ({
  vg_name: CVG,
  vg_uuid: 'x',
  vg_size: 2048 * MiB,
  vg_free: free,
  vg_extent_size: 4 * MiB,
  vg_lock_type: '',
  vg_lock_args: '',
  vg_shared: '',
  vg_tags: '',
  pv_count: 1,
  lv_count: 2,
});
const pairRows = (
  o: { state?: 'new' | 'ready' | 'attached'; active?: boolean; open?: boolean; used?: number; origin?: string } = {},
) => {
  const origin = o.origin ?? U.image;
  const tags = (kind: string) => [
    `cowstack_cache:${kind}`,
    `cowstack_origin:${origin}`,
    `cowstack_cstate:${o.state ?? 'ready'}`,
    `cowstack_used:${o.used ?? NOW - 100}`,
  ];
  return [
    lvRow({
      vg: CVG,
      name: `lm_${compact(origin)}`,
      uuid: 'Lm0000-aaaa-bbbb-cccc-dddd-eeee-ffffff',
      size: 8 * MiB,
      active: o.active ? 'exclusive' : undefined,
      open: o.open,
      minor: 40,
      tags: tags('lazymeta'),
    }),
    lvRow({
      vg: CVG,
      name: `lc_${compact(origin)}`,
      uuid: 'Lc0000-aaaa-bbbb-cccc-dddd-eeee-ffffff',
      size: 32 * MiB,
      active: o.active ? 'exclusive' : undefined,
      open: o.open,
      minor: 41,
      tags: tags('lazy'),
    }),
  ];
};
const pairDevs = (open = 1): Dev[] => [
  lvDev(LM, 'Lm0000-aaaa-bbbb-cccc-dddd-eeee-ffffff', 40, open, false, CVG),
  lvDev(LC, 'Lc0000-aaaa-bbbb-cccc-dddd-eeee-ffffff', 41, open, false, CVG),
];
const lcDev = (open: number): Dev => ({
  name: LCDEV,
  uuid: `COWSTACK-lc-${compact(U.image)}`,
  open,
  minor: 42,
  readOnly: true,
});

const image = (active = false, open = false) =>
  imageRow('image', U.image, { sha: SHA, active: active ? 'shared' : undefined, open, minor: 3 });
const vm = (active = false, open = false) =>
  cloneRow('vm', U.c1, U.image, { active: active ? 'exclusive' : undefined, open, minor: 8 });

/** observe() with the cache VG asked for always (map --cache lazy): cache reports first. */
function observeAlways(
  r: RecordingRunner,
  cacheRows: Array<Record<string, unknown>>,
  rows: Array<Record<string, unknown>>,
  devs: Dev[] = [],
  free?: number,
) {
  r.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow(free)]) }).expect(lvsArgv(CVG), { stdout: lvsJson(cacheRows) });
  return expectObserve(r, rows, devs);
}
/** observe() 'auto': repository first; the cache VG because an LV of it is active here. */
function observeAuto(
  r: RecordingRunner,
  cacheRows: Array<Record<string, unknown>>,
  rows: Array<Record<string, unknown>>,
  devs: Dev[],
  /** unmap: dmsetup info first (its plain-mapping check), then lvs. */
  devicesFirst = false,
) {
  (devicesFirst ? expectObserveDevicesFirst : expectObserve)(r, rows, devs);
  if (devs.some((d) => d.name.startsWith(`${CVG}-`)))
    r.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow()]) }).expect(lvsArgv(CVG), { stdout: lvsJson(cacheRows) });
  return r;
}

const statusOk = () => ({
  stdout:
    fixture('dmsetup-status-lazy-cache.txt')
      .split('\n')[0]!
      .replace(/^\S+: /, '') + '\n',
});
const ctxOf = (r: RecordingRunner | DryRunRunner, extra: Partial<NodeSession> = {}): NodeSession =>
  nodeSession({
    runner: r,
    vg: VG,
    cacheVg: CVG,
    ...extra,
  });
const zero = ['dd', 'if=/dev/zero', `of=${LM_PATH}`, 'bs=4096', 'count=1', 'oflag=direct', 'conv=fsync', 'status=none'];
const createLc = [
  'dmsetup',
  'create',
  LCDEV,
  '--uuid',
  `COWSTACK-lc-${compact(U.image)}`,
  '--readonly',
  '--table',
  TABLE,
];
const snapOnLc = [
  'dmsetup',
  'create',
  rw(U.c1),
  '--uuid',
  `COWSTACK-rw-${compact(U.c1)}`,
  '--table',
  `0 ${IMG_SECTORS} snapshot /dev/mapper/${LCDEV} /dev/mapper/${VG}-vm PO 8`,
];
/** After the attach: the re-observation and the clone's own layer on the lazy device. */
function mapOnLazy(r: RecordingRunner) {
  observeAlways(
    r,
    pairRows({ state: 'attached', active: true, open: true, used: NOW }),
    [image(true, true), vm()],
    [lvDev('image', U.image, 3, 1, true), ...pairDevs(1), lcDev(0)],
  );
  r.expect(journalBegin('vm', 'map'), W)
    .expect(['lvchange', '-aey', `${VG}/vm`], W)
    .expect(...stillLive('vm', U.c1))
    .expect(snapOnLc, W)
    .expect(journalEnd('vm', 'map'), W);
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(NOW * 1000);
});
afterEach(() => vi.useRealTimers());

describe('lazy cache sizes and modes', () => {
  const lazySizing =
    'data: a quarter of the image within [32 MiB, 4 GiB], never above the image; metadata: 4 MiB + 44 B per block, ' +
    'at least 8 MiB';
  it(lazySizing, () => {
    const E = 4 * MiB;
    expect(lazyDataBytes(8 * MiB, E)).toBe(8 * MiB);
    expect(lazyDataBytes(64 * MiB, E)).toBe(32 * MiB);
    expect(lazyDataBytes(1024 * MiB, E)).toBe(256 * MiB);
    expect(lazyDataBytes(64 * 1024 * MiB, E)).toBe(4096 * MiB);
    expect(lazyDataBytes(1024 * MiB, E, 10 * MiB)).toBe(12 * MiB);
    expect(lazyMetaBytes(32 * MiB, E)).toBe(8 * MiB);
    // 4 GiB = 65536 blocks: 4 MiB + 2.75 MiB -> 8 MiB; 64 GiB would need more.
    expect(lazyMetaBytes(4096 * MiB, E)).toBe(8 * MiB);
    expect(lazyMetaBytes(65536 * MiB, E)).toBe(48 * MiB);
    expect(parseCacheModes('lazy,write')).toEqual(['lazy', 'write']);
  });

  it('parses the REAL dm-cache status of a lazy cache device (and the table all devices print)', () => {
    const lines = parseNamedLines(fixture('dmsetup-status-lazy-cache.txt'));
    const line = [...lines.values()][0]![0]!;
    expect(line.target).toBe('cache');
    const st = parseCacheStatus(line.args);
    // The table is read-only, yet the status says rw: that field is the metadata's mode.
    expect(st).toMatchObject({
      cacheBlockSectors: 128,
      policy: 'smq',
      mode: 'rw',
      needsCheck: false,
      dirty: 0,
      features: ['writethrough', 'no_discard_passdown'],
      coreArgs: { migration_threshold: '2048' },
    });
    expect(st.cacheTotal).toBeGreaterThan(0);
    expect(st.cacheUsed).toBeGreaterThan(0);
    expect(st.promotions).toBeGreaterThan(0);
    expect(st.readHits + st.readMisses).toBeGreaterThan(0);
    const table = parseDmLines(fixture('dmsetup-table-lazy-cache.txt').replace(/^\S+: /, ''))[0]!;
    expect(table.target).toBe('cache');
    expect(table.args.slice(3)).toEqual(['128', '1', 'writethrough', 'smq', '0']);
  });
});

describe('clone map --cache lazy', () => {
  const lazyCreateAndAttach =
    'creates the LV pair (room made, metadata zeroed), attaches it read-only, and builds the clone on it';
  it(lazyCreateAndAttach, async () => {
    const r = recorder();
    observeAlways(r, [], [image(), vm()]);
    r.expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(
        lvcreateInactive(
          LM,
          8 * MiB,
          ['cowstack_cache:lazymeta', `cowstack_origin:${U.image}`, 'cowstack_cstate:attached', `cowstack_used:${NOW}`],
          CVG,
        ),
        W,
      )
      .expect(
        lvcreateInactive(
          LC,
          32 * MiB,
          ['cowstack_cache:lazy', `cowstack_origin:${U.image}`, 'cowstack_cstate:attached', `cowstack_used:${NOW}`],
          CVG,
        ),
        W,
      )
      .expect(['lvchange', '-aey', `${CVG}/${LM}`, `${CVG}/${LC}`], W)
      .expect(zero, W)
      .expect(createLc, W)
      .expect(['dmsetup', 'status', LCDEV], statusOk());
    mapOnLazy(r);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['lazy'] });
    r.verify();
    expect(res).toMatchObject({
      action: 'mapped',
      device: `/dev/mapper/${rw(U.c1)}`,
      lazy: { action: 'created', lv: LC, device: `/dev/mapper/${LCDEV}`, dataBytes: 32 * MiB },
    });
    expect(res.lazy?.reset).toBeUndefined();
  });

  const lazyCleanReattach =
    're-attaches a cleanly detached cache: one LVM command (activate + attached + used), cache_check passes, no reset';
  it(lazyCleanReattach, async () => {
    const r = recorder();
    observeAlways(r, pairRows(), [image(), vm()]);
    r.expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(
        [
          'lvchange',
          '-aey',
          '--deltag',
          'cowstack_cstate:ready',
          '--addtag',
          'cowstack_cstate:attached',
          '--deltag',
          `cowstack_used:${NOW - 100}`,
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${LM}`,
          `${CVG}/${LC}`,
        ],
        W,
      )
      .expect(['cache_check', '-q', LM_PATH], { kind: 'read' })
      .expect(createLc, W)
      .expect(['dmsetup', 'status', LCDEV], statusOk());
    mapOnLazy(r);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['lazy'] });
    r.verify();
    expect(res.lazy).toMatchObject({ action: 'attached' });
    expect(res.lazy?.reset).toBeUndefined();
  });

  it('a pair still marked attached (a crash) is reset: metadata zeroed before the device is created', async () => {
    const r = recorder();
    observeAlways(r, pairRows({ state: 'attached' }), [image(), vm()]);
    r.expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(
        [
          'lvchange',
          '-aey',
          '--deltag',
          `cowstack_used:${NOW - 100}`,
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${LM}`,
          `${CVG}/${LC}`,
        ],
        W,
      )
      .expect(zero, W)
      .expect(createLc, W)
      .expect(['dmsetup', 'status', LCDEV], statusOk());
    mapOnLazy(r);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['lazy'] });
    r.verify();
    expect(res.lazy).toMatchObject({ action: 'attached', reset: true });
    expect(res.lazy?.resetReason).toContain('crash');
  });

  it('cache_check failing resets the cache; a device reporting needs_check is reset and re-created', async () => {
    const r = recorder();
    observeAlways(r, pairRows(), [image(), vm()]);
    r.expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(
        [
          'lvchange',
          '-aey',
          '--deltag',
          'cowstack_cstate:ready',
          '--addtag',
          'cowstack_cstate:attached',
          '--deltag',
          `cowstack_used:${NOW - 100}`,
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${LM}`,
          `${CVG}/${LC}`,
        ],
        W,
      )
      .expect(['cache_check', '-q', LM_PATH], { kind: 'read', exitCode: 1, stderr: 'bad checksum in superblock\n' })
      .expect(zero, W)
      .expect(createLc, W)
      .expect(['dmsetup', 'status', LCDEV], statusOk());
    mapOnLazy(r);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['lazy'] });
    r.verify();
    expect(res.lazy).toMatchObject({
      reset: true,
      resetReason: 'cache_check failed (exit 1: bad checksum in superblock)',
    });

    const n = recorder();
    observeAlways(n, pairRows(), [image(true), vm()], [lvDev('image', U.image, 3, 0, true)]);
    const needsCheck = statusOk().stdout.replace(/ - ?\n$/, ' needs_check\n');
    n.expect(
      [
        'lvchange',
        '-aey',
        '--deltag',
        'cowstack_cstate:ready',
        '--addtag',
        'cowstack_cstate:attached',
        '--deltag',
        `cowstack_used:${NOW - 100}`,
        '--addtag',
        `cowstack_used:${NOW}`,
        `${CVG}/${LM}`,
        `${CVG}/${LC}`,
      ],
      W,
    )
      .expect(['cache_check', '-q', LM_PATH], { kind: 'read' })
      .expect(createLc, W)
      .expect(['dmsetup', 'status', LCDEV], { stdout: needsCheck })
      .expect(['dmsetup', 'remove', '--retry', LCDEV], W)
      .expect(zero, W)
      .expect(createLc, W);
    mapOnLazy(n);
    const res2 = await mapClone(ctxOf(n), 'vm', { cache: ['lazy'] });
    n.verify();
    expect(res2.lazy).toMatchObject({ reset: true, resetReason: 'the device reported needs_check after attach' });
  });

  it('an attached cache is shared: the next clone stands on it with no cache command at all', async () => {
    const r = recorder();
    const devs = [lvDev('image', U.image, 3, 1, true), ...pairDevs(1), lcDev(1)];
    observeAlways(
      r,
      pairRows({ state: 'attached', active: true, open: true }),
      [image(true, true), cloneRow('vm', U.c2, U.image)],
      devs,
    );
    r.expect(journalBegin('vm', 'map'), W)
      .expect(['lvchange', '-aey', `${VG}/vm`], W)
      .expect(...stillLive('vm', U.c2))
      .expect(
        [
          'dmsetup',
          'create',
          rw(U.c2),
          '--uuid',
          `COWSTACK-rw-${compact(U.c2)}`,
          '--table',
          `0 ${IMG_SECTORS} snapshot /dev/mapper/${LCDEV} /dev/mapper/${VG}-vm PO 8`,
        ],
        W,
      )
      .expect(journalEnd('vm', 'map'), W);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['lazy'] });
    r.verify();
    expect(res.lazy).toMatchObject({ action: 'in-use', lv: LC });
  });

  const lazyDryRun =
    '--dry-run shows the exact argv of the whole plan (creation, attach, the clone on it) and changes nothing';
  it(lazyDryRun, async () => {
    const inner = recorder();
    observeAlways(inner, [], [image(), vm()]);
    inner.expect(...stillLive('vm', U.c1)); // the re-read under the lock is a read: it runs
    const dry = new DryRunRunner(inner);
    const res = await mapClone(ctxOf(dry, { dryRun: true }), 'vm', { cache: ['lazy'] });
    inner.verify();
    expect(dry.planned.map((p) => p.argv)).toEqual([
      ['lvchange', '-asy', `${VG}/image`],
      lvcreateInactive(
        LM,
        8 * MiB,
        ['cowstack_cache:lazymeta', `cowstack_origin:${U.image}`, 'cowstack_cstate:attached', `cowstack_used:${NOW}`],
        CVG,
      ),
      lvcreateInactive(
        LC,
        32 * MiB,
        ['cowstack_cache:lazy', `cowstack_origin:${U.image}`, 'cowstack_cstate:attached', `cowstack_used:${NOW}`],
        CVG,
      ),
      ['lvchange', '-aey', `${CVG}/${LM}`, `${CVG}/${LC}`],
      zero,
      createLc,
      journalBegin('vm', 'map'),
      ['lvchange', '-aey', `${VG}/vm`],
      snapOnLc,
      journalEnd('vm', 'map'),
    ]);
    expect(res.lazy).toMatchObject({ action: 'created' });
  });
});

describe('lazy cache teardown, eviction, drop, recover', () => {
  const lazyDetachOnLastUnmap =
    'unmapping the last clone on it detaches it cleanly (ready, deactivated in one LVM command), ' +
    'then releases the image';
  it(lazyDetachOnLastUnmap, async () => {
    const r = recorder();
    const devs = [
      lvDev('image', U.image, 3, 1, true),
      ...pairDevs(1),
      lcDev(1),
      lvDev('vm', U.c1, 8, 1),
      { name: rw(U.c1), uuid: `COWSTACK-rw-${compact(U.c1)}`, open: 0, minor: 9 },
    ];
    observeAuto(
      r,
      pairRows({ state: 'attached', active: true, open: true, used: NOW - 5 }),
      [image(true, true), vm(true, true)],
      devs,
      true,
    );
    const lcTable = TABLE.replace(LM_PATH, '253:40')
      .replace(LC_PATH, '253:41')
      .replace(`/dev/mapper/${VG}-image`, '253:3');
    r.expect(['dmsetup', 'table'], {
      kind: 'read',
      stdout: `${rw(U.c1)}: 0 ${IMG_SECTORS} snapshot 253:42 253:8 P 8\n${LCDEV}: ${lcTable}\n`,
    })
      .expect(journalBegin('vm', 'unmap'), W)
      .expect(['dmsetup', 'remove', '--retry', rw(U.c1)], W)
      .expect(['lvchange', '-an', `${VG}/vm`], W)
      .expect(['dmsetup', 'remove', '--retry', LCDEV], W)
      .expect(
        [
          'lvchange',
          '-an',
          '--deltag',
          'cowstack_cstate:attached',
          '--addtag',
          'cowstack_cstate:ready',
          '--deltag',
          `cowstack_used:${NOW - 5}`,
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${LM}`,
          `${CVG}/${LC}`,
        ],
        W,
      )
      .expect(['lvchange', '-an', `${VG}/image`], W)
      .expect(journalEnd('vm', 'unmap'), W);
    expect((await unmapClone(ctxOf(r), 'vm')).action).toBe('unmapped');
    r.verify();
  });

  const lazyKeptWhileInUse =
    'keeps the cache while another clone stands on it, and a snapshot built on the image LV releases the image LV, ' +
    'not the cache';
  it(lazyKeptWhileInUse, async () => {
    const r = recorder();
    const devs = [
      lvDev('image', U.image, 3, 2, true),
      ...pairDevs(1),
      lcDev(1),
      lvDev('vm', U.c1, 8, 1),
      { name: rw(U.c1), uuid: `COWSTACK-rw-${compact(U.c1)}`, open: 0, minor: 9 },
    ];
    observeAuto(
      r,
      pairRows({ state: 'attached', active: true, open: true }),
      [image(true, true), vm(true, true)],
      devs,
      true,
    );
    // vm's snapshot stands on the image LV (253:3): mapped before the cache was attached.
    r.expect(['dmsetup', 'table'], { kind: 'read', stdout: `${rw(U.c1)}: 0 ${IMG_SECTORS} snapshot 253:3 253:8 P 8\n` })
      .expect(journalBegin('vm', 'unmap'), W)
      .expect(['dmsetup', 'remove', '--retry', rw(U.c1)], W)
      .expect(['lvchange', '-an', `${VG}/vm`], W)
      .expect(journalEnd('vm', 'unmap'), W);
    await unmapClone(ctxOf(r), 'vm');
    r.verify();
  });

  const lazyEvictAndDrop =
    'eviction takes the least recently used unused lazy pair (both LVs), never an attached one; drop removes the pair';
  it(lazyEvictAndDrop, async () => {
    const other = U.img2;
    const rows = [imageRow('image', U.image, { size: 128 * MiB, sha: SHA }), imageRow('other', other, { sha: SHA })];
    // replicate(): 128 MiB needed, 100 MiB free: the unused lazy pair of "other" (40 MiB) goes.
    const rr = recorder();
    expectObserve(rr, rows);
    rr.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow(100 * MiB)]) }).expect(lvsArgv(CVG), {
      stdout: lvsJson(pairRows({ origin: other })),
    });
    rr.expect(['lvremove', '-y', `${CVG}/lc_${compact(other)}`, `${CVG}/lm_${compact(other)}`], W)
      .expect(newReplicaLv(128 * MiB), W)
      .expect(['lvchange', '-aey', `${CVG}/rp_${compact(U.image)}`], { exitCode: 5, stderr: 'stop here' })
      .expect(['lvremove', '-y', `${CVG}/rp_${compact(U.image)}`], W);
    await expect(replicate(ctxOf(rr), 'image')).rejects.toThrow();
    rr.verify();

    const busy = recorder();
    expectObserve(busy, rows);
    busy
      .expect(vgsArgv(CVG), { stdout: vgsJson([vgRow(100 * MiB)]) })
      .expect(lvsArgv(CVG), { stdout: lvsJson(pairRows({ origin: other, active: true, open: true })) });
    await expect(replicate(ctxOf(busy), 'image')).rejects.toThrow(/needed/);
    busy.verify();

    const d = recorder();
    d.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow()]) }).expect(lvsArgv(CVG), {
      stdout: lvsJson(pairRows({ active: true })),
    });
    expectObserve(d, [image()]);
    d.expect(['lvchange', '-an', `${CVG}/${LC}`, `${CVG}/${LM}`], W).expect(
      ['lvremove', '-y', `${CVG}/${LC}`, `${CVG}/${LM}`],
      W,
    );
    expect(await dropCaches(ctxOf(d), { image: 'image' })).toMatchObject({ dropped: [LC] });
    d.verify();
  });

  it('cache list shows a lazy entry with its blocks and counters from the device status', async () => {
    const r = recorder();
    r.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow()]) }).expect(lvsArgv(CVG), {
      stdout: lvsJson(pairRows({ state: 'attached', active: true, open: true })),
    });
    expectObserve(r, [image(true, true)], [lvDev('image', U.image, 3, 1, true), ...pairDevs(1), lcDev(0)]);
    r.expect(['dmsetup', 'status'], {
      kind: 'read',
      stdout: fixture('dmsetup-status-lazy-cache.txt').replace(/^\S+:/, `${LCDEV}:`),
    });
    const list = await listCaches(ctxOf(r));
    r.verify();
    expect(list.caches).toHaveLength(1);
    const st = parseCacheStatus(statusOk().stdout.trim().split(/\s+/).slice(3));
    expect(list.caches[0]).toMatchObject({
      kind: 'lazy',
      name: LC,
      state: 'attached',
      sizeBytes: 32 * MiB,
      origin: { name: 'image' },
      hits: st.readHits,
      misses: st.readMisses,
      lazy: { metaBytes: 8 * MiB, usedBlocks: st.cacheUsed, totalBlocks: st.cacheTotal, promotions: st.promotions },
    });
  });

  const lazyRecover =
    'recover detaches a lazy device nothing stands on, and reports a pair of another image left attached by a crash';
  it(lazyRecover, async () => {
    const LS = ['ls', '-1', '-A', '--', '/var/lib/cowstack/journal'];
    const r = recorder();
    r.expect(LS, { kind: 'read', stdout: '' });
    const devs = [lvDev('image', U.image, 3, 1, true), ...pairDevs(1), lcDev(0)];
    const cacheRows = [
      ...pairRows({ state: 'attached', active: true, open: true, used: NOW - 5 }),
      ...pairRows({ state: 'attached', origin: U.img2 }),
    ];
    const rows = [image(true, true), imageRow('other', U.img2, { sha: SHA })];
    // recoverWriteback: no write-back cache, nothing to do.
    observeAlways(r, cacheRows, rows, devs);
    r.expect(['uname', '-n'], { stdout: 'node1\n' });
    // recoverLazy: the unused device is detached by the image's garbage collection.
    observeAlways(r, cacheRows, rows, devs);
    observeAuto(r, cacheRows, rows, devs);
    r.expect(['dmsetup', 'table'], { kind: 'read', stdout: '' })
      .expect(['dmsetup', 'remove', '--retry', LCDEV], W)
      .expect(
        [
          'lvchange',
          '-an',
          '--deltag',
          'cowstack_cstate:attached',
          '--addtag',
          'cowstack_cstate:ready',
          '--deltag',
          `cowstack_used:${NOW - 5}`,
          '--addtag',
          `cowstack_used:${NOW}`,
          `${CVG}/${LM}`,
          `${CVG}/${LC}`,
        ],
        W,
      )
      .expect(['lvchange', '-an', `${VG}/image`], W);
    // The look for unused devices and activations, then nodeStatus, on what is left.
    const after = [image(), imageRow('other', U.img2, { sha: SHA })];
    expectObserve(r, after);
    expectObserve(r, after)
      .expect(['dmsetup', 'status'], { kind: 'read', stdout: '' })
      .expect(['dmsetup', 'table'], { kind: 'read', stdout: '' })
      .expect(LS, { kind: 'read', stdout: '' });
    const rep = await recover(ctxOf(r));
    r.verify();
    expect(rep.actions).toEqual([
      { op: 'lazy-cache', name: 'image', decision: 'finished', detail: expect.stringContaining('detached cleanly') },
      {
        op: 'lazy-cache',
        name: 'other',
        decision: 'nothing-to-do',
        detail: expect.stringContaining('reset (metadata zeroed) at its next attach'),
      },
    ]);
  });
});
