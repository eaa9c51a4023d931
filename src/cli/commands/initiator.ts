import type { Command } from 'commander';
import { login, logout, sessions } from '../../core/initiator.js';
import { createContext } from '../context.js';

export function register(program: Command): void {
  const ini = program.command('initiator').description('iSCSI sessions to the repository LUN on this node');

  ini
    .command('login')
    .description('log in to PORTAL/IQN (an existing session is success) and wait for the LUN; prints its stable path')
    .argument('<portal>', 'host[:port], default port 3260')
    .argument('<iqn>', 'target IQN')
    .option('--lun <n>', 'LUN number to wait for', '1')
    .option('--wait <seconds>', 'how long to wait for the disk to appear', '30')
    .action(async (portal: string, iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const r = await login(ctx.runner, portal, iqn, { lun: Number(o.lun), waitSeconds: Number(o.wait), dryRun: ctx.opts.dryRun });
      await ctx.finish(r, (x) => `${x.alreadyLoggedIn ? 'already logged in' : 'logged in'}: ${x.device}${x.disk ? ` -> ${x.disk}` : ''}`);
    });

  ini
    .command('logout')
    .description('log out of PORTAL/IQN; refuses while anything (LVs, dm devices) uses the disk')
    .argument('<portal>')
    .argument('<iqn>')
    .option('--force', 'log out even though the disk has holders')
    .option('--forget', 'also delete the node record so it does not log in again at boot')
    .action(async (portal: string, iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const r = await logout(ctx.runner, portal, iqn, { force: o.force, forget: o.forget });
      await ctx.finish(r, (x) => `${x.action === 'logged-out' ? 'logged out of' : 'no session to'} ${x.iqn} at ${x.portal}${x.forgotten ? ' (record deleted)' : ''}`);
    });

  ini
    .command('sessions')
    .description('list iSCSI sessions and their disks')
    .action(async (_o, cmd: Command) => {
      const ctx = createContext(cmd);
      const list = await sessions(ctx.runner);
      await ctx.finish(list, (l: typeof list) =>
        l.length ? l.map((s) => `[${s.id}] ${s.portal} ${s.iqn} ${s.state} ${s.disks.map((d) => `lun ${d.lun}: ${d.device} (${d.state})`).join(', ')}`).join('\n') : 'no iSCSI sessions',
      );
    });
}
