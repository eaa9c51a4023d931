/**
 * The write-back cache of a live clone: exact argv of map --cache write, of the write-back
 * at unmap (and after a crash: re-attach, then write back), of discard (dropped), the
 * refusal to release a COW whose cache reports an error, and of `cache flush` (written back
 * while it stays mapped).
 */
import { describe, expect, it } from 'vitest';
import { flushCaches } from '../../src/core/cache/flush.js';
import { commitClone, discardClone, mapClone, unmapClone } from '../../src/core/clones.js';
import { nodeSession, type NodeSession } from '../../src/core/node.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  commitMarkArgv,
  cloneRow,
  compact,
  expectObserve,
  expectObserveDevicesFirst,
  imageRow,
  lvDev,
  lvRow,
  MiB,
  rw,
  U,
  VG,
  type Dev,
  stillLive,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, vgsArgv, vgsJson } from './support.js';

const CVG = 'cowstack_cache';
const W = { kind: 'write' } as const;
const WB_LV = `wb_${compact(U.c1)}`;
const WB_LV_PATH = `/dev/mapper/${CVG}-${WB_LV}`;
const WB = `cowstack-wb-${compact(U.c1)}`;
const COW_SECTORS = (16 * MiB) / 512;
const IMG_SECTORS = (64 * MiB) / 512;
const WB_TABLE = `0 ${COW_SECTORS} writecache s /dev/mapper/${VG}-vm ${WB_LV_PATH} 4096 0`;

const vgRow = {
  vg_name: CVG,
  vg_uuid: 'x',
  vg_size: 2048 * MiB,
  vg_free: 1024 * MiB,
  vg_extent_size: 4 * MiB,
  vg_lock_type: '',
  vg_lock_args: '',
  vg_shared: '',
  vg_tags: '',
  pv_count: 1,
  lv_count: 1,
};
const wbRow = (active = true, open = false) =>
  lvRow({
    vg: CVG,
    name: WB_LV,
    uuid: 'Wb0000-aaaa-bbbb-cccc-dddd-eeee-ffffff',
    size: 16 * MiB,
    active: active ? 'exclusive' : undefined,
    open,
    minor: 30,
    tags: ['cowstack_cache:writeback', `cowstack_origin:${U.c1}`],
  });
const wbDev = (open = 1): Dev => ({ name: WB, uuid: `COWSTACK-wb-${compact(U.c1)}`, open, minor: 31 });
const rwDev = (open = 0): Dev => ({ name: rw(U.c1), uuid: `COWSTACK-rw-${compact(U.c1)}`, open, minor: 32 });

/**
 * observe() with the cache VG. `always` (recover, map --cache ...): the cache's two reports,
 * then the repository's three reads. Otherwise the repository's reads come first and the
 * cache's follow only when something can need them (an active cache LV, a write-back marker).
 */
function observeWith(
  r: RecordingRunner,
  cacheRows: Array<Record<string, unknown>>,
  rows: Array<Record<string, unknown>>,
  devs: Dev[] = [],
  always = false,
  /** unmap: dmsetup info first (its plain-mapping check), then lvs. */
  devicesFirst = false,
) {
  const cache = () =>
    r.expect(vgsArgv(CVG), { stdout: vgsJson([vgRow]) }).expect(lvsArgv(CVG), { stdout: lvsJson(cacheRows) });
  if (always) cache();
  (devicesFirst ? expectObserveDevicesFirst : expectObserve)(r, rows, devs);
  const needed =
    devs.some((d) => d.name.startsWith(`${CVG}-`)) ||
    rows.some((row) => (row.lv_tags as string[] | undefined)?.some((t) => t.startsWith('cowstack_wbhost:')));
  if (!always && needed) cache();
  return r;
}
const ctxOf = (r: RecordingRunner): NodeSession => nodeSession({ runner: r, vg: VG, cacheVg: CVG });
const image = (mapped = false) =>
  imageRow('image', U.image, { sha: 'ab'.repeat(32), active: mapped ? 'shared' : undefined, open: mapped, minor: 3 });
const vm = (active = false, open = false) =>
  cloneRow('vm', U.c1, U.image, { active: active ? 'exclusive' : undefined, open, minor: 8 });
