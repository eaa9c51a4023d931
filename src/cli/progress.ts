/**
 * Progress on stderr through listr2's logger: icons and colour on a TTY, plain lines
 * otherwise, nothing with --quiet. NO_COLOR is honoured explicitly (chalk alone doesn't).
 */
import { ListrLogger, ProcessOutput, ListrLogLevels } from 'listr2';
import type { PlanObserver } from '../core/plan.js';
import { shellJoin } from '../exec/quote.js';

export interface ProgressOptions {
  quiet: boolean;
  verbose: boolean;
  isTTY?: boolean;
  color?: boolean;
}

export function colorEnabled(isTTY = Boolean(process.stderr.isTTY)): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR) return true;
  return isTTY;
}

export function createProgress(
  opts: ProgressOptions,
): PlanObserver & { command(host: string, argv: readonly string[], kind: string): void; info(msg: string): void } {
  const isTTY = opts.isTTY ?? Boolean(process.stderr.isTTY);
  const logger = new ListrLogger({
    useIcons: isTTY && colorEnabled(isTTY),
    processOutput: new ProcessOutput(process.stderr, process.stderr),
    toStderr: Object.values(ListrLogLevels),
  });
  const colorless = !colorEnabled(isTTY);
  const log = (level: ListrLogLevels, msg: string) => {
    if (opts.quiet) return;
    if (colorless) {
      const word =
        level === ListrLogLevels.FAILED
          ? 'failed'
          : level === ListrLogLevels.COMPLETED
            ? 'done'
            : level === ListrLogLevels.STARTED
              ? '...'
              : '-';
      process.stderr.write(`${word} ${msg}\n`);
    } else logger.log(level, msg);
  };
  return {
    start: (step, i, total) => log(ListrLogLevels.STARTED, `[${i + 1}/${total}] ${step.title}`),
    done: (step) => log(ListrLogLevels.COMPLETED, step.title),
    failed: (step) => log(ListrLogLevels.FAILED, step.title),
    undo: (step, err) =>
      log(ListrLogLevels.ROLLBACK, `undo ${step.title}${err ? ` (undo failed: ${(err as Error).message})` : ''}`),
    command: (host, argv, kind) => {
      if (opts.verbose)
        log(
          ListrLogLevels.OUTPUT,
          `${host === 'local' ? '' : `[${host}] `}${kind === 'write' ? '$' : '>'} ${shellJoin(argv)}`,
        );
    },
    info: (msg) => log(ListrLogLevels.OUTPUT, msg),
  };
}
