/**
 * npm run bench -- distribute: replicas of one image on N = 1..(nodes) nodes, side by side in
 * one run: today's `cache replicate` on every node at once (each reads the image from the
 * repository LUN) against `catalog stage` (the seed reads it once; the nodes trade pieces by
 * BitTorrent). Per N: bytes the repository side sent (LUN bytes read by all nodes, sanlock's
 * lease reads excluded), what the seed uploaded, and the time until all N hold a verified
 * replica. Needs the testbed's per-node peer/tracker ports (a testbed booted by this version).
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cowstack } from '../test/integration/cli.js';
import { pattern } from '../test/integration/data.js';
import type { Testbed } from '../test/testbed/index.js';
import { lunReadSectors, REPO_VG, table, timedCli, withCluster } from './harness.js';

const IMAGE_MIB = Number(process.env.BENCH_IMAGE_MIB ?? 64);
const MiB = 2 ** 20;
const tag = Date.now().toString(36).slice(-4);
const image = `dist${tag}`;

const lunBytes = async (tb: Testbed, node: string): Promise<number> => (await lunReadSectors(tb, node)) * 512;

async function measured<T>(tb: Testbed, fn: () => Promise<T>) {
  const all = tb.nodes.map((n) => n.name);
  const before = await Promise.all(all.map((n) => lunBytes(tb, n)));
  const t0 = Date.now();
  const value = await fn();
  const seconds = (Date.now() - t0) / 1000;
  const after = await Promise.all(all.map((n) => lunBytes(tb, n)));
  return { seconds, lun: after.reduce((s, a, i) => s + a - before[i]!, 0), value };
}

async function dropAll(tb: Testbed): Promise<void> {
  for (const n of tb.nodes) {
    await timedCli(tb, n.name, ['cache', 'drop', image, '--vg', REPO_VG]);
    await tb.sh(n.name, 'rm -rf /var/lib/cowstack/staging');
  }
}

export async function benchDistribute(): Promise<void> {
  await withCluster(async (tb) => {
    const ready = tb.nodes.filter((n) => n.peerPort && n.trackerPort);
    if (ready.length < tb.nodes.length)
      throw new Error('the testbed has no peer/tracker ports: boot it with this version');
    const work = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-bench-dist-'));
    const file = path.join(work, 'img.raw');
    await fsp.writeFile(file, pattern(IMAGE_MIB * MiB, 4242));
    await timedCli(tb, 'node1', ['image', 'import', image, file, '--vg', REPO_VG]);
    for (const n of tb.nodes) {
      const list = await timedCli<{ exists: boolean }>(tb, n.name, ['cache', 'list', '--vg', REPO_VG]);
      if (!list.json.exists) await timedCli(tb, n.name, ['cache', 'init', n.localDisk, '--vg', REPO_VG]);
    }
    const rows: Array<Record<string, string | number>> = [];
    const hops: string[] = [];
    try {
      for (let N = 1; N <= tb.nodes.length; N++) {
        const nodes = tb.nodes.slice(0, N);
        const names = nodes.map((n) => n.name);
        const rep = await measured(tb, () =>
          Promise.all(names.map((n) => timedCli(tb, n, ['cache', 'replicate', image, '--vg', REPO_VG]))),
        );
        await dropAll(tb);
        const [seed] = nodes;
        const st = await measured(tb, async () => {
          const r = await cowstack(
            tb,
            [
              ...['--json', 'catalog', 'stage', image, '--vg', REPO_VG],
              ...['--hosts', nodes.map((n) => `${n.name}:${n.peerPort}`).join(',')],
              ...['--seed', `${seed!.name}:${seed!.peerPort}`],
              ...[
                '--tracker',
                `http://10.0.2.2:${seed!.trackerPort}/announce`,
                '--tracker-port',
                String(seed!.trackerPort),
              ],
            ],
            { timeoutMs: 3_600_000 },
          );
          if (r.exitCode !== 0) throw new Error(`catalog stage failed: ${r.stdout}\n${r.stderr}`);
          return r.json.result as {
            seedSentBytes: number;
            hosts: Array<{ host: string; downloadedAt: number; completeAt: number }>;
          };
        });
        await dropAll(tb);
        const mib = (b: number) => (b / MiB).toFixed(1);
        rows.push({
          N,
          'replicate: repo MiB': mib(rep.lun),
          'replicate: s': rep.seconds.toFixed(1),
          'stage: repo MiB': mib(st.lun),
          'stage: seed sent MiB': mib(st.value.seedSentBytes),
          'stage: s': st.seconds.toFixed(1),
          'stage: per node done at s': st.value.hosts.map((h) => h.completeAt.toFixed(0)).join('/'),
        });
        const at = (f: (h: (typeof st.value.hosts)[number]) => string) => st.value.hosts.map(f).join(', ');
        hops.push(
          `N=${N}: files verified at ${at((h) => `${h.host} ${h.downloadedAt.toFixed(1)}s`)}; ` +
            `replicas complete at ${at((h) => `${h.completeAt.toFixed(1)}s`)}`,
        );
      }
    } finally {
      await dropAll(tb).catch(() => undefined);
      await timedCli(tb, 'node1', ['image', 'rm', image, '--vg', REPO_VG]).catch(() => undefined);
      await fsp.rm(work, { recursive: true, force: true });
    }
    console.log(`distribute: a ${IMAGE_MIB} MiB image to N nodes (qemu TCG guests, one host, 2 cores)\n`);
    console.log(table(rows));
    console.log(`\n${hops.join('\n')}`);
  });
}
