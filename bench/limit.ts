/**
 * npm run bench -- limit: what cowstack costs against the hand-typed minimum (issue 11).
 *
 * On one node, over the same ssh transport, interleaved and repeated (BENCH_REPS, at least 5):
 *   hand:     lvcreate -aey -Zy ... (the COW, tagged), lvchange -asy IMAGE, dmsetup create ... snapshot P 8
 *   cowstack: clone create + clone map (two invocations), and TM clone (one invocation)
 * Each repetition starts from the same node state (image inactive here, nothing mapped), the
 * order of the two sides alternates, and medians are printed with their ratio. Then the
 * commands every operation runs (from --verbose), against the targets of issue 11.
 *
 * BENCH_BASELINE_CLI=FILE (another build of dist/cowstack.mjs, e.g. main's) adds clone create +
 * clone map and clone create --map with that bundle as sides of the same interleaved runs, so a
 * change to the CLI's start is measured against its baseline under the same load.
 */
import { execa } from 'execa';
import { REPO_VG, table, timedCli, timedSsh, withCluster } from './harness.js';
import { DS, FE, tmHarness } from '../test/integration/tm-harness.js';
import { CLI } from '../test/integration/cli.js';
import type { Testbed } from '../test/testbed/index.js';

const tag = Date.now().toString(36).slice(-4);
const node = 'node1';
const REPS = Math.max(5, Number(process.env.BENCH_REPS ?? 5));
const BASELINE = process.env.BENCH_BASELINE_CLI;
const IMAGE_MIB = 64;
const COW_MIB = 16;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const commandsOf = (stderr: string) => stderr.split('\n').filter((l) => /\] [$>] /.test(l)).length;

