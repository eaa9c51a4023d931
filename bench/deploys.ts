/**
 * npm run bench -- deploys: N VM deploys (TM clone of one image) at once, against the same N
 * one after the other (issue 12, concurrency across the cluster).
 *
 * Every LVM metadata change takes the VG lock through sanlock, and one node runs one
 * cowstack operation at a time (the node lock), so concurrent deploys serialize somewhere:
 * this measures where and how much. Three rounds of BENCH_N (default 6) deploys, in this order:
 *   sequential:  one after the other, alternating node1/node2;
 *   both nodes:  all at once, spread over node1 and node2;
 *   one node:    all at once on node1.
 * After each round every deploy must have succeeded exactly once: each VM's disk link is a
 * block device of the image's size, each VM has one COW LV, and no VM's LV is missing or
 * doubled; the round's VMs are then deleted and nothing of them may be left (LVs, devices).
 * Printed: seconds per round, deploys per minute, and the speedup against sequential.
 */
import { REPO_VG, table, timedCli, timedSsh, withCluster } from './harness.js';
import { DS, FE, tmHarness, type TmHarness } from '../test/integration/tm-harness.js';
import type { Testbed } from '../test/testbed/index.js';

const tag = Date.now().toString(36).slice(-4);
const N = Math.max(2, Number(process.env.BENCH_N ?? 6));
const IMAGE_MIB = 64;

interface Round {
  name: string;
  nodes: (i: number) => string;
  together: boolean;
}

/** One COW LV per VM, a disk of the image's size at each link, and nothing doubled. */
async function check(tb: Testbed, vms: number[], placed: string[]): Promise<void> {
  const lvs = (await timedSsh(tb, 'node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG])).stdout
    .split('\n')
    .map((l) => l.trim());
  for (const [i, vm] of vms.entries()) {
    const mine = lvs.filter((l) => l.startsWith(`one-${vm}-`));
    if (mine.length !== 1) throw new Error(`VM ${vm}: ${mine.length} LVs (${mine.join(', ')}), expected 1`);
    const size = await timedSsh(tb, placed[i]!, ['blockdev', '--getsize64', `${DS}/0/${vm}/disk.0`]);
    if (Number(size.stdout.trim()) !== IMAGE_MIB << 20) throw new Error(`VM ${vm}: disk is ${size.stdout.trim()} B`);
  }
}

/** After the deletes: no LV of these VMs, and no cowstack device on either node. */
async function leftovers(tb: Testbed, vms: number[]): Promise<void> {
  const lvs = (await timedSsh(tb, 'node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG])).stdout;
  const left = vms.filter((vm) => lvs.includes(`one-${vm}-`));
  if (left.length) throw new Error(`LVs of VMs ${left.join(', ')} left after delete`);
  for (const node of ['node1', 'node2']) {
    const dm = (await timedSsh(tb, node, ['dmsetup', 'info', '-c', '--noheadings', '-o', 'name,uuid'])).stdout;
    const ours = dm.split('\n').filter((l) => l.includes('COWSTACK-'));
    if (ours.length) throw new Error(`${node}: devices left after delete: ${ours.join('; ')}`);
  }
}

async function round(tb: Testbed, tm: TmHarness, image: string, r: Round, base: number): Promise<number> {
  const vms = Array.from({ length: N }, (_, i) => base + i);
  const placed = vms.map((_, i) => r.nodes(i));
  const deploy = (i: number) =>
    tm.ok('clone', [`${FE}:${REPO_VG}/${image}`, `${placed[i]}:${DS}/0/${vms[i]}/disk.0`, String(vms[i]), '1']);
  const started = process.hrtime.bigint();
  if (r.together) await Promise.all(vms.map((_, i) => deploy(i)));
  else for (const i of vms.keys()) await deploy(i);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await check(tb, vms, placed);
  for (const [i, vm] of vms.entries()) await tm.ok('delete', [`${placed[i]}:${DS}/0/${vm}/`, String(vm), '0']);
  await leftovers(tb, vms);
  return seconds;
}

export async function benchDeploys(): Promise<void> {
  await withCluster(async (tb) => {
    const tm = await tmHarness(tb, ['node1', 'node2']);
    const image = `dep-${tag}`;
    await timedCli(tb, 'node1', ['image', 'create', image, '--size', `${IMAGE_MIB}M`, '--vg', REPO_VG]);
    await timedCli(tb, 'node1', ['image', 'seal', image, '--vg', REPO_VG]);
    const rounds: Round[] = [
      { name: 'sequential (node1/node2 alternating)', nodes: (i) => `node${(i % 2) + 1}`, together: false },
      { name: 'all at once, both nodes', nodes: (i) => `node${(i % 2) + 1}`, together: true },
      { name: 'all at once, node1 only', nodes: () => 'node1', together: true },
    ];
    const base = 6000 + (parseInt(tag, 36) % 300) * 10;
    const rows = [];
    let sequential = 0;
    for (const [k, r] of rounds.entries()) {
      process.stderr.write(`  ${r.name}: ${N} deploys\n`);
      const seconds = await round(tb, tm, image, r, base + k * 1000);
      if (k === 0) sequential = seconds;
      rows.push({
        round: r.name,
        deploys: N,
        seconds: seconds.toFixed(1),
        'deploys/min': ((N * 60) / seconds).toFixed(1),
        'vs sequential': `${(sequential / seconds).toFixed(2)}x`,
      });
    }
    console.log(
      `[deploys] ${N} TM clones of a ${IMAGE_MIB} MiB image per round; every one succeeded, none left behind`,
    );
    console.log(table(rows));
    await timedCli(tb, 'node1', ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
