/**
 * `cowstack ds ACTION ID` (driver action XML, base64, on stdin) or `cowstack ds ACTION
 * DRV_ACTION ID`: the OpenNebula datastore driver's entry point (datastore/cowstack/<action>
 * execs it). As for `tm`, nothing after the action is parsed as an option (see positionalTm).
 * stdout carries only what oned reads (SOURCE FORMAT, a size, monitor lines, export XML);
 * `INFO:`/`ERROR:` lines go to stderr.
 */
import type { Command } from 'commander';
import { loadConfig, repositoryVgs, vgOfDatastore } from '../../core/config.js';
import { inVgNameOrder, withNodeLocks } from '../../core/nodeLock.js';
import { runDsWithRetry } from '../../ds/actions.js';
import { DS_ACTIONS, parseDsArgs } from '../../ds/args.js';
import { dsRepository } from '../../ds/repository.js';
import { globalOptions } from '../context.js';
import { driverBase, driverError } from '../driverHosts.js';
import { vgOption } from './shared.js';
import { readStdin } from './tm.js';

export function register(program: Command): void {
  vgOption(
    program
      .command('ds')
      .description(
        `OpenNebula datastore driver action (${DS_ACTIONS.join(', ')}); ` +
          'arguments and stdin exactly as oned passes them',
      )
      .argument('<action>')
      .argument('[args...]'),
  ).action(async (action: string, args: string[], o: { vg?: string }, cmd: Command) => {
    const opts = globalOptions(cmd);
    try {
      // One argument: OpenNebula 6.8+ sends the driver action on stdin; two: it is the first.
      const req = parseDsArgs(action, args, args.length === 1 ? await readStdin() : '');
      const { config } = loadConfig(opts.config);
      // --vg: one VG for every datastore; else the datastore's repository (ds/repository.ts).
      const vg = o.vg ?? dsRepository(req, vgOfDatastore(config, req.ds.id), repositoryVgs(config));
      const base = driverBase(action, cmd, opts, config, vg);
      const lock = { waitSeconds: config.node.lockWaitSeconds, command: `ds ${action} ${req.id}`, dryRun: opts.dryRun };
      const nodeLocks = <T>(host: string, v: string, fn: () => Promise<T>) =>
        withNodeLocks([{ runner: base.runnerFor(host) }], v, lock, fn);
      await runDsWithRetry(
        {
          ...base,
          repositories: o.vg ? [o.vg] : repositoryVgs(config),
          // Two VGs (a clone from another repository): both node locks, in name order.
          locked: <T>(host: string, change: boolean, fn: () => Promise<T>, also?: string) =>
            change ? inVgNameOrder([vg, also ?? vg], (v, next) => nodeLocks(host, v, next), fn) : fn(),
        },
        req,
      );
    } catch (e) {
      throw driverError(action, e);
    }
  });
}
