/** The one place errors become output and exit codes. Commands throw; nothing calls process.exit. */
import { CommanderError } from 'commander';
import { CowstackError, EXIT } from '../exec/errors.js';
import { colorEnabled } from './progress.js';

const plain = (s: string) => s;

export async function reportError(error: unknown, json: boolean): Promise<number> {
  if (error instanceof CommanderError) {
    // commander already printed usage problems on stderr; --help/--version exit 0.
    if (error.exitCode === 0) return EXIT.OK;
    // --json promises one document on stdout, usage errors included.
    // A command group without its subcommand: commander printed the group's help, and its
    // message is a placeholder ("(outputHelp)").
    const message =
      error.code === 'commander.help'
        ? 'a command is missing: the usage is on stderr'
        : error.message.replace(/^error: /, '');
    if (json) {
      const usage = new CowstackError(EXIT.USAGE, message);
      process.stdout.write(`${JSON.stringify({ ok: false, ...usage.toJSON() }, null, 2)}\n`);
    }
    return EXIT.USAGE;
  }
  const err =
    error instanceof CowstackError
      ? error
      : new CowstackError(EXIT.FAILED, (error as Error)?.message ?? String(error), {
          hint: 'this is unexpected: run again with --verbose and report it',
        });
  if (json && err.reported) return err.exitCode; // its document is already on stdout
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok: false, ...err.toJSON() }, null, 2)}\n`);
  } else {
    // chalk loads for a coloured error only: most starts (and every non-terminal one) never need it.
    const c = colorEnabled() ? new (await import('chalk')).Chalk({ level: 1 }) : { red: plain, yellow: plain };
    process.stderr.write(`${c.red('cowstack: error:')} ${err.message}\n`);
    if (err.hint) process.stderr.write(`  ${c.yellow('what to do:')} ${err.hint}\n`);
    if (process.env.COWSTACK_DEBUG && (error as Error)?.stack) process.stderr.write(`${(error as Error).stack}\n`);
  }
  return err.exitCode;
}
