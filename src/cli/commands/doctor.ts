import type { Command } from 'commander';
import { repositoryVgs } from '../../core/config.js';
import { doctor, type DoctorReport } from '../../core/doctor.js';
import { CowstackError, EXIT } from '../../exec/errors.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

export function register(program: Command): void {
  vgOption(
    program
      .command('doctor')
      .description(
        'check a node: programs, dm targets, iscsid, sanlock/lvmlockd, lvm.conf, host_id, and each repository VG ' +
          '(lockspace, paths, capacity; all configured repositories unless --vg)',
      ),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    // --vg: that repository; else every repository the config names (a site that grew has several).
    const vgs = o.vg ? [o.vg] : repositoryVgs(ctx.config);
    const report = await doctor(ctx.op(o.vg), { warnPercent: ctx.config.capacity.warnPercent, vgs });
    // Findings are the result; a non-zero exit lets scripts gate on a healthy node.
    const failure = report.ok
      ? undefined
      : new CowstackError(EXIT.MISSING, `${report.errors} check(s) failed on ${report.host}`, {
          hint: 'fix them in the order shown',
        });
    await ctx.finish(report, render, failure);
  });
}

function render(r: DoctorReport): string {
  const mark = { ok: 'ok  ', warning: 'warn', error: 'FAIL' } as const;
  // With several repositories each of their checks names its VG.
  const id = (c: DoctorReport['checks'][number]) => (c.vg && r.vgs.length > 1 ? `${c.id} [${c.vg}]` : c.id);
  const lines = r.checks.map(
    (c) =>
      `${mark[c.status]}  ${id(c).padEnd(26)} ${c.message}${c.fix && c.status !== 'ok' ? `\n      fix: ${c.fix}` : ''}`,
  );
  return [`doctor on ${r.host}:`, ...lines, `${r.errors} error(s), ${r.warnings} warning(s)`].join('\n');
}
