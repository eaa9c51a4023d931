/** Shared bench plumbing: a testbed cluster (reused if running), timed CLI calls, command counts. */
import { execa } from 'execa';
import { attach, down, ensureImage, up, type Testbed } from '../test/testbed/index.js';
import { bringUpCluster, REPO_VG } from '../test/integration/cluster.js';
import { CLI } from '../test/integration/cli.js';

export { REPO_VG };

export async function withCluster<T>(fn: (tb: Testbed) => Promise<T>): Promise<T> {
  await ensureImage({ log: (s) => process.stderr.write(`  ${s}\n`) });
  let tb = await attach().catch(() => undefined);
  const mine = !tb;
  if (!tb) {
    tb = await up({ nodes: 2, log: (s) => process.stderr.write(`  ${s}\n`) });
    await bringUpCluster(tb, (s) => process.stderr.write(`  ${s}\n`));
  }
  try {
    return await fn(tb);
  } finally {
    if (mine) await down(tb.stateDir);
  }
}

export interface Timed<T = unknown> {
  seconds: number;
  /** External commands cowstack ran (each one ssh round trip over the shared connection). */
  commands: number;
  /** The command's --json result (its type as the caller names it). */
  json: T;
}

/** Runs cowstack with --verbose and counts the commands it printed. */
export async function timedCli<T = unknown>(tb: Testbed, node: string, args: string[]): Promise<Timed<T>> {
  const started = process.hrtime.bigint();
  const r = await execa('node', [CLI, '--host', node, '--json', '--verbose', ...args], {
    reject: false,
    env: { COWSTACK_SSH_CONFIG: tb.sshConfig, COWSTACK_CONFIG: '/dev/null', NO_COLOR: '1' },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.exitCode !== 0) throw new Error(`cowstack ${args.join(' ')} failed: ${r.stdout}\n${r.stderr}`);
  const commands = String(r.stderr)
    .split('\n')
    .filter((l) => /^- \[[^\]]+\] [$>] /.test(l) || /\] [$>] /.test(l)).length;
  return { seconds, commands, json: JSON.parse(String(r.stdout)).result };
}

/** Times a command on a guest over ssh. */
export async function timedSsh(
  tb: Testbed,
  node: string,
  argv: string[],
): Promise<{ seconds: number; stdout: string; stderr: string }> {
  const started = process.hrtime.bigint();
  const r = await tb.ssh(node, argv, { timeoutMs: 3_600_000 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} on ${node} failed: ${r.stderr}`);
  return { seconds, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Sectors a node read from the repository LUN since boot, those of sanlock's lease LV (the
 * `lvmlock` LV, whose reads are counted on the LUN too) left out: the repository's own data.
 */
export async function lunReadSectors(tb: Testbed, node: string): Promise<number> {
  const r = await tb.sh(
    node,
    'd=$(basename $(readlink -f /dev/disk/by-path/*-iscsi-*-lun-1)); ' +
      `l=$(basename $(readlink -f /dev/mapper/${REPO_VG}-lvmlock)); echo $(awk '{print $3}' /sys/block/$d/stat) ` +
      `$(awk '{print $3}' /sys/block/$l/stat)`,
  );
  const [disk, lock] = r.stdout.trim().split(/\s+/).map(Number);
  return disk! - lock!;
}

/** Sequential O_DIRECT read of a whole device; returns MB/s as dd measured it. */
export async function readThroughput(tb: Testbed, node: string, device: string): Promise<number> {
  const r = await timedSsh(tb, node, ['dd', `if=${device}`, 'of=/dev/null', 'bs=1M', 'iflag=direct']);
  const bytes = Number(/^(\d+) bytes/m.exec(r.stderr)?.[1] ?? 0);
  return bytes / 1e6 / r.seconds;
}

export const table = (rows: Array<Record<string, string | number>>): string => {
  const cols = Object.keys(rows[0] ?? {});
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(width[i]!)).join('  ');
  return [
    line(cols),
    line(width.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(cols.map((c) => String(r[c])))),
  ].join('\n');
};
