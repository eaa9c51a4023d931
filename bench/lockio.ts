/**
 * npm run bench -- lockio: what the lock manager reads from the shared LUN (issue 12).
 *
 * On the testbed cluster (the one running, or a new one), both nodes joined and idle:
 *   - the LUN as each node sees it: logical/physical sector size, the sanlock lease
 *     alignment lvmlockd chose (lvmlock's and an LV's lock_args), the lockspace's io timeout;
 *   - idle: bytes sanlock read (/proc/PID/io read_bytes: every bio its threads submitted)
 *     and bytes the node read from the LUN in all (/sys/block/sdX/stat), over BENCH_IDLE_S;
 *   - per operation: the LUN bytes a `clone map` of a 64 MiB image read on node1 (the first
 *     map with the image not active here, and a second clone's with it active), an unmap and
 *     a create, each minus the idle rate over its duration: the VM has read nothing yet, so
 *     all of it is cowstack's and the lock manager's;
 *   - the model: the idle read rate of one host times 500 hosts, what the storage serves.
 * Nothing here changes the cluster's configuration: run it on testbeds made differently
 * (COWSTACK_TESTBED_LUN_PBS=512 for a LUN with 512-byte physical sectors) to compare.
 */
import { REPO_VG, table, timedCli, timedSsh, withCluster } from './harness.js';
import type { Testbed } from '../test/testbed/index.js';

const tag = Date.now().toString(36).slice(-4);
const IDLE_S = Math.max(30, Number(process.env.BENCH_IDLE_S ?? 60));
const IMAGE_MIB = 64;
const HOSTS = 500;

interface Sample {
  at: number;
  sanlock: number;
  lun: number;
}

/** The LUN's block device name on a node (sda, ...), from the iSCSI by-path link. */
async function lunDevice(tb: Testbed, node: string): Promise<string> {
  const r = await timedSsh(tb, node, ['sh', '-c', 'readlink -f /dev/disk/by-path/*-iscsi-*-lun-1 | head -1']);
  const dev = r.stdout.trim().split('/').pop() ?? '';
  if (!/^sd[a-z]+$/.test(dev)) throw new Error(`${node}: no iSCSI LUN found (${r.stdout.trim()})`);
  return dev;
}

