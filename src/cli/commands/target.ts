import { Option, type Command } from 'commander';
import {
  aclAdd,
  aclRm,
  createTarget,
  deleteTarget,
  listTargets,
  saveTargets,
  setChap,
  showTarget,
  type BackendChoice,
  type TargetResult,
  type TargetSession,
  type TargetView,
} from '../../core/target.js';
import { createContext, type Context } from '../context.js';
import { readSecret } from '../secret.js';

const backendOption = () =>
  new Option(
    '--backend <name>',
    'target software: lio (kernel, targetcli), tgt (userspace) or auto (LIO when installed)',
  ).choices(['auto', 'lio', 'tgt']);

/** The invocation's session (no VG is used on the target side) and the target software to drive. */
function tctx(ctx: Context, o: { backend?: string }): TargetSession {
  return { ...ctx.op(), backend: (o.backend ?? ctx.config.target.backend ?? 'auto') as BackendChoice };
}

export function register(program: Command): void {
  const target = program.command('target').description('iSCSI targets on the repository server (LIO or tgt)');

  target
    .command('create')
    .description('export a device (or a file) as LUN 1 of a new target; ACL-only access; idempotent')
    .argument('<iqn>', 'target IQN, iqn.YYYY-MM.reversed.domain[:id]')
    .option('--device <dev>', 'block device to export (no target page cache: LIO block backstore, tgt O_DIRECT)')
    .option('--file <path>', 'file to export (created sparse with --size)')
    .option('--size <size>', 'size of the --file LUN, e.g. 100G')
    .addOption(backendOption())
    .action(async (iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const r = await createTarget(tctx(ctx, o), iqn, { device: o.device, file: o.file, size: o.size });
      await ctx.finish(r, renderResult);
    });

  target
    .command('delete')
    .description(
      'remove a target and its backstore (the data on the device stays); refuses while initiators are logged in',
    )
    .argument('<iqn>')
    .option('--force', 'delete even with sessions (those initiators get I/O errors)')
    .addOption(backendOption())
    .action(async (iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      await ctx.finish(await deleteTarget(tctx(ctx, o), iqn, { force: o.force }), renderResult);
    });

  target
    .command('list')
    .description('targets on this server with their LUNs, ACLs, CHAP and sessions')
    .addOption(backendOption())
    .action(async (o, cmd: Command) => {
      const ctx = createContext(cmd);
      const list = await listTargets(tctx(ctx, o));
      await ctx.finish(list, (l: TargetView[]) => (l.length ? l.map(renderTarget).join('\n') : 'no targets'));
    });

  target
    .command('show')
    .description('one target')
    .argument('<iqn>')
    .addOption(backendOption())
    .action(async (iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      await ctx.finish(await showTarget(tctx(ctx, o), iqn), renderTarget);
    });

  const acl = target.command('acl').description('which initiators may log in');
  acl
    .command('add')
    .argument('<iqn>', 'target IQN')
    .argument('<initiator-iqn>', "the node's InitiatorName (/etc/iscsi/initiatorname.iscsi)")
    .addOption(backendOption())
    .action(async (iqn: string, initiator: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      await ctx.finish(await aclAdd(tctx(ctx, o), iqn, initiator), renderResult);
    });
  acl
    .command('rm')
    .argument('<iqn>')
    .argument('<initiator-iqn>')
    .option('--force', 'revoke even while that initiator is logged in')
    .addOption(backendOption())
    .action(async (iqn: string, initiator: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      await ctx.finish(await aclRm(tctx(ctx, o), iqn, initiator, { force: o.force }), renderResult);
    });

  target
    .command('auth')
    .description(
      'require CHAP for every ACL of the target (LIO); the secret is read from a file or stdin, never from argv',
    )
    .argument('<iqn>')
    .requiredOption('--chap <user>', 'CHAP user name')
    .option('--secret-file <file>', 'file holding the secret, or - for stdin', '-')
    .addOption(backendOption())
    .action(async (iqn: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const secret = await readSecret(o.secretFile);
      await ctx.finish(await setChap(tctx(ctx, o), iqn, o.chap, secret), renderResult);
    });

  target
    .command('save')
    .description('persist the running target configuration across reboots of the server')
    .addOption(backendOption())
    .action(async (o, cmd: Command) => {
      const ctx = createContext(cmd);
      const r = await saveTargets(tctx(ctx, o));
      await ctx.finish(r, (x: typeof r) => `saved the ${x.backend} configuration to ${x.file}`);
    });
}

function renderResult(r: TargetResult): string {
  const what = {
    created: 'created',
    deleted: 'deleted',
    changed: 'changed',
    none: 'already as asked: nothing to do',
    saved: 'saved',
  }[r.action];
  const detail = r.detail ? ` (${r.detail})` : '';
  return `${r.iqn} (${r.backend}): ${what}${detail}${r.target ? `\n${renderTarget(r.target)}` : ''}`;
}

function renderTarget(t: TargetView): string {
  const luns = t.luns.map((l) => `  lun ${l.lun}: ${l.backing} (${l.store}${l.direct ? ', no target cache' : ''})`);
  return [
    `${t.iqn} [${t.backend}]${t.chap ? ' CHAP' : ''}`,
    ...luns,
    `  acls: ${t.acls.length ? t.acls.join(', ') : 'none (nobody may log in)'}`,
    `  sessions: ${t.sessions.length ? t.sessions.join(', ') : 'none'}`,
  ].join('\n');
}
