import type { Command } from 'commander';
import { doctor, type DoctorReport } from '../../core/doctor.js';
import { CowstackError, EXIT } from '../../exec/errors.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

export function register(program: Command): void {
  vgOption(
    program
      .command('doctor')
      .description(
        'check a node: programs, dm targets, iscsid, sanlock/lvmlockd, lvm.conf, host_id, repository VG and lockspace',
      ),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const report = await doctor(ctx.op(o.vg), { warnPercent: ctx.config.capacity.warnPercent });
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
  const lines = r.checks.map(
    (c) =>
      `${mark[c.status]}  ${c.id.padEnd(26)} ${c.message}${c.fix && c.status !== 'ok' ? `\n      fix: ${c.fix}` : ''}`,
  );
  return [`doctor on ${r.host}:`, ...lines, `${r.errors} error(s), ${r.warnings} warning(s)`].join('\n');
}
