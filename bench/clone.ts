/**
 * npm run bench -- clone: the time to give a VM a disk, cowstack (clone create + map)
 * against a full copy of the image into a new LV (OpenNebula fs_lvm's way), for a
 * 256 MiB and a 1 GiB image, side by side in one run; the commands each operation runs;
 * and read throughput through depth-1 and depth-4 chains relative to the bare image.
 */
import { REPO_VG, readThroughput, table, timedCli, timedSsh, withCluster } from './harness.js';
import type { CloneResult } from '../src/core/clones.js';
import type { Testbed } from '../test/testbed/index.js';

const tag = Date.now().toString(36).slice(-4);
const node = 'node1';

async function fullCopy(
  tb: Testbed,
  image: string,
  bytes: number,
  name: string,
): Promise<{ seconds: number; commands: number }> {
  const started = process.hrtime.bigint();
  const steps = [
    ['lvcreate', '-an', '-Zn', '-Wn', '--setautoactivation', 'n', '-L', `${bytes}b`, '-n', name, REPO_VG],
    ['lvchange', '-asy', `${REPO_VG}/${image}`],
    ['lvchange', '-aey', `${REPO_VG}/${name}`],
    [
      'dd',
      `if=/dev/${REPO_VG}/${image}`,
      `of=/dev/${REPO_VG}/${name}`,
      'bs=4M',
      'iflag=direct',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ],
  ];
  for (const argv of steps) await timedSsh(tb, node, argv);
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, commands: steps.length };
}

export async function benchClone(): Promise<void> {
  await withCluster(async (tb) => {
    const rows: Array<Record<string, string | number>> = [];
    const images: Array<[string, number]> = [
      [`b256-${tag}`, 256 << 20],
      [`b1g-${tag}`, 1024 << 20],
    ];
    for (const [image, bytes] of images) {
      await timedCli(tb, node, ['image', 'create', image, '--size', `${bytes}`, '--vg', REPO_VG]);
      await timedCli(tb, node, ['image', 'seal', image, '--vg', REPO_VG]);
      const create = await timedCli(tb, node, ['clone', 'create', `c-${image}`, '--from', image, '--vg', REPO_VG]);
      const map = await timedCli(tb, node, ['clone', 'map', `c-${image}`, '--vg', REPO_VG]);
      const copy = await fullCopy(tb, image, bytes, `copy-${image}`);
      rows.push({
        image: `${bytes >> 20} MiB`,
        'cowstack create+map s': (create.seconds + map.seconds).toFixed(1),
        'commands (create/map)': `${create.commands}/${map.commands}`,
        'full copy s': copy.seconds.toFixed(1),
        'copy / cowstack': (copy.seconds / (create.seconds + map.seconds)).toFixed(1),
      });
      await timedCli(tb, node, ['clone', 'discard', `c-${image}`, '--vg', REPO_VG]);
      await timedSsh(tb, node, ['lvchange', '-an', `${REPO_VG}/copy-${image}`]);
      await timedSsh(tb, node, ['lvremove', '-y', `${REPO_VG}/copy-${image}`]);
    }
    console.log('\nGiving a VM a disk (node1, qemu TCG, iSCSI LUN from tgtd on the host):');
    console.log(table(rows));
    const small = Number(rows[0]!['cowstack create+map s']);
    const large = Number(rows[1]!['cowstack create+map s']);
    console.log(`cowstack 1 GiB / 256 MiB time ratio: ${(large / small).toFixed(2)} (1.0 = independent of image size)`);

    // Read throughput through chains, relative to the bare image LV.
    const base = images[0]![0];
    let parent = base;
    const chain: string[] = [];
    for (let i = 1; i <= 4; i++) {
      const c = `d${i}-${tag}`;
      await timedCli(tb, node, ['clone', 'create', c, '--from', parent, '--vg', REPO_VG]);
      const m = await timedCli<CloneResult>(tb, node, ['clone', 'map', c, '--vg', REPO_VG]);
      await timedSsh(tb, node, [
        'dd',
        'if=/dev/urandom',
        `of=${m.json.device}`,
        'bs=1M',
        'count=16',
        `seek=${i * 32}`,
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ]);
      await timedCli(tb, node, ['clone', 'commit', c, '--vg', REPO_VG]);
      chain.push(c);
      parent = c;
    }
    await timedSsh(tb, node, ['lvchange', '-asy', `${REPO_VG}/${base}`]);
    const bare = await readThroughput(tb, node, `/dev/${REPO_VG}/${base}`);
    const d1 = await timedCli<CloneResult>(tb, node, ['clone', 'map', chain[0]!, '--vg', REPO_VG]);
    const r1 = await readThroughput(tb, node, d1.json.device!);
    const d4 = await timedCli<CloneResult>(tb, node, ['clone', 'map', chain[3]!, '--vg', REPO_VG]);
    const r4 = await readThroughput(tb, node, d4.json.device!);
    // The same depth-1 read with a 64 KiB chunk: dm-snapshot splits I/O at the chunk size.
    const big = `k64-${tag}`;
    await timedCli(tb, node, ['clone', 'create', big, '--from', base, '--chunk', '64K', '--vg', REPO_VG]);
    const m64 = await timedCli<CloneResult>(tb, node, ['clone', 'map', big, '--vg', REPO_VG]);
    await timedSsh(tb, node, [
      'dd',
      'if=/dev/urandom',
      `of=${m64.json.device}`,
      'bs=1M',
      'count=16',
      'seek=32',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ]);
    const r64 = await readThroughput(tb, node, m64.json.device!);
    await timedCli(tb, node, ['clone', 'discard', big, '--vg', REPO_VG]);
    console.log('\nSequential O_DIRECT read of 256 MiB (same run, same node):');
    console.log(
      table([
        { device: 'bare image LV', 'MB/s': bare.toFixed(1), relative: '1.00' },
        { device: 'depth-1 chain', 'MB/s': r1.toFixed(1), relative: (r1 / bare).toFixed(2) },
        { device: 'depth-1, 64K chunk', 'MB/s': r64.toFixed(1), relative: (r64 / bare).toFixed(2) },
        { device: 'depth-4 chain', 'MB/s': r4.toFixed(1), relative: (r4 / bare).toFixed(2) },
      ]),
    );
    for (const c of [...chain].reverse())
      await timedCli(tb, node, ['clone', 'unmap', c, '--vg', REPO_VG]).catch(() => undefined);
    for (const c of [...chain].reverse()) await timedCli(tb, node, ['clone', 'rm', c, '--vg', REPO_VG]);
    await timedSsh(tb, node, ['lvchange', '-an', `${REPO_VG}/${base}`]).catch(() => undefined);
    for (const [image] of images) await timedCli(tb, node, ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