/** The clone with the cluster-wide marker of node1's write-back cache. */
const vmMarked = (active = false, open = false) => {
  const row = vm(active, open);
  return { ...row, lv_tags: [...(row.lv_tags as string[]), 'cowstack_wbhost:node1'] };
};
const status = (free: number, writeback = 0, error = 0) => ({
  stdout: `0 ${COW_SECTORS} writecache ${error} 4064 ${free} ${writeback} 10 0 20 0 0 0 20 0 0 0\n`,
});
const journal = (op: string, end = false) =>
  end
    ? ['rm', '-f', '--', `/var/lib/cowstack/journal/${VG}.vm.${op}.json`]
    : ['install', '-D', '-m', '0600', '/proc/self/fd/0', `/var/lib/cowstack/journal/${VG}.vm.${op}.json`];

describe('clone map --cache write', () => {
  it('creates the cache LV (superblock zeroed), then maps writecache between the snapshot and the COW', async () => {
    const r = recorder();
    observeWith(r, [], [image(), vm()], [], true);
    r.expect(['uname', '-n'], { stdout: 'node1\n' })
      .expect(['lvchange', '--addtag', 'cowstack_wbhost:node1', `${VG}/vm`], W)
      .expect(
        [
          'lvcreate',
          '-an',
          '-Zn',
          '-Wn',
          '--setautoactivation',
          'n',
          '-L',
          `${16 * MiB}b`,
          '-n',
          WB_LV,
          '--addtag',
          'cowstack_cache:writeback',
          '--addtag',
          `cowstack_origin:${U.c1}`,
          CVG,
        ],
        W,
      )
      .expect(['lvchange', '-aey', `${CVG}/${WB_LV}`], W)
      .expect(
        ['dd', 'if=/dev/zero', `of=${WB_LV_PATH}`, 'bs=4096', 'count=1', 'oflag=direct', 'conv=fsync', 'status=none'],
        W,
      );
    observeWith(
      r,
      [wbRow()],
      [image(), vmMarked()],
      [lvDev(WB_LV, 'Wb0000-aaaa-bbbb-cccc-dddd-eeee-ffffff', 30, 0, false, CVG)],
      true,
    );
    r.expect(journal('map'), W)
      .expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(['lvchange', '-aey', `${VG}/vm`], W)
      .expect(...stillLive('vm', U.c1))
      .expect(['dmsetup', 'create', WB, '--uuid', `COWSTACK-wb-${compact(U.c1)}`, '--table', WB_TABLE], W)
      .expect(
        [
          'dmsetup',
          'create',
          rw(U.c1),
          '--uuid',
          `COWSTACK-rw-${compact(U.c1)}`,
          '--table',
          `0 ${IMG_SECTORS} snapshot /dev/mapper/${VG}-image /dev/mapper/${WB} PO 8`,
        ],
        W,
      )
      .expect(journal('map', true), W);
    const res = await mapClone(ctxOf(r), 'vm', { cache: ['write'] });
    r.verify();
    expect(res).toMatchObject({ action: 'mapped', writeback: WB, device: `/dev/mapper/${rw(U.c1)}` });
  });

  const writebackReattachAfterCrash =
    're-attaches a cache LV left by a crash even when mapped without --cache write (never maps around it)';
  it(writebackReattachAfterCrash, async () => {
    const r = recorder();
    observeWith(r, [wbRow(false)], [image(), vmMarked()]);
    r.expect(['uname', '-n'], { stdout: 'node1\n' }) // the marker names this node: no refusal
      .expect(journal('map'), W)
      .expect(['lvchange', '-asy', `${VG}/image`], W)
      .expect(['lvchange', '-aey', `${VG}/vm`], W)
      .expect(...stillLive('vm', U.c1))
      .expect(['lvchange', '-aey', `${CVG}/${WB_LV}`], W)
      .expect(['dmsetup', 'create', WB, '--uuid', `COWSTACK-wb-${compact(U.c1)}`, '--table', WB_TABLE], W)
      .expect(
        [
          'dmsetup',
          'create',
          rw(U.c1),
          '--uuid',
          `COWSTACK-rw-${compact(U.c1)}`,
          '--table',
          `0 ${IMG_SECTORS} snapshot /dev/mapper/${VG}-image /dev/mapper/${WB} PO 8`,
        ],
        W,
      )
      .expect(journal('map', true), W);
    expect((await mapClone(ctxOf(r), 'vm', { cache: ['none'] })).writeback).toBe(WB);
    r.verify();
  });

  it('refuses (7) --cache write on a node without a cache VG, before writing anything', async () => {
    const r = recorder();
    r.expect(vgsArgv(CVG), { exitCode: 5, stderr: `  Volume group "${CVG}" not found\n` }).expect(lvsArgv(CVG), {
      exitCode: 5,
      stderr: `  Volume group "${CVG}" not found\n`,
    });
    expectObserve(r, [image(), vm()]);
    const e = await rejectionOf(mapClone(ctxOf(r), 'vm', { cache: ['write'] }), EXIT.NOT_FOUND);
    expect(e.hint).toContain('cache init');
    r.verify();
  });
});

