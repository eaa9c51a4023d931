/**
 * What the OpenNebula driver entry points (`cowstack tm`, `cowstack ds`) share: one runner per
 * host they reach (one multiplexed ssh connection each), and OpenNebula's error convention:
 * an `ERROR:` line for the log, then the reason, which the error boundary prints as plain
 * stderr and oned shows as the failure message.
 */
import type { Command } from 'commander';
import { createRunner, CowstackError, EXIT, type Runner } from '../exec/index.js';
import type { Config } from '../core/config.js';
import type { GlobalOptions } from './context.js';
import { createProgress } from './progress.js';

type Progress = ReturnType<typeof createProgress>;

/**
 * What every driver action's environment has: the repository, a cached runner per host (as the
 * config and the global options say), the nodes of tm.hosts, and OpenNebula's output: `INFO:`
 * lines on stderr, results on stdout.
 */
export function driverBase(action: string, cmd: Command, opts: GlobalOptions, config: Config, vg: string) {
  const progress = createProgress({ quiet: !opts.verbose, verbose: opts.verbose });
  return {
    vg,
    scope: { devices: config.repository.devices },
    runnerFor: driverRunners(cmd, opts, config, progress),
    hosts: config.tm.hosts,
    info: (m: string) => void process.stderr.write(`INFO: ${action}: ${m}\n`),
    out: (t: string) => void process.stdout.write(t),
    observer: progress,
  };
}

function driverRunners(
  cmd: Command,
  opts: GlobalOptions,
  config: Config,
  progress: Progress,
): (host: string) => Runner {
  const runners = new Map<string, Runner>();
  return (host: string): Runner => {
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
}

/** Says `ERROR: <action>: <message>` on stderr and returns the error to throw to the boundary. */
export function driverError(action: string, e: unknown): CowstackError {
  const err = e instanceof CowstackError ? e : new CowstackError(EXIT.FAILED, (e as Error)?.message ?? String(e));
  process.stderr.write(`ERROR: ${action}: ${err.message}\n`);
  return err;
}
