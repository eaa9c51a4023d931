/**
 * `cowstack vmm [--uri URI] [--migrate-options OPTS] [--acquire-wait S] [--] migrate DEPLOY_ID DEST_HOST
 * [SRC_HOST VM_ID ...]`: the OpenNebula VMM (KVM) driver's entry point, beside `tm` and `ds` (vmm/kvm/migrate execs it
 * on the source host). As for those, nothing after the action is parsed as an option (see
 * positionalTm): oned's arguments are data. `INFO:`/`ERROR:` lines go to stderr (the VM log).
 */
import { hostname } from 'node:os';
import { InvalidArgumentError, type Command } from 'commander';
import { nodeSession, type NodeSession } from '../../core/node.js';
import { withNodeLock } from '../../core/nodeLock.js';
import { parseVmmArgs, VMM_ACTIONS } from '../../vmm/args.js';
import { parseMigrateOptions } from '../../vmm/migrateOptions.js';
import { vmmMigrate, type VmmMigrateResult } from '../../vmm/migrate.js';
import { DEFAULT_URI } from '../../tools/virsh.js';
import { shellJoin } from '../../exec/quote.js';
import { DryRunRunner } from '../../exec/dryRunRunner.js';
import { commandLine, createContext } from '../context.js';
import { driverBase, driverError } from '../driverHosts.js';
import { vgOption } from './shared.js';

const seconds = (v: string): number => {
  if (!/^\d+$/.test(v) || Number(v) > 3600) throw new InvalidArgumentError('give whole seconds from 0 to 3600');
  return Number(v);
};

/** A libvirt URI as kvmrc sets LIBVIRT_URI, driver[+transport]://[host]/path: nothing virsh could read as more. */
const libvirtUri = (v: string): string => {
  if (!/^[a-z][a-z0-9]*(\+[a-z]+)?:\/\/[A-Za-z0-9._@:-]*\/[A-Za-z0-9._/-]*$/.test(v))
    throw new InvalidArgumentError(`"${v}" is not a libvirt URI such as ${DEFAULT_URI}`);
  return v;
};

const describe = (r: VmmMigrateResult, dryRun: boolean): string => {
  const plan = dryRun ? '' : `\n${r.plan.map((s) => `  on ${s.host}: ${shellJoin(s.command)}`).join('\n')}`;
  const others = r.others.map((o) => `\n  ${o.target}${o.source ? ` ${o.source}` : ''}: ${o.why}`).join('');
  const head = dryRun
    ? `${r.deployId}: would migrate to ${r.destination}, handing over ${r.disks.length} cowstack disk(s) (above)`
    : `${r.deployId}: migrated from ${r.source} to ${r.destination} and resumed there; the steps were:`;
  return `${head}${plan}${others ? `\nnot handed over:${others}` : ''}`;
};

export function register(program: Command): void {
  vgOption(
    program
      .command('vmm')
      .description(
        `OpenNebula VMM (KVM) driver action (${VMM_ACTIONS.join(', ')}); arguments exactly as oned passes them`,
      )
      .option('--uri <uri>', 'libvirt URI on both hosts (kvmrc LIBVIRT_URI)', libvirtUri, DEFAULT_URI)
      .option(
        '--migrate-options <options>',
        'extra virsh migrate options, one string as kvmrc MIGRATE_OPTIONS (e.g. "--p2p --tunnelled"); validated',
        '',
      )
      .option('--acquire-wait <seconds>', "keep asking for a disk's lock this long on the destination", seconds, 60)
      .argument('<action>')
      // Data, never options: see positionalTm.
      .argument('[args...]'),
  ).action(
    async (
      action: string,
      args: string[],
      o: { vg?: string; uri: string; acquireWait: number; migrateOptions: string },
      cmd: Command,
    ) => {
      try {
        const req = parseVmmArgs(action, args);
        const migrateOptions = parseMigrateOptions(o.migrateOptions);
        const ctx = createContext(cmd);
        const source = ctx.op(o.vg);
        const base = driverBase(action, cmd, ctx.opts, ctx.config, source.vg);
        const lock = {
          waitSeconds: ctx.config.node.lockWaitSeconds,
          command: commandLine(cmd),
          dryRun: ctx.opts.dryRun,
        };
        const result = await vmmMigrate(
          {
            source,
            sourceName: hostname(),
            sessionFor: (host) => nodeSession({ ...source, runner: base.runnerFor(host) }),
            locked: <T>(s: NodeSession, fn: () => Promise<T>) => withNodeLock(s.runner, s.vg, lock, fn),
            uri: o.uri,
            migrateOptions,
            acquireWaitSeconds: o.acquireWait,
            info: base.info,
          },
          req,
        );
        // The plan's writes never reach the dry-run runner (each depends on the one before): list them as its plan.
        if (ctx.runner instanceof DryRunRunner)
          for (const s of result.plan) ctx.runner.note(`on ${s.host}: ${shellJoin(s.command)}`);
        await ctx.finish(result, (r) => describe(r, ctx.opts.dryRun));
      } catch (e) {
        throw driverError(action, e);
      }
    },
  );
}
