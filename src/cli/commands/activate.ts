import type { Command } from 'commander';
import { activate, deactivate, type ActivationResult } from '../../core/activation.js';
import { usageError } from '../../exec/errors.js';
import { parseVgLv } from '../../core/validate.js';
import { createContext } from '../context.js';

export function register(program: Command): void {
  program
    .command('activate')
    .description(
      'activate an LV on this node, exclusively (one writer in the cluster) or shared; refreshes an already-active LV',
    )
    .argument('<vg/lv>')
    .option('--exclusive', 'exclusive activation (-aey): refused while another host has it')
    .option('--shared', 'shared activation (-asy): for read-only users on many hosts')
    .action(async (name: string, o, cmd: Command) => {
      if (Boolean(o.exclusive) === Boolean(o.shared))
        throw usageError(
          'say --exclusive or --shared',
          'exclusive for a writer (a running clone), shared for images and committed clones',
        );
      const ctx = createContext(cmd);
      const { vg, lv } = parseVgLv(name);
      const r = await ctx.locked(vg, (op) => activate(op, lv, o.exclusive ? 'exclusive' : 'shared'));
      await ctx.finish(r, render);
    });

  program
    .command('deactivate')
    .description('deactivate an LV on this node; refuses while it is open or has holders')
    .argument('<vg/lv>')
    .option('--force', 'deactivate even when open or held (the users will see I/O errors)')
    .action(async (name: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const { vg, lv } = parseVgLv(name);
      const r = await ctx.locked(vg, (op) => deactivate(op, lv, { force: o.force }));
      await ctx.finish(r, render);
    });
}

function render(r: ActivationResult): string {
  const what = {
    activated: `activated ${r.mode}`,
    refreshed: `already active ${r.mode}: refreshed`,
    deactivated: 'deactivated',
    none: 'not active here: nothing to do',
  }[r.action];
  return `${r.vg}/${r.lv}: ${what}${r.action === 'activated' || r.action === 'refreshed' ? ` (${r.device})` : ''}`;
}