/** The devices of vm mapped with its write-back cache; `top` is the open count of the VM's disk. */
const mappedDevs = (top = 0): Dev[] => [
  lvDev('image', U.image, 3, 1, true),
  lvDev('vm', U.c1, 8, 1),
  lvDev(WB_LV, 'Wb0000-aaaa-bbbb-cccc-dddd-eeee-ffffff', 30, 1, false, CVG),
  wbDev(),
  rwDev(top),
];

describe('releasing the write-back cache', () => {
  const writebackUnmapFlushes =
    'unmap removes the snapshot, writes everything back, waits for zero dirty blocks, removes the cache, ' +
    'then releases the COW';
  it(writebackUnmapFlushes, async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(), false, true);
    r.expect(journal('unmap'), W)
      .expect(['dmsetup', 'remove', '--retry', rw(U.c1)], W)
      .expect(['dmsetup', 'status', WB], status(3992, 0))
      .expect(['dmsetup', 'message', WB, '0', 'flush'], W)
      .expect(['dmsetup', 'message', WB, '0', 'cleaner'], W)
      .expect(['dmsetup', 'status', WB], status(4000, 8))
      .expect(['dmsetup', 'status', WB], status(4064, 0))
      .expect(['dmsetup', 'remove', '--retry', WB], W)
      .expect(['lvchange', '-an', `${CVG}/${WB_LV}`], W)
      .expect(['lvremove', '-y', `${CVG}/${WB_LV}`], W);
    observeWith(r, [], [image(true), vm(true)], [lvDev('image', U.image, 3, 0, true), lvDev('vm', U.c1, 8, 0)]);
    r.expect(journal('unmap'), W)
      .expect(['lvchange', '-an', `${VG}/vm`, `${VG}/image`], W)
      .expect(journal('unmap', true), W);
    const res = await unmapClone(ctxOf(r), 'vm');
    r.verify();
    expect(res).toMatchObject({ action: 'unmapped', flushedBlocks: 72 });
  });

  const writebackCommitAfterCrash =
    'after a crash (cache LV, no devices) commit re-attaches the cache over the COW and writes it back before the ' +
    'state change';
  it(writebackCommitAfterCrash, async () => {
    const r = recorder();
    observeWith(r, [wbRow(false)], [image(), vmMarked()]);
    r.expect(['uname', '-n'], { stdout: 'node1\n' })
      .expect(journal('commit'), W)
      .expect(['lvchange', '-aey', `${VG}/vm`], W)
      .expect(['lvchange', '-aey', `${CVG}/${WB_LV}`], W)
      .expect(['dmsetup', 'create', WB, '--uuid', `COWSTACK-wb-${compact(U.c1)}`, '--table', WB_TABLE], W)
      .expect(['dmsetup', 'status', WB], status(4000, 0))
      .expect(['dmsetup', 'message', WB, '0', 'flush'], W)
      .expect(['dmsetup', 'message', WB, '0', 'cleaner'], W)
      .expect(['dmsetup', 'status', WB], status(4064, 0))
      .expect(['dmsetup', 'remove', '--retry', WB], W)
      .expect(['lvchange', '-an', `${CVG}/${WB_LV}`], W)
      .expect(['lvremove', '-y', `${CVG}/${WB_LV}`], W)
      .expect(['lvchange', '--deltag', 'cowstack_wbhost:node1', `${VG}/vm`], W);
    observeWith(r, [], [image(), vm(true)], [lvDev('vm', U.c1, 8, 0)]);
    r.expect(journal('commit'), W)
      .expect(commitMarkArgv(`${VG}/vm`), W)
      .expect(journal('commit', true), W); // nothing of the stack is left here to release
    expect((await commitClone(ctxOf(r), 'vm')).action).toBe('committed');
    r.verify();
  });

  it('never releases the COW when the cache reports an I/O error: the clone stays as it is', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs());
    r.expect(journal('commit'), W)
      .expect(['dmsetup', 'remove', '--retry', rw(U.c1)], W)
      .expect(['dmsetup', 'status', WB], status(100, 0))
      .expect(['dmsetup', 'message', WB, '0', 'flush'], W)
      .expect(['dmsetup', 'message', WB, '0', 'cleaner'], W)
      .expect(['dmsetup', 'status', WB], status(100, 0, 5));
    const e = await rejectionOf(commitClone(ctxOf(r), 'vm'), EXIT.FAILED);
    expect(e.message).toContain('I/O error');
    r.verify();
  });

  it('discard drops the cache without writing it back', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs());
    r.expect(['dmsetup', 'remove', '--retry', rw(U.c1)], W)
      .expect(['dmsetup', 'remove', '--retry', WB], W)
      .expect(['lvchange', '-an', `${CVG}/${WB_LV}`], W)
      .expect(['lvremove', '-y', `${CVG}/${WB_LV}`], W);
    observeWith(r, [], [image(true), vm(true)], [lvDev('image', U.image, 3, 0, true), lvDev('vm', U.c1, 8, 0)]);
    r.expect(journal('discard'), W)
      .expect(['lvchange', '-an', `${VG}/vm`, `${VG}/image`], W) // with the unused image, in one command
      .expect(['lvremove', '-y', `${VG}/vm`], W)
      .expect(journal('discard', true), W);
    expect((await discardClone(ctxOf(r), 'vm')).action).toBe('discarded');
    r.verify();
  });

  it("another node refuses to map or commit a clone whose blocks may sit in node1's write-back cache", async () => {
    for (const op of ['map', 'commit'] as const) {
      const r = recorder('node2');
      observeWith(r, [], [image(), vmMarked()]);
      r.expect(['uname', '-n'], { stdout: 'node2\n' });
      const e = await rejectionOf(op === 'map' ? mapClone(ctxOf(r), 'vm') : commitClone(ctxOf(r), 'vm'), EXIT.REFUSED);
      expect(e.message).toContain('write-back cache of node1');
      expect(e.hint).toContain('cowstack recover');
      r.verify();
    }
  });
});