async function sample(tb: Testbed, node: string, dev: string): Promise<Sample> {
  const script = `for p in $(pidof sanlock); do cat /proc/$p/io; done; echo; cat /sys/block/${dev}/stat`;
  const r = await timedSsh(tb, node, ['sh', '-c', script]);
  // sanlock runs as two processes (the daemon and its helper): their reads added up.
  const sanlock = [...r.stdout.matchAll(/^read_bytes:\s*(\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  // /sys/block/DEV/stat: the third field is sectors read, always in 512-byte units.
  const stat = r.stdout.trim().split('\n').pop()!.trim().split(/\s+/);
  return { at: Date.now(), sanlock, lun: Number(stat[2]) * 512 };
}

const kB = (bytes: number) => (bytes / 1000).toFixed(0);
const MiB = (bytes: number) => (bytes / 2 ** 20).toFixed(2);

export async function benchLockio(): Promise<void> {
  await withCluster(async (tb) => {
    const nodes = ['node1', 'node2'];
    const devs = Object.fromEntries(await Promise.all(nodes.map(async (n) => [n, await lunDevice(tb, n)] as const)));

    // What the LUN and the lockspace are.
    const n1 = 'node1';
    const geom = await timedSsh(tb, n1, [
      'sh',
      '-c',
      `cat /sys/block/${devs[n1]}/queue/logical_block_size /sys/block/${devs[n1]}/queue/physical_block_size`,
    ]);
    const [logical, physical] = geom.stdout.trim().split(/\s+/);
    const args = await timedSsh(tb, n1, ['lvs', '-a', '--noheadings', '-o', 'lv_name,lv_size,lock_args', REPO_VG]);
    const lvmlock =
      args.stdout
        .split('\n')
        .find((l) => /\[?lvmlock\]?/.test(l))
        ?.trim() ?? '?';
    const status = await timedSsh(tb, n1, ['sanlock', 'client', 'status', '-D']);
    // The lockspace's own section (after its `s NAME:HOST_ID:PATH:OFFSET` line), not the daemon's.
    const ls = status.stdout.slice(Math.max(0, status.stdout.search(/^s lvm_/m)));
    const field = (k: string) => new RegExp(`^\\s*${k}=(\\d+)`, 'm').exec(ls)?.[1] ?? '?';
    const lockspace = ['io_timeout', 'sector_size', 'align_size'].map((k) => `${k} ${field(k)}`).join(', ');
    const lvCount = args.stdout.trim().split('\n').length;
    console.log(`[lockio] LUN ${devs[n1]}: logical ${logical} B, physical ${physical} B sectors`);
    console.log(`[lockio] lvmlock LV: ${lvmlock}; ${lvCount} LVs in ${REPO_VG}; sanlock lockspace: ${lockspace}`);

    // Idle: nothing runs on either node for IDLE_S seconds.
    process.stderr.write(`  idle for ${IDLE_S} s\n`);
    const before = await Promise.all(nodes.map((n) => sample(tb, n, devs[n]!)));
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const after = await Promise.all(nodes.map((n) => sample(tb, n, devs[n]!)));
    const idle = nodes.map((n, i) => {
      const s = (after[i]!.at - before[i]!.at) / 1000;
      return {
        node: n,
        sanlock: (after[i]!.sanlock - before[i]!.sanlock) / s,
        lun: (after[i]!.lun - before[i]!.lun) / s,
      };
    });
    console.log(
      table(
        idle.map((x) => ({
          node: x.node,
          'sanlock read kB/s': kB(x.sanlock),
          'LUN read kB/s': kB(x.lun),
          [`${HOSTS} hosts: storage serves MB/s`]: ((x.lun * HOSTS) / 1e6).toFixed(1),
        })),
      ),
    );

    // Per operation on node1, minus its idle rate over the operation's duration.
    const rate = idle[0]!.lun;
    const cost = async (label: string, args: string[]) => {
      const a = await sample(tb, n1, devs[n1]!);
      await timedCli(tb, n1, [...args, '--vg', REPO_VG]);
      const b = await sample(tb, n1, devs[n1]!);
      const seconds = (b.at - a.at) / 1000;
      const bytes = Math.max(0, b.lun - a.lun - rate * seconds);
      return {
        operation: label,
        'LUN MiB read': MiB(bytes),
        'sanlock MiB': MiB(b.sanlock - a.sanlock),
        seconds: seconds.toFixed(1),
      };
    };
    const image = `lio-${tag}`;
    await timedCli(tb, n1, ['image', 'create', image, '--size', `${IMAGE_MIB}M`, '--vg', REPO_VG]);
    await timedCli(tb, n1, ['image', 'seal', image, '--vg', REPO_VG]);
    const rows = [];
    rows.push(await cost('clone create', ['clone', 'create', `lio1-${tag}`, '--from', image]));
    rows.push(await cost('clone map (image not active here)', ['clone', 'map', `lio1-${tag}`]));
    await timedCli(tb, n1, ['clone', 'create', `lio2-${tag}`, '--from', image, '--vg', REPO_VG]);
    rows.push(await cost('clone map (image active here)', ['clone', 'map', `lio2-${tag}`]));
    rows.push(await cost('clone unmap', ['clone', 'unmap', `lio2-${tag}`]));
    console.log(table(rows));
    for (const c of [`lio1-${tag}`, `lio2-${tag}`]) await timedCli(tb, n1, ['clone', 'discard', c, '--vg', REPO_VG]);
    await timedCli(tb, n1, ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
