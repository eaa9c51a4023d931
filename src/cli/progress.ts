/**
 * Progress on stderr through listr2's logger: icons and colour on a TTY, plain lines
 * otherwise, nothing with --quiet. NO_COLOR is honoured explicitly (chalk alone doesn't).
 * listr2 (a dozen modules) loads only for colour: main() calls loadProgressRenderer() first
 * (without it, progress is plain).
 */
import type { ListrLogLevels } from 'listr2';
import type { PlanObserver } from '../core/plan.js';
import { shellJoin } from '../exec/quote.js';

export interface ProgressOptions {
  quiet: boolean;
  verbose: boolean;
  isTTY?: boolean;
  color?: boolean;
}

type Listr2 = typeof import('listr2');
let listr2: Listr2 | undefined;

/** Loads listr2 when progress will be in colour (see colorEnabled); without colour it is never used. */
export async function loadProgressRenderer(isTTY = Boolean(process.stderr.isTTY)): Promise<void> {
  if (colorEnabled(isTTY)) listr2 ??= await import('listr2');
}

// listr2's ListrLogLevels, by value: the plain output names them without loading listr2.
const LEVEL = {
  STARTED: 'STARTED',
  COMPLETED: 'COMPLETED',
  FAILED: 'FAILED',
  OUTPUT: 'OUTPUT',
  ROLLBACK: 'ROLLBACK',
} as Record<'STARTED' | 'COMPLETED' | 'FAILED' | 'OUTPUT' | 'ROLLBACK', ListrLogLevels>;

export function colorEnabled(isTTY = Boolean(process.stderr.isTTY)): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR) return true;
  return isTTY;
}

export function createProgress(
  opts: ProgressOptions,
): PlanObserver & { command(host: string, argv: readonly string[], kind: string): void; info(msg: string): void } {
  const isTTY = opts.isTTY ?? Boolean(process.stderr.isTTY);
  const colorless = !colorEnabled(isTTY);
  const logger =
    listr2 &&
    new listr2.ListrLogger({
      useIcons: isTTY && colorEnabled(isTTY),
      processOutput: new listr2.ProcessOutput(process.stderr, process.stderr),
      toStderr: Object.values(listr2.ListrLogLevels),
    });
  const log = (level: ListrLogLevels, msg: string) => {
    if (opts.quiet) return;
    if (colorless || !logger) {
      const word =
        level === LEVEL.FAILED ? 'failed' : level === LEVEL.COMPLETED ? 'done' : level === LEVEL.STARTED ? '...' : '-';
      process.stderr.write(`${word} ${msg}\n`);
    } else logger.log(level, msg);
  };
  return {
    start: (step, i, total) => log(LEVEL.STARTED, `[${i + 1}/${total}] ${step.title}`),
    done: (step) => log(LEVEL.COMPLETED, step.title),
    failed: (step) => log(LEVEL.FAILED, step.title),
    undo: (step, err) =>
      log(LEVEL.ROLLBACK, `undo ${step.title}${err ? ` (undo failed: ${(err as Error).message})` : ''}`),
    command: (host, argv, kind) => {
      if (opts.verbose)
        log(LEVEL.OUTPUT, `${host === 'local' ? '' : `[${host}] `}${kind === 'write' ? '$' : '>'} ${shellJoin(argv)}`);
    },
    info: (msg) => log(LEVEL.OUTPUT, msg),
  };
}
