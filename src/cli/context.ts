/**
 * Everything a command needs from the global options: config, the runner (local, ssh,
 * sudo, dry-run), progress, and the one way results are printed.
 */
import type { Command } from 'commander';
import { loadConfig, type Config } from '../core/config.js';
import { nodeSession, type NodeSession } from '../core/node.js';
import { withNodeLock } from '../core/nodeLock.js';
import { validateHostName } from '../core/validate.js';
import {
  createRunner,
  DryRunRunner,
  shellJoin,
  usageError,
  type CowstackError,
  type Runner,
  type SudoPolicy,
} from '../exec/index.js';
import { createProgress } from './progress.js';

export interface GlobalOptions {
  host?: string;
  sudo: SudoPolicy;
  dryRun: boolean;
  json: boolean;
  quiet: boolean;
  verbose: boolean;
  config?: string;
}

export interface Context {
  opts: GlobalOptions;
  /** The node session of this invocation (core/node.ts): runner, VG, device filter, caches, progress, dry-run. */
  op(vg?: string): NodeSession;
  /**
   * Run fn with the node lock of the VG held (core/nodeLock.ts): every command that changes
   * the node's devices or LVs goes through here, so that it observes and acts alone.
   * Read-only commands use op() directly; under --dry-run no lock is taken.
   */
  locked<T>(vg: string | undefined, fn: (op: NodeSession) => Promise<T>): Promise<T>;
  /**
   * The same on another node, reached as the config says (ssh, sudo, dry-run): commands that
   * act on several nodes (catalog stage). One runner per host, kept for the command's life.
   */
  at(host: string): Pick<Context, 'runner' | 'op' | 'locked'>;
  config: Config;
  runner: Runner;
  progress: ReturnType<typeof createProgress>;
  /**
   * Print the command's result: one JSON document, or human text (plus the dry-run
   * commands). With `failure` the result is still printed (doctor's findings), the JSON
   * document says ok:false with the error, and the failure is thrown for the exit code.
   */
  finish<T>(result: T, human: (r: T) => string, failure?: CowstackError): Promise<void>;
}

export function globalOptions(cmd: Command): GlobalOptions {
  const o = cmd.optsWithGlobals() as Record<string, unknown>;
  const sudo = (o.sudo as string | undefined) ?? 'auto';
  if (!['auto', 'always', 'never'].includes(sudo))
    throw usageError(`--sudo must be auto, always or never, got "${sudo}"`);
  return {
    host: o.host ? validateHostName(String(o.host)) : undefined,
    sudo: sudo as SudoPolicy,
    dryRun: Boolean(o.dryRun),
    json: Boolean(o.json),
    quiet: Boolean(o.quiet),
    verbose: Boolean(o.verbose),
    config: o.config as string | undefined,
  };
}

/** "clone map vm1": the command and its arguments, for a waiter that gives up on the node lock. */
export function commandLine(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return [...names, ...cmd.args].join(' ').slice(0, 200);
}

export function createContext(cmd: Command): Context {
  const opts = globalOptions(cmd);
  const { config } = loadConfig(opts.config);
  const progress = createProgress({ quiet: opts.quiet || (opts.json && !opts.verbose), verbose: opts.verbose });
  const runnerFor = (host?: string) =>
    createRunner({
      host,
      sudo: cmd.optsWithGlobals().sudo ? opts.sudo : config.sudo,
      dryRun: opts.dryRun,
      sshConfig: config.ssh.config,
      hooks: { onCommand: (h, argv, kind) => progress.command(h, argv, kind) },
    });
  const on = (runner: Runner): Pick<Context, 'runner' | 'op' | 'locked'> => {
    const op = (vg?: string) =>
      nodeSession({
        runner,
        vg: vg ?? config.repository.vg,
        scope: { devices: config.repository.devices },
        observer: progress,
        dryRun: opts.dryRun,
        cacheVg: config.cache.vg,
        cacheMap: config.cache.map,
        cacheRateMiBps: config.cache.rateMiBps,
        cacheLazySize: config.cache.lazySize,
      });
    return {
      runner,
      op,
      locked(vg, fn) {
        const o = op(vg);
        const lock = { waitSeconds: config.node.lockWaitSeconds, command: commandLine(cmd), dryRun: opts.dryRun };
        return withNodeLock(runner, o.vg, lock, () => fn(o));
      },
    };
  };
  const here = on(runnerFor(opts.host));
  const runner = here.runner;
  const others = new Map<string, Pick<Context, 'runner' | 'op' | 'locked'>>();
  return {
    opts,
    config,
    runner,
    progress,
    op: here.op,
    locked: here.locked,
    at(host) {
      const name = validateHostName(host);
      if (name === (opts.host ?? 'local')) return here;
      let o = others.get(name);
      if (!o) others.set(name, (o = on(runnerFor(name))));
      return o;
    },
    async finish(result, human, failure) {
      const planned = runner instanceof DryRunRunner ? runner.planned : undefined;
      if (opts.json) {
        const status = failure ? { ok: false, ...failure.toJSON() } : { ok: true };
        const doc = { ...status, host: runner.target, ...(planned ? { dryRun: planned } : {}), result };
        process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
        if (failure) failure.reported = true;
      } else {
        if (planned) {
          process.stdout.write(
            planned.length
              ? `dry run: these commands would run${runner.target === 'local' ? '' : ` on ${runner.target}`}:\n`
              : 'dry run: nothing to change\n',
          );
          // A planned line with no argv is a journal record written to the node lock's stdin.
          for (const p of planned)
            process.stdout.write(
              p.argv.length ? `  ${p.root ? '(root) ' : ''}${shellJoin(p.argv)}\n` : `  # ${p.title}\n`,
            );
        }
        const text = human(result);
        // Under --dry-run the result describes what would have happened: say so.
        const shown = planned && text ? `(dry run, nothing changed) ${text}` : text;
        if (shown && !(planned && opts.quiet)) process.stdout.write(shown.endsWith('\n') ? shown : `${shown}\n`);
      }
      if (failure) throw failure;
      // The ssh control master is left to ControlPersist on purpose: the next cowstack
      // call to the same host (a TM script runs several) reuses it instead of a new handshake.
    },
  };
}
