/**
 * `cowstack tm ACTION ARGS...`: the OpenNebula transfer-manager driver's entry point
 * (tm/cowstack/<action> execs it). Output follows OpenNebula's convention: `INFO:`/`ERROR:`
 * lines on stderr go to the VM log, other stderr lines become the failure message, and
 * only monitor prints on stdout.
 */
import type { Command } from 'commander';
import { loadConfig, repositoryVgs, vgOfDatastore } from '../../core/config.js';
import { withNodeLocks } from '../../core/nodeLock.js';
import { defaultFrontends, runTmWithRetry } from '../../tm/actions.js';
import { hostsToLock } from '../../tm/lockHosts.js';
import { parseTmArgs, TM_ACTIONS } from '../../tm/args.js';
import { repositoryOf } from '../../tm/repository.js';
import { globalOptions } from '../context.js';
import { driverBase, driverError } from '../driverHosts.js';
import { vgOption } from './shared.js';

/** Actions that get XML on stdin from oned (base64; the VM's plain XML for the backup actions). */
const READS_STDIN = new Set([
  'premigrate',
  'postmigrate',
  'failmigrate',
  'monitor',
  'prebackup',
  'prebackup_live',
  'postbackup',
  'postbackup_live',
]);

export async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The index in `args` (argv without node and script) of the first operand `program` sees. */
function firstOperand(program: Command, args: readonly string[]): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return i + 1;
    if (!a.startsWith('-') || a === '-') return i;
    const opt = program.options.find((o) => o.long === a || o.short === a);
    if (opt?.required || (opt?.optional && !args[i + 1]?.startsWith('-'))) i++; // its value
  }
  return args.length;
}

/**
 * `cowstack [OPTIONS] tm [--vg VG] [--] ACTION ARGS...`: nothing after the action is parsed as
 * an option. commander finds the program's options anywhere in argv, so oned's arguments
 * (from VM templates) could say --config=evil.yaml, --dry-run or --help. When the first
 * operand is `tm`, the program parses its options positionally (only before `tm`) and tm
 * passes everything from the action on through as data, to parseTmArgs. The datastore
 * driver's `ds` and the VMM driver's `vmm` are treated alike. main calls this before parsing;
 * other commands keep global options anywhere. Returns how many of argv's words are the
 * program's own (before `tm`, `ds` or `vmm`), or undefined when this is none of them.
 */
export function positionalTm(program: Command, argv: readonly string[]): number | undefined {
  const i = firstOperand(program, argv.slice(2));
  const driver = argv[i + 2];
  if (driver !== 'tm' && driver !== 'ds' && driver !== 'vmm') return undefined;
  program.enablePositionalOptions();
  program.commands.find((c) => c.name() === driver)!.passThroughOptions();
  return i + 2;
}

export function register(program: Command): void {
  vgOption(
    program
      .command('tm')
      .description(`OpenNebula TM driver action (${TM_ACTIONS.join(', ')}); arguments exactly as oned passes them`)
      .argument('<action>')
      // Data, never options: see positionalTm (oned passes "-1" for cpds's current state).
      .argument('[args...]'),
  ).action(async (action: string, args: string[], o: { vg?: string }, cmd: Command) => {
    const opts = globalOptions(cmd);
    try {
      const req = parseTmArgs(action, args, READS_STDIN.has(action) ? await readStdin() : '');
      const { config } = loadConfig(opts.config);
      // --vg: one VG for every datastore; else each datastore's repository (tm/repository.ts).
      const vgOf = (ds: number) => o.vg ?? vgOfDatastore(config, ds);
      const own = repositoryOf(req, vgOf);
      const base = driverBase(action, cmd, opts, config, own ?? config.repository.vg);
      const { runnerFor } = base;
      const frontends = defaultFrontends();
      // delete works through another node when its host is down: then nothing runs there to wait for.
      const unreachableOk = action === 'delete';
      const nodes = hostsToLock(req, frontends).map((h) => ({ runner: runnerFor(h), unreachableOk }));
      const command = `tm ${action} ${args.join(' ')}`;
      const lock = { waitSeconds: config.node.lockWaitSeconds, command, dryRun: opts.dryRun };
      const env = {
        ...base,
        cowPercent: config.tm.cowPercent,
        chunk: config.cow.chunk,
        frontends,
        vgOf,
        dryRun: opts.dryRun,
        // restore runs OpenNebula's datastore drivers: tm/cowstack/restore says where its remotes are.
        oneRemotes: process.env.COWSTACK_ONE_REMOTES || undefined,
      };
      // activate (host boot) brings up every repository's disks, each under its VG's node lock;
      // one repository that fails does not keep the others' disks down.
      let failed: unknown;
      for (const vg of own ? [own] : o.vg ? [o.vg] : repositoryVgs(config)) {
        try {
          await withNodeLocks(nodes, vg, lock, () => runTmWithRetry({ ...env, vg }, req));
        } catch (e) {
          if (own) throw e;
          base.info(`VG ${vg}: ${(e as Error).message}`);
          failed ??= e;
        }
      }
      if (failed) throw failed;
    } catch (e) {
      // The ERROR: line goes to the VM log; the boundary then prints the reason (and what
      // to do) as plain stderr, which oned shows as the failure message.
      throw driverError(action, e);
    }
  });
}
