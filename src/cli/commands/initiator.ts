import type { Command } from 'commander';
import { Option } from 'commander';
import { discover, login, logout, rescan, sessions } from '../../core/initiator.js';
import { usageError } from '../../exec/errors.js';
import { createContext } from '../context.js';
import { readSecret } from '../secret.js';

export function register(program: Command): void {
  const ini = program.command('initiator').description('iSCSI sessions to the repository LUN on this node');

  ini
    .command('login')
    .description('log in to PORTAL/IQN (an existing session is success) and wait for the LUN; prints its stable path')
    .argument('<portal>', 'host[:port], default port 3260')
    .argument('<iqn>', 'target IQN')
    .option('--lun <n>', 'LUN number to wait for', '1')
    .option('--wait <seconds>', 'how long to wait for the disk to appear', '30')
    .option('--chap-user <user>', 'log in with CHAP as this user (the target must have the same user and secret)')
    .option('--secret-file <file>', 'CHAP secret: a file, or - for stdin (never an argument)')
    .addOption(
      new Option('--startup <mode>', 'node.startup of the record: automatic logs in again at boot')
        .choices(['automatic', 'manual'])
        .default('automatic'),
    )
    .action(async (portal: string, iqn: string, o, cmd: Command) => {
      if (o.secretFile && !o.chapUser) throw usageError('--secret-file needs --chap-user');
      const ctx = createContext(cmd);
      const chap = o.chapUser ? { user: String(o.chapUser), secret: await readSecret(o.secretFile ?? '-') } : undefined;
      const r = await login(ctx.op(), portal, iqn, {
        lun: Number(o.lun),
        waitSeconds: Number(o.wait),
        chap,
        startup: o.startup,
      });
      await ctx.finish(
        r,
        (x) => `${x.alreadyLoggedIn ? 'already logged in' : 'logged in'}: ${x.device}${x.disk ? ` -> ${x.disk}` : ''}`,
      );
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
      const r = await logout(ctx.op(), portal, iqn, { force: o.force, forget: o.forget });
      await ctx.finish(
        r,
        (x) =>
          `${x.action === 'logged-out' ? 'logged out of' : 'no session to'} ${x.iqn} ` +
          `at ${x.portal}${x.forgotten ? ' (record deleted)' : ''}`,
      );
    });

  ini
    .command('discover')
    .description('ask a portal which targets it offers (SendTargets); writes no node records')
    .argument('<portal>', 'host[:port]')
    .action(async (portal: string, _o, cmd: Command) => {
      const ctx = createContext(cmd);
      const list = await discover(ctx.op(), portal);
      await ctx.finish(list, (l: typeof list) =>
        l.length
          ? l
              .map((d) => `${d.iqn} via ${d.portal}${d.announced !== d.portal ? ` (announced as ${d.announced})` : ''}`)
              .join('\n')
          : `${portal} offers no targets to this initiator`,
      );
    });

  ini
    .command('rescan')
    .description('rescan every iSCSI session for new or resized LUNs')
    .action(async (_o, cmd: Command) => {
      const ctx = createContext(cmd);
      const r = await rescan(ctx.op());
      await ctx.finish(r, (x: typeof r) =>
        x.sessions.length ? `rescanned ${x.sessions.length} session(s)` : 'no iSCSI sessions to rescan',
      );
    });

  ini
    .command('sessions')
    .description('list iSCSI sessions and their disks')
    .action(async (_o, cmd: Command) => {
      const ctx = createContext(cmd);
      const list = await sessions(ctx.runner);
      await ctx.finish(list, (l: typeof list) =>
        l.length
          ? l
              .map((s) => {
                const disks = s.disks.map((d) => `lun ${d.lun}: ${d.device} (${d.state})`).join(', ');
                return `[${s.id}] ${s.portal} ${s.iqn} ${s.state} ${disks}`;
              })
              .join('\n')
          : 'no iSCSI sessions',
      );
    });
}
