/**
 * npm run bench -- cache: node-local caches side by side in one run on node1.
 *  1. K clone "starts" (clone create + map + a boot-like read of one scattered block set)
 *     with no cache, on the lazy dm-cache (created by the first start, re-attached by the
 *     others) and on a replica: repository bytes read and wall time (lease traffic of
 *     sanlock excluded: it is counted on the lvmlock LV and subtracted).
 *  2. A write burst into a mapped clone with and without the write-back cache while node1's
 *     path to the repository is slowed by tc netem inside the guest; the flush cost at commit.
 */
import { lunReadSectors, REPO_VG, table, timedCli, timedSsh, withCluster } from './harness.js';
import type { CacheReport } from '../src/core/cache/list.js';
import type { CloneResult } from '../src/core/clones.js';
import type { Testbed } from '../test/testbed/index.js';

const tag = Date.now().toString(36).slice(-4);
const node = 'node1';
const K = 3;
const IMAGE_MIB = 32;
const BLOCKS = 64; // 64 KiB blocks read per boot, at fixed pseudo-random offsets
const DELAY_MS = 20;

function offsets(): number[] {
  let x = 12345;
  const out = new Set<number>();
  while (out.size < BLOCKS) {
    x = (x * 48271) % 2147483647; // Park-Miller: stays exact in a double
    out.add(x % ((IMAGE_MIB * 1024) / 64));
  }
  return [...out];
}

const repoReadSectors = (tb: Testbed): Promise<number> => lunReadSectors(tb, node);

async function boots(tb: Testbed, image: string, mode: string): Promise<Record<string, string | number>> {
  const offs = offsets().join(' ');
  let bytes = 0;
  let seconds = 0;
  for (let i = 0; i < K; i++) {
    const c = `bc${i}-${mode}-${tag}`;
    const before = await repoReadSectors(tb);
    const t0 = process.hrtime.bigint();
    await timedCli(tb, node, ['clone', 'create', c, '--from', image, '--vg', REPO_VG]);
    const m = await timedCli<CloneResult>(tb, node, ['clone', 'map', c, '--vg', REPO_VG, '--cache', mode]);
    await tb.sh(
      node,
      `for o in ${offs}; do dd if=${m.json.device} of=/dev/null bs=64k skip=$o count=1 iflag=direct status=none; done`,
    );
    seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    bytes += ((await repoReadSectors(tb)) - before) * 512;
    await timedCli(tb, node, ['clone', 'discard', c, '--vg', REPO_VG]);
  }
  return {
    mode,
    starts: K,
    'repository MiB read': (bytes / 2 ** 20).toFixed(2),
    'wall s': seconds.toFixed(1),
    's per start': (seconds / K).toFixed(1),
  };
}

async function burst(tb: Testbed, image: string, cache: boolean): Promise<Record<string, string | number>> {
  const c = `bw-${cache ? 'wb' : 'plain'}-${tag}`;
  await timedCli(tb, node, ['clone', 'create', c, '--from', image, '--cow-size', '64M', '--vg', REPO_VG]);
  const m = await timedCli<CloneResult>(tb, node, [
    'clone',
    'map',
    c,
    '--vg',
    REPO_VG,
    '--cache',
    cache ? 'write' : 'none',
  ]);
  const fio = await timedSsh(tb, node, [
    'fio',
    '--name=burst',
    `--filename=${m.json.device}`,
    '--rw=randwrite',
    '--bs=4k',
    '--size=16M',
    '--io_size=8M',
    '--ioengine=libaio',
    '--iodepth=4',
    '--direct=1',
    '--output-format=terse',
    '--terse-version=3',
  ]);
  const f = fio.stdout.trim().split('\n').pop()!.split(';');
  const commit = await timedCli<CloneResult>(tb, node, ['clone', 'commit', c, '--vg', REPO_VG]);
  await timedCli(tb, node, ['clone', 'rm', c, '--vg', REPO_VG]);
  return {
    clone: cache ? 'write-back cache' : 'no cache',
    'write IOPS': f[48] ?? '?',
    'write KiB/s': f[47] ?? '?',
    'commit s': commit.seconds.toFixed(1),
    'flushed blocks': commit.json.flushedBlocks ?? 0,
    'flush s': commit.json.flushSeconds !== undefined ? commit.json.flushSeconds.toFixed(2) : '-',
  };
}

export async function benchCache(): Promise<void> {
  await withCluster(async (tb) => {
    const list = await timedCli<CacheReport>(tb, node, ['cache', 'list', '--vg', REPO_VG]);
    if (!list.json.exists) await timedCli(tb, node, ['cache', 'init', '/dev/vda', '--vg', REPO_VG]);
    const image = `bi-${tag}`;
    await timedCli(tb, node, ['image', 'create', image, '--size', `${IMAGE_MIB}M`, '--vg', REPO_VG]);
    // Some content so the read set is not all zeroes; then sealed (checksum recorded).
    await timedSsh(tb, node, ['lvchange', '-aey', `${REPO_VG}/${image}`]);
    await timedSsh(tb, node, [
      'dd',
      'if=/dev/urandom',
      `of=/dev/${REPO_VG}/${image}`,
      'bs=4M',
      `count=${IMAGE_MIB / 4}`,
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ]);
    await timedSsh(tb, node, ['lvchange', '-an', `${REPO_VG}/${image}`]);
    await timedCli(tb, node, ['image', 'seal', image, '--vg', REPO_VG]);

    const rows = [await boots(tb, image, 'none')];
    // Before the replica exists (a complete replica wins over the lazy cache).
    rows.push(await boots(tb, image, 'lazy'));
    const before = await repoReadSectors(tb);
    const rp = await timedCli(tb, node, ['cache', 'replicate', image, '--vg', REPO_VG]);
    const copied = ((await repoReadSectors(tb)) - before) * 512;
    rows.push(await boots(tb, image, 'replica'));
    console.log(
      `\n${K} clone starts of one ${IMAGE_MIB} MiB image on node1 (create + map + read ${BLOCKS} scattered 64 KiB ` +
        'blocks + discard; the lazy cache is created by the first start), ' +
        `repository bytes without sanlock's lease reads:`,
    );
    console.log(table(rows));
    console.log(
      `replica made once: ${(copied / 2 ** 20).toFixed(1)} MiB read from the repository in ${rp.seconds.toFixed(1)} ` +
        's (verified by sha256)',
    );

    const dev = (await tb.sh(node, "ip -o route get 10.0.2.2 | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p'")).stdout.trim();
    const burstRows: Array<Record<string, string | number>> = [];
    await timedSsh(tb, node, ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${DELAY_MS}ms`]);
    try {
      burstRows.push(await burst(tb, image, false));
      burstRows.push(await burst(tb, image, true));
    } finally {
      await timedSsh(tb, node, ['tc', 'qdisc', 'del', 'dev', dev, 'root']);
    }
    console.log(
      '\nWrite burst: fio 8 MiB of 4 KiB random writes, queue depth 4, O_DIRECT, ' +
        `node1's repository path delayed ${DELAY_MS} ms (tc netem on ${dev} in the guest):`,
    );
    console.log(table(burstRows));

    await timedCli(tb, node, ['cache', 'drop', image, '--vg', REPO_VG]);
    await timedCli(tb, node, ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
