import type { Command } from 'commander';
import { repositoryVgs } from '../../core/config.js';
import { recover, type RecoverReport } from '../../core/recover.js';
import { repoCapacity, type CapacityReport } from '../../core/capacity.js';
import { nodeStatus, tree, type NodeStatus, type TreeNode } from '../../core/report.js';
import { formatSize } from '../../core/validate.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

function renderTree(nodes: TreeNode[]): string {
  const lines: string[] = [];
  const walk = (n: TreeNode, prefix: string, last: boolean, root: boolean) => {
    const branch = root ? '' : last ? '└─ ' : '├─ ';
    const where = [n.mappedHere ? `mapped here ${n.mappedHere}` : '', n.activeOn ? `held by ${n.activeOn}` : '']
      .filter(Boolean)
      .join(', ');
    const usage = n.usage
      ? n.usage.usedPercent !== undefined
        ? ` COW ${n.usage.usedPercent}% used`
        : ` COW ${n.usage.state.toUpperCase()}`
      : '';
    const warning = n.usage?.warning ? `  WARNING: ${n.usage.warning}` : '';
    const problem = n.problem ? `  PROBLEM: ${n.problem}` : '';
    lines.push(
      `${prefix}${branch}${n.name} ` +
        `[${n.kind} ${n.state}] ${formatSize(n.sizeBytes)}${where ? ` (${where})` : ''}` +
        `${usage}${warning}${problem}`,
    );
    n.children.forEach((c, i) =>
      walk(c, root ? '' : prefix + (last ? '   ' : '│  '), i === n.children.length - 1, false),
    );
  };
  nodes.forEach((n) => walk(n, '', true, true));
  return lines.length ? lines.join('\n') : 'no images';
}

function renderCapacity(c: CapacityReport | undefined): string[] {
  if (!c) return [];
  const m = c.metadata;
  return [
    `repository ${c.vg}: ${c.lvCount} LVs`,
    `  metadata area: ${m.usedPercent}% used, ${formatSize(m.freeBytes)} of ${formatSize(m.usableBytes)} free` +
      ` (about ${m.lvsLeft} more LVs)`,
    ...(c.leases
      ? [
          `  lease space: ${c.leases.inUse} of ${c.leases.slots} leases ` +
            `(${formatSize(c.leases.lvmlockBytes)} lvmlock, ${formatSize(c.leases.alignBytes)} each, ` +
            `grows by ${formatSize(c.leases.growBytes)})`,
        ]
      : []),
    `  extents: ${c.extents.usedPercent}% allocated, ${formatSize(c.extents.freeBytes)} free`,
  ];
}

function renderStatus(s: NodeStatus & { capacity?: CapacityReport }): string {
  const lines = [...renderCapacity(s.capacity), `devices cowstack made on this node (${s.vg}):`];
  if (!s.devices.length) lines.push('  none');
  for (const d of s.devices) {
    const ioError = d.writeback?.error ? `, I/O ERROR ${d.writeback.error}` : '';
    const usage = d.writeback
      ? `write-back: ${d.writeback.dirtyBlocks} of ${d.writeback.totalBlocks} blocks not yet written back${ioError}`
      : d.usage
        ? d.usage.usedPercent !== undefined
          ? `COW ${d.usage.usedPercent}% used`
          : `COW ${d.usage.state.toUpperCase()}`
        : '';
    lines.push(
      `  ${d.name} ${d.role} ${d.clone ?? '?'} open=${d.open} ${d.readOnly ? 'ro' : 'rw'} ${usage}`,
      `    ${d.table}`,
    );
  }
  lines.push(
    'active LVs:',
    ...(s.activeLvs.length
      ? s.activeLvs.map(
          (l) => `  ${l.name} [${l.kind} ${l.state}] ${l.exclusive ? 'exclusive' : 'shared'}${l.open ? ' open' : ''}`,
        )
      : ['  none']),
  );
  if (s.warnings.length) lines.push('warnings:', ...s.warnings.map((w) => `  ${w}`));
  return lines.join('\n');
}

export function register(program: Command): void {
  vgOption(
    program
      .command('tree')
      .description('the lineage: images, clones, where each is mapped and how full each COW is')
      .argument('[name]'),
  ).action(async (name: string | undefined, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await tree(ctx.op(o.vg), { name, warnPercent: ctx.config.cow.warnPercent }), renderTree);
  });

  vgOption(
    program
      .command('status')
      .description('what cowstack has mapped on this node: devices, tables, COW usage, open counts'),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const op = ctx.op(o.vg);
    const status = await nodeStatus(op, { warnPercent: ctx.config.cow.warnPercent });
    // Capacity is the repository's, not this node's, but status is where an operator looks first.
    const capacity = await repoCapacity(ctx.runner, op.vg, {
      warnPercent: ctx.config.capacity.warnPercent,
      scope: op.scope,
    });
    await ctx.finish(
      {
        ...status,
        ...(capacity ? { capacity } : {}),
        warnings: [...status.warnings, ...(capacity?.warnings.map((w) => `${w.message}: ${w.fix}`) ?? [])],
      },
      renderStatus,
    );
  });

  vgOption(
    program
      .command('recover')
      .description('finish or undo interrupted operations on this node and report what looks wrong (run at boot)'),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const one = (x: RecoverReport) =>
      [
        x.actions.length
          ? x.actions.map((a) => `${a.op} ${a.name}: ${a.decision}${a.detail ? ` (${a.detail})` : ''}`).join('\n')
          : 'nothing was in flight',
        ...x.warnings.map((w) => `warning: ${w}`),
      ].join('\n');
    // Without --vg, every repository of the config (README "Growing a site"): one report each
    // when there are several, the single report as before when there is one.
    const vgs = o.vg ? [o.vg as string] : repositoryVgs(ctx.config);
    if (vgs.length === 1) return ctx.finish(await ctx.locked(vgs[0], (op) => recover(op)), one);
    const all: RecoverReport[] = [];
    for (const vg of vgs) all.push(await ctx.locked(vg, (op) => recover(op)));
    await ctx.finish(all, (l: RecoverReport[]) => l.map((x) => `VG ${x.vg}:\n${one(x)}`).join('\n'));
  });
}
