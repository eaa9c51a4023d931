import type { Command } from 'commander';
import { clusterInit, clusterJoin, clusterStatus, type ClusterReport, type ClusterStatus } from '../../core/cluster.js';
import { DEFAULT_MAX_LVS } from '../../core/capacity.js';
import { usageError } from '../../exec/errors.js';
import { validateHostId } from '../../core/validate.js';
import { createContext, type Context } from '../context.js';
import { vgOption } from './shared.js';

function hostIdFrom(o: { hostId?: string }, ctx: Context): number {
  const v = o.hostId ?? ctx.config.node.hostId;
  if (v === undefined)
    throw usageError(
      'no host id given',
      'pass --host-id N (1..2000, unique per host) or set node.hostId in the config',
    );
  return validateHostId(v);
}

export function register(program: Command): void {
  const cluster = program.command('cluster').description('bring nodes into the lock-managed repository cluster');

  vgOption(
    cluster
      .command('init')
      .description('configure this node and create the shared repository VG on DEVICE (the LUN)')
      .argument('<device>', 'the repository LUN, e.g. /dev/disk/by-path/ip-...-lun-1')
      .option('--host-id <n>', "this host's sanlock host_id (1..2000, unique)")
      .option('--lock-type <type>', 'sanlock or dlm', 'sanlock')
      .option('--force', 'wipe existing signatures on DEVICE')
      .option(
        '--max-lvs <n>',
        'LVs (images + clones) the VG metadata area is sized for; LVM cannot grow it later',
        String(DEFAULT_MAX_LVS),
      ),
  ).action(async (device: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const report = await clusterInit(ctx.op(o.vg), {
      hostId: hostIdFrom(o, ctx),
      lockType: lockType(o.lockType),
      device,
      force: o.force,
      maxLvs: maxLvs(o.maxLvs),
    });
    await ctx.finish(report, renderReport);
  });

  vgOption(
    cluster
      .command('join')
      .description('configure this node and start its lock on the existing repository VG')
      .option('--host-id <n>', "this host's sanlock host_id (1..2000, unique)")
      .option('--lock-type <type>', 'sanlock or dlm', 'sanlock'),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const report = await clusterJoin(ctx.op(o.vg), { hostId: hostIdFrom(o, ctx), lockType: lockType(o.lockType) });
    await ctx.finish(report, renderReport);
  });

  vgOption(
    cluster
      .command('status')
      .description('hosts in the lockspace, their ids and liveness, and who holds which LV lock'),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const status = await clusterStatus(ctx.op(o.vg));
    await ctx.finish(status, renderStatus);
  });
}

function lockType(v: string): 'sanlock' | 'dlm' {
  if (v !== 'sanlock' && v !== 'dlm') throw usageError(`--lock-type must be sanlock or dlm, got "${v}"`);
  return v;
}

function maxLvs(v: string): number {
  const n = Number(v);
  // 10 million LVs would already need a 20 GiB metadata area: anything above is a typo.
  if (!Number.isInteger(n) || n < 1 || n > 10_000_000)
    throw usageError(`--max-lvs must be a whole number from 1 to 10000000, got "${v}"`);
  return n;
}

function renderReport(r: ClusterReport): string {
  return [
    `${r.hostName}: host_id ${r.hostId} in ${r.vg} (lockspace ${r.lockspace})`,
    ...(r.changed.length ? r.changed.map((c) => `  changed: ${c}`) : ['  already configured: nothing changed']),
    ...(r.sizing?.explanation.map((e) => `  sizing: ${e}`) ?? []),
  ].join('\n');
}

function renderStatus(s: ClusterStatus): string {
  const shared = s.shared ? `shared (${s.lockType})` : 'NOT shared';
  const lines = [
    `VG ${s.vg}: ${s.visible ? `visible, ${shared}` : 'NOT visible on this host'}`,
    `this host: ${s.thisHost.name}, host_id ${s.thisHost.hostId ?? 'unset'}, ` +
      `lockspace ${s.thisHost.lockspaceStarted ? 'started' : 'NOT started'}`,
    'hosts:',
    ...s.hosts.map(
      (h) => `  ${String(h.hostId).padStart(4)}  ${(h.name ?? '?').padEnd(20)} ${h.live ? 'live' : 'not seen'}`,
    ),
    'locks held:',
    ...(s.locks.length
      ? s.locks.map((l) => `  ${l.lv.padEnd(30)} ${l.mode} by ${l.owner ?? '?'} (host_id ${l.ownerHostId})`)
      : ['  none']),
  ];
  return lines.join('\n');
}
