import { execa } from 'execa';
import { BaseRunner, type RawOutcome, type RunnerHooks } from './baseRunner.js';
import { stdio } from './stdio.js';
import type { RunRequest, SudoPolicy } from './types.js';

/** Runs programs on this machine. */
export class LocalRunner extends BaseRunner {
  readonly target = 'local';

  constructor(sudo: SudoPolicy = 'auto', hooks: RunnerHooks = {}) {
    super(sudo, hooks);
  }

  protected async isRoot(): Promise<boolean> {
    return process.getuid?.() === 0;
  }

  protected async spawn(argv: readonly string[], req: RunRequest, timeoutMs: number): Promise<RawOutcome> {
    const [file, ...args] = argv;
    const r = await execa(file!, args, {
      reject: false,
      timeout: timeoutMs,
      ...stdio(req),
      env: { LC_ALL: 'C', ...req.env },
      stripFinalNewline: false,
      encoding: 'utf8',
    });
    const code = (r as { code?: string }).code;
    return {
      exitCode: r.exitCode ?? (r.timedOut ? 124 : 127),
      stdout: String(r.stdout ?? ''),
      stderr: String(r.stderr ?? '') || (r.exitCode === undefined && !r.timedOut ? String(r.shortMessage ?? '') : ''),
      timedOut: Boolean(r.timedOut),
      notFound: code === 'ENOENT',
    };
  }

  async close(): Promise<void> {}
}