/** cowstack with --verbose: seconds and the commands it ran on the node. */
async function cow(
  tb: Testbed,
  args: string[],
  cli = CLI,
): Promise<{ seconds: number; commands: number; json: unknown }> {
  const started = process.hrtime.bigint();
  const r = await execa('node', [cli, '--host', node, '--json', '--verbose', ...args, '--vg', REPO_VG], {
    reject: false,
    env: { COWSTACK_SSH_CONFIG: tb.sshConfig, COWSTACK_CONFIG: '/dev/null', NO_COLOR: '1' },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.exitCode !== 0) throw new Error(`cowstack ${args.join(' ')} failed: ${r.stdout}\n${r.stderr}`);
  return { seconds, commands: commandsOf(String(r.stderr)), json: JSON.parse(String(r.stdout)).result };
}

async function ssh(tb: Testbed, argv: string[]): Promise<number> {
  return (await timedSsh(tb, node, argv)).seconds;
}

export async function benchLimit(): Promise<void> {
  await withCluster(async (tb) => {
    const image = `lim-${tag}`;
    await timedCli(tb, node, ['image', 'create', image, '--size', `${IMAGE_MIB}M`, '--vg', REPO_VG]);
    await timedCli(tb, node, ['image', 'seal', image, '--vg', REPO_VG]);
    const uuid = (
      await timedSsh(tb, node, ['lvs', '--noheadings', '-o', 'lv_uuid', `${REPO_VG}/${image}`])
    ).stdout.trim();
    const sectors = (IMAGE_MIB << 20) / 512;
    const tm = await tmHarness(tb, ['node1', 'node2'], { verbose: true });

    const hand = async (i: number) => {
      const lv = `h${i}-${tag}`;
      const dev = `hand-${i}-${tag}`;
      let s = 0;
      s += await ssh(tb, [
        'lvcreate',
        '-aey',
        '-Zy',
        '-Wn',
        '--setautoactivation',
        'n',
        '-L',
        `${COW_MIB}m`,
        '-n',
        lv,
        '--addtag',
        'bench_role:clone',
        '--addtag',
        `bench_parent:${uuid}`,
        REPO_VG,
      ]);
      s += await ssh(tb, ['lvchange', '-asy', `${REPO_VG}/${image}`]);
      const mapper = (lv: string) => `/dev/mapper/${REPO_VG}-${lv.replace(/-/g, '--')}`;
      const table = `0 ${sectors} snapshot ${mapper(image)} ${mapper(lv)} P 8`;
      s += await ssh(tb, ['dmsetup', 'create', dev, '--table', table]);
      // Back to the starting state (not timed).
      await ssh(tb, ['dmsetup', 'remove', dev]);
      await ssh(tb, ['lvremove', '-y', `${REPO_VG}/${lv}`]);
      await ssh(tb, ['lvchange', '-an', `${REPO_VG}/${image}`]);
      return s;
    };
    const createMap = async (i: number, cli = CLI) => {
      const name = `cm${i}${cli === CLI ? '' : 'b'}-${tag}`;
      const c = await cow(tb, ['clone', 'create', name, '--from', image], cli);
      const m = await cow(tb, ['clone', 'map', name], cli);
      const u = await cow(tb, ['clone', 'unmap', name]);
      await cow(tb, ['clone', 'map', name]);
      const k = await cow(tb, ['clone', 'commit', name]);
      const d = await cow(tb, ['clone', 'discard', name]);
      return {
        seconds: c.seconds + m.seconds,
        create: c.commands,
        map: m.commands,
        unmap: u.commands,
        commit: k.commands,
        discard: d.commands,
      };
    };
    const createMapped = async (i: number, cli = CLI) => {
      const name = `cx${i}${cli === CLI ? '' : 'b'}-${tag}`;
      const c = await cow(tb, ['clone', 'create', name, '--from', image, '--map'], cli);
      await cow(tb, ['clone', 'discard', name]);
      return { seconds: c.seconds, commands: c.commands };
    };
    const tmClone = async (i: number) => {
      const vm = 7000 + (parseInt(tag, 36) % 1000) * 10 + i;
      const c = await tm.ok('clone', [`${FE}:${REPO_VG}/${image}`, `${node}:${DS}/0/${vm}/disk.0`, String(vm), '1']);
      const d = await tm.ok('delete', [`${node}:${DS}/0/${vm}/`, String(vm), '0']);
      return { seconds: c.seconds, clone: commandsOf(c.stderr), del: commandsOf(d.stderr) };
    };

    const times = {
      hand: [] as number[],
      createMap: [] as number[],
      createMapped: [] as number[],
      tmClone: [] as number[],
      baseCreateMap: [] as number[],
      baseCreateMapped: [] as number[],
    };
    const counts: Record<string, number[]> = {};
    const count = (k: string, n: number) => (counts[k] ??= []).push(n);
    for (let i = 0; i < REPS; i++) {
      process.stderr.write(`  repetition ${i + 1}/${REPS}\n`);
      const sides = [
        async () => times.hand.push(await hand(i)),
        async () => {
          const r = await createMap(i);
          times.createMap.push(r.seconds);
          for (const k of ['create', 'map', 'unmap', 'commit', 'discard'] as const) count(`clone ${k}`, r[k]);
        },
        async () => {
          const r = await createMapped(i);
          times.createMapped.push(r.seconds);
          count('clone create --map', r.commands);
        },
        async () => {
          const r = await tmClone(i);
          times.tmClone.push(r.seconds);
          count('TM clone', r.clone);
          count('TM delete', r.del);
        },
      ];
      if (BASELINE)
        sides.push(
          async () => times.baseCreateMap.push((await createMap(i, BASELINE)).seconds),
          async () => times.baseCreateMapped.push((await createMapped(i, BASELINE)).seconds),
        );
      // Alternate the order so that neither side always runs on a warmer node.
      for (const side of i % 2 ? sides.reverse() : sides) await side();
    }

    const h = median(times.hand);
    console.log(
      `\nA VM disk (a ${COW_MIB} MiB COW on a ${IMAGE_MIB} MiB image), ${node}, ${REPS} interleaved repetitions:`,
    );
    // One row per way: its median and its ratio to the hand-typed median of the same run.
    const row = (way: string, xs: number[]) => ({
      way,
      'median s': median(xs).toFixed(2),
      ratio: (median(xs) / h).toFixed(2),
    });
    console.log(
      table([
        row('hand-typed: lvcreate -aey -Zy, lvchange -asy, dmsetup create', times.hand),
        row('cowstack clone create + clone map', times.createMap),
        row('cowstack clone create --map (one operation)', times.createMapped),
        row('cowstack TM clone', times.tmClone),
        ...(BASELINE
          ? [
              row('baseline bundle: clone create + clone map', times.baseCreateMap),
              row('baseline bundle: clone create --map', times.baseCreateMapped),
            ]
          : []),
      ]),
    );
    const targets: Record<string, number | undefined> = {
      'clone create': undefined,
      'clone map': undefined,
      'clone unmap': 4,
      'clone commit': 6,
      'clone discard': undefined,
      'clone create --map': undefined,
      'TM clone': 8,
      'TM delete': 8,
    };
    console.log('\nCommands per operation (median; each one ssh round trip or local exec on the node):');
    console.log(
      table(
        Object.entries(targets).map(([op, target]) => {
          const n = median(counts[op] ?? [NaN]);
          return {
            operation: op,
            commands: n,
            'issue 11 target': target ?? '-',
            holds: target === undefined ? '-' : n <= target ? 'yes' : 'NO',
          };
        }),
      ),
    );
    console.log(`create + map: ${median(counts['clone create']!) + median(counts['clone map']!)} commands (hand: 3)`);
    await timedCli(tb, node, ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
