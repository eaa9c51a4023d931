/**
 * The cowstack program: global options, one error boundary, command groups registered
 * from their own modules. Exit codes: see README "Exit codes" (src/exec/errors.ts).
 */
import { Command, Option } from 'commander';
import { reportError } from './errorBoundary.js';
import { loadProgressRenderer } from './progress.js';
import { register as registerActivate } from './commands/activate.js';
import { register as registerCluster } from './commands/cluster.js';
import { register as registerDoctor } from './commands/doctor.js';
import { register as registerInitiator } from './commands/initiator.js';
import { register as registerImage } from './commands/image.js';
import { register as registerClone } from './commands/clone.js';
import { register as registerBackup } from './commands/backup.js';
import { register as registerReport } from './commands/report.js';
import { register as registerMetrics } from './commands/metrics.js';
import { register as registerTarget } from './commands/target.js';
import { register as registerInstall } from './commands/install.js';
import { positionalTm, register as registerTm } from './commands/tm.js';
import { register as registerDs } from './commands/ds.js';
import { register as registerVmm } from './commands/vmm.js';
import { register as registerCache } from './commands/cache.js';
import { register as registerCompletion } from './commands/completion.js';
import { register as registerCatalog } from './commands/catalog.js';
import { EXIT_NAMES } from '../exec/errors.js';
import { VERSION } from './version.js';

export function buildProgram(): Command {
  const program = new Command('cowstack')
    .description('copy-on-write image store for hypervisors sharing one iSCSI LUN (LVM + lvmlockd + device-mapper)')
    .version(VERSION)
    .option('--host <name>', 'run the steps on this host over ssh (one multiplexed connection)')
    .addOption(new Option('--sudo <when>', 'prefix root commands with sudo -n').choices(['auto', 'always', 'never']))
    .option('--dry-run', 'print every write as the exact argv it would run; reads still run')
    .option('--json', 'print one JSON document on stdout and nothing else there')
    .option('-q, --quiet', 'no progress output')
    .option('-v, --verbose', 'print every command as it runs (stderr)')
    .option('--config <file>', 'config file (default /etc/cowstack/cowstack.yaml)')
    .showHelpAfterError()
    .exitOverride()
    .addHelpText(
      'after',
      `\nExit codes:\n${Object.entries(EXIT_NAMES)
        .map(([code, name]) => `  ${code.padStart(2)}  ${name}`)
        .join('\n')}\n`,
    );
  program.configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) });
  registerDoctor(program);
  registerCluster(program);
  registerActivate(program);
  registerInitiator(program);
  registerImage(program);
  registerClone(program);
  registerBackup(program);
  registerReport(program);
  registerMetrics(program);
  registerTarget(program);
  registerInstall(program);
  registerTm(program);
  registerDs(program);
  registerVmm(program);
  registerCache(program);
  registerCompletion(program);
  registerCatalog(program);
  // Subcommands inherit exitOverride so usage errors reach the boundary.
  const inherit = (c: Command) => c.commands.forEach((sub) => (sub.exitOverride(), inherit(sub)));
  inherit(program);
  return program;
}

export async function main(argv = process.argv): Promise<number> {
  const program = buildProgram();
  const tmAt = positionalTm(program, argv);
  try {
    await loadProgressRenderer();
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    return await reportError(error, jsonRequested(program, argv, tmAt));
  }
}

/**
 * --json as commander parsed it or, when a usage error stopped commander first (options after
 * an unknown one are not parsed), as written among the options: before `--`, and for `tm`
 * before the action, since oned's arguments are data (a VM template's "--json" is not).
 */
function jsonRequested(program: Command, argv: readonly string[], tmAt: number | undefined): boolean {
  if (program.opts().json) return true;
  const words = argv.slice(2, tmAt);
  const end = words.indexOf('--');
  return (end < 0 ? words : words.slice(0, end)).includes('--json');
}
