/**
 * `cowstack ds ACTION ID` (driver action XML, base64, on stdin) or `cowstack ds ACTION
 * DRV_ACTION ID`: the OpenNebula datastore driver's entry point (datastore/cowstack/<action>
 * execs it). As for `tm`, nothing after the action is parsed as an option (see positionalTm).
 * stdout carries only what oned reads (SOURCE FORMAT, a size, monitor lines, export XML);
 * `INFO:`/`ERROR:` lines go to stderr.
 */
import type { Command } from 'commander';
import { createRunner, CowstackError, EXIT, type Runner } from '../../exec/index.js';
import { loadConfig } from '../../core/config.js';
import { withNodeLocks } from '../../core/nodeLock.js';
import { runDsWithRetry } from '../../ds/actions.js';
import { DS_ACTIONS, parseDsArgs } from '../../ds/args.js';
import { globalOptions } from '../context.js';
import { createProgress } from '../progress.js';
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
    const say = (line: string) => process.stderr.write(`${line}\n`);
    try {
      // One argument: OpenNebula 6.8+ sends the driver action on stdin; two: it is the first.
      const req = parseDsArgs(action, args, args.length === 1 ? await readStdin() : '');
      const { config } = loadConfig(opts.config);
      const progress = createProgress({ quiet: !opts.verbose, verbose: opts.verbose });
      const runners = new Map<string, Runner>();
      const runnerFor = (host: string): Runner => {
        let r = runners.get(host);
        if (!r) {
          r = createRunner({
            host,
            sudo: cmd.optsWithGlobals().sudo ? opts.sudo : config.sudo,
            dryRun: opts.dryRun,
            sshConfig: config.ssh.config,
            hooks: { onCommand: (h, argv, kind) => progress.command(h, argv, kind) },
          });
          runners.set(host, r);
        }
        return r;
      };
      const vg = o.vg ?? config.repository.vg;
      const lock = { waitSeconds: config.node.lockWaitSeconds, command: `ds ${action} ${req.id}`, dryRun: opts.dryRun };
      await runDsWithRetry(
        {
          vg,
          scope: { devices: config.repository.devices },
          runnerFor,
          hosts: config.tm.hosts,
          locked: (host, change, fn) => (change ? withNodeLocks([{ runner: runnerFor(host) }], vg, lock, fn) : fn()),
          info: (m) => say(`INFO: ${action}: ${m}`),
          out: (t) => process.stdout.write(t),
          observer: progress,
        },
        req,
      );
    } catch (e) {
      const err = e instanceof CowstackError ? e : new CowstackError(EXIT.FAILED, (e as Error)?.message ?? String(e));
      say(`ERROR: ${action}: ${err.message}`);
      throw err;
    }
  });
}
