import { CommandError } from './errors.js';
import type { RunKind, RunRequest, RunResult, Runner } from './types.js';

export interface Expectation {
  argv: readonly string[];
  kind?: RunKind;
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  /**
   * A long-running keeper (the node lock's `tee`): everything written to the request's stdin
   * stream comes back through onStdout, and the command ends when that stdin ends.
   */
  echoStdin?: boolean;
  /**
   * A command that runs for a while (a dm message that returns when its work is done): it
   * answers once this settles, so the test decides what the code under test does meanwhile.
   */
  until?: Promise<unknown>;
}

/**
 * The unit tests' runner. It fails closed: any command it was not told to expect, in
 * that order, throws. Tests assert the exact argv cowstack sends to each program.
 */
export class RecordingRunner implements Runner {
  readonly calls: RunRequest[] = [];
  /** What each echoStdin keeper echoed so far, by call index. */
  readonly echoed = new Map<number, string>();
  private readonly queue: Expectation[] = [];
  /** Mismatches seen so far: code under test may catch the throw, verify() still reports it. */
  private readonly failures: string[] = [];

  constructor(readonly target = 'local') {}

  expect(argv: readonly string[], answer: Omit<Expectation, 'argv'> = {}): this {
    this.queue.push({ argv, ...answer });
    return this;
  }

  async run(req: RunRequest): Promise<RunResult> {
    this.calls.push(req);
    const next = this.queue.shift();
    const got = JSON.stringify(req.argv);
    if (!next) throw this.fail(`RecordingRunner: unexpected command ${got} (no more commands expected)`);
    if (JSON.stringify(next.argv) !== got) {
      throw this.fail(
        `RecordingRunner: unexpected command\n  got:      ${got}\n  expected: ${JSON.stringify(next.argv)}`,
      );
    }
    if (next.kind && next.kind !== req.kind) {
      throw this.fail(`RecordingRunner: ${got} was tagged ${req.kind}, expected ${next.kind}`);
    }
    const exitCode = next.exitCode ?? 0;
    if (next.echoStdin && req.stdin && typeof req.stdin !== 'string' && 'on' in req.stdin) {
      const stream = req.stdin as NodeJS.ReadableStream;
      const index = this.calls.length - 1;
      let echoed = '';
      await new Promise<void>((resolve) => {
        stream.on('data', (c: Buffer | string) => {
          echoed += String(c);
          this.echoed.set(index, echoed);
          req.onStdout?.(String(c));
        });
        stream.on('end', () => resolve());
      });
      return { argv: req.argv, exitCode, stdout: echoed, stderr: '', durationMs: 0 };
    }
    if (next.until) await next.until;
    if (next.stdout && req.onStdout) req.onStdout(next.stdout);
    if (exitCode !== 0 && !req.allowFailure) throw new CommandError(this.target, req.argv, exitCode, next.stderr ?? '');
    return { argv: req.argv, exitCode, stdout: next.stdout ?? '', stderr: next.stderr ?? '', durationMs: 0 };
  }

  private fail(message: string): Error {
    this.failures.push(message);
    return new Error(message);
  }

  /** Throws if a command did not match (even if that throw was caught) or expected commands never ran. */
  verify(): void {
    if (this.failures.length) throw new Error(this.failures[0]);
    if (this.queue.length)
      throw new Error(
        `RecordingRunner: ${this.queue.length} expected command(s) never ran, ` +
          `first: ${JSON.stringify(this.queue[0]!.argv)}`,
      );
  }

  async close(): Promise<void> {}
}