describe('clone map --cache write --dry-run', () => {
  it('prints every write of the whole stack, cache included, and runs none', async () => {
    const { DryRunRunner } = await import('../../src/exec/dryRunRunner.js');
    const r = recorder();
    observeWith(r, [], [image(), vm()], [], true);
    r.expect(['uname', '-n'], { stdout: 'node1\n' }).expect(...stillLive('vm', U.c1));
    const dry = new DryRunRunner(r);
    await mapClone(nodeSession({ runner: dry, vg: VG, cacheVg: CVG, dryRun: true }), 'vm', { cache: ['write'] });
    r.verify();
    expect(dry.planned.map((p) => p.argv.slice(0, 2).join(' '))).toEqual([
      'lvchange --addtag',
      'lvcreate -an',
      'lvchange -aey',
      'dd if=/dev/zero',
      'install -D',
      'lvchange -asy',
      'lvchange -aey',
      'dmsetup create',
      'dmsetup create',
      'rm -f',
    ]);
    expect(dry.planned.at(-2)!.argv.join(' ')).toContain(`snapshot /dev/mapper/${VG}-image /dev/mapper/${WB} PO 8`);
  });
});

describe('cache flush', () => {
  const FLUSH = ['dmsetup', 'message', WB, '0', 'flush'];
  const STATUS = ['dmsetup', 'status', WB];
  /** A second live clone, mapped here without a write-back cache. */
  const plain = () => cloneRow('plain', U.c2, U.image, { active: 'exclusive', open: true, minor: 40 });
  const plainDevs = (): Dev[] => [
    lvDev('plain', U.c2, 40, 1),
    { name: rw(U.c2), uuid: `COWSTACK-rw-${compact(U.c2)}`, open: 1, minor: 41 },
  ];

  it('writes the cache back with the flush message alone: no unmap, no cleaner, no table change', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(1));
    r.expect(STATUS, status(3992)).expect(FLUSH, W).expect(STATUS, status(4064));
    const res = await flushCaches(ctxOf(r), { name: 'vm' });
    r.verify();
    expect(res.clones).toEqual([
      expect.objectContaining({ clone: 'vm', device: WB, action: 'flushed', dirtyBefore: 72, dirtyAfter: 0 }),
    ]);
  });

  it('reports the dirty count while the message runs (it answers only when everything is written back)', async () => {
    let finish!: () => void;
    const running = new Promise<void>((resolve) => (finish = resolve));
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(1));
    r.expect(STATUS, status(3000))
      .expect(FLUSH, { ...W, until: running })
      .expect(STATUS, status(3500))
      .expect(STATUS, status(4000))
      .expect(STATUS, status(4064));
    const seen: Array<[string, number, number]> = [];
    const res = await flushCaches(ctxOf(r), {
      name: 'vm',
      pollMs: 1,
      onProgress: (clone, dirty, before) => {
        seen.push([clone, dirty, before]);
        if (seen.length === 2) finish();
      },
    });
    r.verify();
    expect(seen).toEqual([
      ['vm', 564, 1064],
      ['vm', 64, 1064],
    ]);
    expect(res.clones[0]).toMatchObject({ dirtyBefore: 1064, dirtyAfter: 0 });
  });

  it('is idempotent: a cache with nothing dirty gets no message', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(1));
    r.expect(STATUS, status(4064));
    const res = await flushCaches(ctxOf(r), { name: 'vm' });
    r.verify();
    expect(res.clones[0]).toMatchObject({ action: 'none', dirtyBefore: 0, dirtyAfter: 0, device: WB });
  });

  it('without a clone name flushes every clone mapped here with a write-back cache, and only those', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true), plain()], [...mappedDevs(1), ...plainDevs()]);
    r.expect(STATUS, status(4000)).expect(FLUSH, W).expect(STATUS, status(4064));
    const res = await flushCaches(ctxOf(r));
    r.verify();
    expect(res.clones.map((c) => [c.clone, c.action, c.dirtyBefore, c.dirtyAfter])).toEqual([['vm', 'flushed', 64, 0]]);
  });

  it('without a clone name and no write-back cache mapped here: nothing but the observation', async () => {
    const r = recorder();
    observeWith(r, [], [image(true), plain()], [lvDev('image', U.image, 3, 1, true), ...plainDevs()]);
    expect((await flushCaches(ctxOf(r))).clones).toEqual([]);
    r.verify();
  });

  it('a clone without a write-back cache is a no-op that says why (its COW already has every write)', async () => {
    const r = recorder();
    observeWith(r, [], [image(true), plain()], [lvDev('image', U.image, 3, 1, true), ...plainDevs()]);
    const res = await flushCaches(ctxOf(r), { name: 'plain' });
    r.verify();
    expect(res.clones).toEqual([expect.objectContaining({ clone: 'plain', action: 'none', dirtyBefore: 0 })]);
    expect(res.clones[0]!.device).toBeUndefined();
    expect(res.clones[0]!.reason).toContain('no write-back cache');
  });

  it('refuses a clone whose write-back cache is on another node, naming where to run it', async () => {
    const r = recorder('node2');
    observeWith(r, [], [image(), vmMarked()]);
    r.expect(['uname', '-n'], { stdout: 'node2\n' });
    const e = await rejectionOf(flushCaches(ctxOf(r), { name: 'vm' }), EXIT.REFUSED);
    expect(e.message).toContain('on node1, not on node2');
    expect(e.hint).toContain('--host node1 cache flush vm');
    r.verify();
  });

  it('refuses a cache LV left by a crash (no device over it) rather than call it flushed', async () => {
    const r = recorder();
    observeWith(r, [wbRow(false)], [image(), vmMarked()]);
    r.expect(['uname', '-n'], { stdout: 'node1\n' });
    const e = await rejectionOf(flushCaches(ctxOf(r), { name: 'vm' }), EXIT.REFUSED);
    expect(e.message).toContain('left by a crash');
    expect(e.hint).toContain('cowstack recover');
    r.verify();
  });

  it('sends nothing to a cache that reports an I/O error', async () => {
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(1));
    r.expect(STATUS, status(3000, 0, 5));
    const e = await rejectionOf(flushCaches(ctxOf(r), { name: 'vm' }), EXIT.FAILED);
    expect(e.message).toContain('I/O error 5');
    r.verify();
  });

  it('rejects a bad clone name and a bad timeout before running anything', async () => {
    const r = recorder();
    expect((await rejectionOf(flushCaches(ctxOf(r), { name: 'a;b' }), EXIT.USAGE)).message).toContain('"a;b"');
    expect((await rejectionOf(flushCaches(ctxOf(r), { timeoutMs: -1 }), EXIT.USAGE)).message).toContain('-1');
    r.verify();
  });

  it('--dry-run reads the dirty count and prints the flush message it would send', async () => {
    const { DryRunRunner } = await import('../../src/exec/dryRunRunner.js');
    const r = recorder();
    observeWith(r, [wbRow(true, true)], [image(true), vm(true, true)], mappedDevs(1));
    r.expect(STATUS, status(4000));
    const dry = new DryRunRunner(r);
    const res = await flushCaches(nodeSession({ runner: dry, vg: VG, cacheVg: CVG, dryRun: true }), { name: 'vm' });
    r.verify();
    expect(dry.planned.map((p) => p.argv)).toEqual([FLUSH]);
    expect(res.clones[0]).toMatchObject({ action: 'flushed', dirtyBefore: 64, dirtyAfter: 64 });
  });
});
