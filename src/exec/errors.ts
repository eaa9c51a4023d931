/**
 * Every failure cowstack reports is a CowstackError with an exit code from one table
 * (README "Exit codes"), a message that says what went wrong and a hint that says what
 * to do next. Failures of external programs keep their argv, exit code and stderr.
 */

export const EXIT = {
  OK: 0,
  /** An external command failed, or the operation could not complete. */
  FAILED: 1,
  /** Bad arguments: invalid name, size, IQN, unknown option. Nothing was touched. */
  USAGE: 2,
  /** A required program, kernel target, daemon or config setting is missing. */
  MISSING: 3,
  /** The cluster lock manager refused: another host holds the lock. */
  LOCK_CONFLICT: 4,
  /** A bounded wait ran out. */
  TIMEOUT: 5,
  /** Refused for safety: device open, has holders or children, read-only. Use --force where offered. */
  REFUSED: 6,
  /** The named VG, LV, clone, session or device does not exist. */
  NOT_FOUND: 7,
  /** Not allowed: sudo refused or not root. */
  PERMISSION: 8,
  /** A host could not be reached over ssh. */
  UNREACHABLE: 9,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(EXIT).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, '-')]),
);

export interface ErrorDetails {
  hint?: string;
  /** Structured facts for --json (e.g. the LV and the holding host of a lock). */
  data?: Record<string, unknown>;
  cause?: unknown;
}

export class CowstackError extends Error {
  readonly exitCode: ExitCode;
  readonly hint?: string;
  readonly data?: Record<string, unknown>;
  /** Set once the CLI has printed this failure's JSON document (with the command's result). */
  reported = false;

  constructor(exitCode: ExitCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CowstackError';
    this.exitCode = exitCode;
    this.hint = details.hint;
    this.data = details.data;
  }

  toJSON(): Record<string, unknown> {
    return {
      error: EXIT_NAMES[this.exitCode] ?? 'failed',
      exitCode: this.exitCode,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.data ? { data: this.data } : {}),
    };
  }
}

/** An external program exited non-zero (or timed out). */
export class CommandError extends CowstackError {
  readonly argv: readonly string[];
  readonly commandExitCode: number;
  readonly stderr: string;
  readonly target: string;

  constructor(
    target: string,
    argv: readonly string[],
    commandExitCode: number,
    stderr: string,
    opts: { exitCode?: ExitCode; hint?: string; message?: string; data?: Record<string, unknown> } = {},
  ) {
    const where = target === 'local' ? '' : ` on ${target}`;
    const firstLines = stderr.trim().split('\n').slice(-3).join(' | ');
    super(
      opts.exitCode ?? EXIT.FAILED,
      opts.message ?? `${argv.join(' ')}${where} exited with ${commandExitCode}${firstLines ? `: ${firstLines}` : ''}`,
      { hint: opts.hint, data: { ...opts.data, argv, exitCode: commandExitCode, stderr: stderr.trim(), host: target } },
    );
    this.name = 'CommandError';
    this.argv = argv;
    this.commandExitCode = commandExitCode;
    this.stderr = stderr;
    this.target = target;
  }
}

export const usageError = (message: string, hint?: string) => new CowstackError(EXIT.USAGE, message, { hint });
export const notFound = (message: string, hint?: string, data?: Record<string, unknown>) =>
  new CowstackError(EXIT.NOT_FOUND, message, { hint, data });
export const refused = (message: string, hint?: string, data?: Record<string, unknown>) =>
  new CowstackError(EXIT.REFUSED, message, { hint, data });

/** A command run with allowFailure whose failure turned out not to be an expected answer. */
export const commandFailed = (
  target: string,
  r: { argv: readonly string[]; exitCode: number; stderr: string },
): CommandError => new CommandError(target, r.argv, r.exitCode, r.stderr);
