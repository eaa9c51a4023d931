/**
 * A small qemu VM inside a testbed node for the live-migration tests and bench: no OS, TCG,
 * 32 MiB, paused from the start (-S), its one drive (d0) a block device, QMP on a unix socket
 * driven through test/integration/qmp.py (copied into the guests). Data goes in through the
 * monitor's qemu-io. Migrations go over the guests' network path: the source connects to
 * 10.0.2.2:<destination's migratePort>, which the host forwards to the destination's 4444.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MIGRATE_GUEST_PORT } from '../testbed/testbed.js';
import type { Testbed } from '../testbed/index.js';

const QMP = '/run/cowstack-mig.qmp';
const PIDFILE = '/run/cowstack-mig.pid';
const CLIENT = '/root/qmp.py';

export async function installQmpClient(tb: Testbed): Promise<void> {
  const local = path.join(path.dirname(fileURLToPath(import.meta.url)), 'qmp.py');
  for (const n of tb.nodes) await tb.copyTo(n.name, local, CLIENT);
}

/** QMP commands on node's qemu, in order; their answers. Throws on an error answer. */
export async function qmp(tb: Testbed, node: string, ...commands: object[]): Promise<Array<{ return?: unknown }>> {
  const r = await tb.ssh(node, ['python3', CLIENT, QMP, ...commands.map((c) => JSON.stringify(c))]);
  if (r.exitCode !== 0) throw new Error(`${node}: qmp ${JSON.stringify(commands)}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A monitor (HMP) command line, e.g. `qemu-io d0 "write -P 0xab 0 64k"` (prints nothing back). */
export const hmp = (tb: Testbed, node: string, line: string) =>
  qmp(tb, node, { execute: 'human-monitor-command', arguments: { 'command-line': line } });

/** Start the paused VM on node with `device` as its drive; `incoming`: waiting for a migration. */
export async function startQemu(tb: Testbed, node: string, device: string, incoming: boolean): Promise<void> {
  const r = await tb.ssh(node, [
    'qemu-system-x86_64',
    ...['-accel', 'tcg', '-m', '32', '-nodefaults', '-display', 'none', '-S'],
    ...['-drive', `file=${device},if=none,id=d0,format=raw,cache=none,aio=threads`],
    ...['-device', 'virtio-blk-pci,drive=d0'],
    ...['-qmp', `unix:${QMP},server=on,wait=off`, '-daemonize', '-pidfile', PIDFILE],
    ...(incoming ? ['-incoming', `tcp:0.0.0.0:${MIGRATE_GUEST_PORT}`] : []),
  ]);
  if (r.exitCode !== 0) throw new Error(`${node}: qemu did not start: ${r.stderr}`);
}

/** Stop node's VM and wait until its process (and so its open disk) is gone, as libvirt does after a migration. */
export async function stopQemu(tb: Testbed, node: string): Promise<void> {
  const script =
    `if test -f ${PIDFILE}; then p=$(cat ${PIDFILE}); kill $p; ` +
    `while kill -0 $p 2>/dev/null; do sleep 0.1; done; fi; rm -f ${PIDFILE} ${QMP}`;
  await tb.ssh(node, ['sh', '-c', script]);
}

export interface Migration {
  status: string;
  /** qemu's own figures: the whole migration and the source's final pause. */
  totalMs: number;
  downtimeMs: number;
}

/** Migrate from -> to and wait for qemu's verdict (completed, failed, cancelled). */
export async function migrateVm(tb: Testbed, from: string, to: string, timeoutMs = 120_000): Promise<Migration> {
  const port = tb.nodes.find((n) => n.name === to)?.migratePort;
  if (!port) throw new Error(`${to} has no migration port forward (a testbed started before it existed?)`);
  // Not through qmp(): a migration that cannot connect may be refused by the command itself.
  const start = { execute: 'migrate', arguments: { uri: `tcp:10.0.2.2:${port}` } };
  const r = await tb.ssh(from, ['python3', CLIENT, QMP, JSON.stringify(start)]);
  if (r.exitCode !== 0) return { status: 'failed', totalMs: 0, downtimeMs: 0 };
  for (const started = Date.now(); Date.now() - started < timeoutMs;) {
    const [a] = await qmp(tb, from, { execute: 'query-migrate' });
    const m = a!.return as { status: string; 'total-time'?: number; downtime?: number };
    if (['completed', 'failed', 'cancelled'].includes(m.status))
      return { status: m.status, totalMs: m['total-time'] ?? 0, downtimeMs: m.downtime ?? 0 };
    await new Promise((res) => setTimeout(res, 300));
  }
  throw new Error(`migration ${from} -> ${to} did not finish in ${timeoutMs / 1000} s`);
}
