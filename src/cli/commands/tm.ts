/**
 * `cowstack tm ACTION ARGS...`: the OpenNebula transfer-manager driver's entry point
 * (tm/cowstack/<action> execs it). Output follows OpenNebula's convention: `INFO:`/`ERROR:`
 * lines on stderr go to the VM log, other stderr lines become the failure message, and
 * only monitor prints on stdout.
 */
import type { Command } from 'commander';
import { createRunner, CowstackError, EXIT, type Runner } from '../../exec/index.js';
import { loadConfig } from '../../core/config.js';
import { withNodeLocks } from '../../core/nodeLock.js';
import { defaultFrontends, runTmWithRetry } from '../../tm/actions.js';
import { hostsToLock } from '../../tm/lockHosts.js';
import { parseTmArgs, TM_ACTIONS } from '../../tm/args.js';
import { globalOptions } from '../context.js';
import { createProgress } from '../progress.js';
import { vgOption } from './shared.js';

/** Actions that get base64 XML on stdin from oned. */
const READS_STDIN = new Set(['premigrate', 'postmigrate', 'failmigrate', 'monitor']);

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function register(program: Command): void {
  vgOption(
    program
      .command('tm')
      .description(`OpenNebula TM driver action (${TM_ACTIONS.join(', ')}); arguments exactly as oned passes them`)
      .argument('<action>')
      .argument('[args...]')
      // oned passes "-1" (cpds: the current state): an argument, not an option.
      .allowUnknownOption()
      .allowExcessArguments(),
  ).action(async (action: string, args: string[], o: { vg?: string }, cmd: Command) => {
    const opts = globalOptions(cmd);
    const say = (line: string) => process.stderr.write(`${line}\n`);
    try {
      const req = parseTmArgs(action, args, READS_STDIN.has(action) ? await readStdin() : '');
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
      const frontends = defaultFrontends();
      // delete works through another node when its host is down: then nothing runs there to wait for.
      const unreachableOk = action === 'delete';
      const nodes = hostsToLock(req, frontends).map((h) => ({ runner: runnerFor(h), unreachableOk }));
      const command = `tm ${action} ${args.join(' ')}`;
      const lock = { waitSeconds: config.node.lockWaitSeconds, command, dryRun: opts.dryRun };
      await withNodeLocks(nodes, vg, lock, () =>
        runTmWithRetry(
          {
            vg,
            scope: { devices: config.repository.devices },
            runnerFor,
            hosts: config.tm.hosts,
            cowPercent: config.tm.cowPercent,
            chunk: config.cow.chunk,
            frontends,
            info: (m) => say(`INFO: ${action}: ${m}`),
            out: (t) => process.stdout.write(t),
            observer: progress,
          },
          req,
        ),
      );
    } catch (e) {
      const err = e instanceof CowstackError ? e : new CowstackError(EXIT.FAILED, (e as Error)?.message ?? String(e));
      // The ERROR: line goes to the VM log; the boundary then prints the reason (and what
      // to do) as plain stderr, which oned shows as the failure message.
      say(`ERROR: ${action}: ${err.message}`);
      throw err;
    }
  });
}
