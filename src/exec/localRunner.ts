import { execa } from 'execa';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BaseRunner, type RawOutcome, type RunnerHooks } from './baseRunner.js';
import { stdio } from './stdio.js';
import type { RunRequest, SudoPolicy } from './types.js';

/**
 * A read-only file descriptor holding `input`, for a child's stdin. Node gives a child's
 * stdin 'pipe' as a socketpair, which a program cannot reopen through /proc/self/fd/0
 * (ENXIO): `install ... /proc/self/fd/0 FILE`, which cowstack uses to write journal
 * entries, configs and the CHAP record, then fails locally although it works over ssh
 * (where stdin is a pipe). A regular file can be reopened and read from fd 0 alike. It
 * is created 0600 in a fresh 0700 directory (on tmpfs where there is one, so a secret is
 * never written to a disk) and unlinked before the child starts: only the descriptor
 * remains, and it goes when it is closed.
 */
async function inputFile(input: string | Buffer): Promise<fsp.FileHandle> {
  const dir = await fsp.mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'cowstack-in-'));
  try {
    const file = join(dir, 'stdin');
    await fsp.writeFile(file, input, { mode: 0o600, flag: 'wx' });
    return await fsp.open(file, 'r');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

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
    const io = stdio(req);
    const input = req.input === undefined ? undefined : await inputFile(req.input);
    if (input) {
      delete io.input;
      io.stdin = input.fd;
    }
    try {
      const child = execa(file!, args, {
        reject: false,
        timeout: timeoutMs,
        ...io,
        env: { LC_ALL: 'C', ...req.env },
        stripFinalNewline: false,
        encoding: 'utf8',
      });
      if (req.onStdout) child.stdout?.on('data', (c: Buffer | string) => req.onStdout!(String(c)));
      const r = await child;
      const code = (r as { code?: string }).code;
      return {
        exitCode: r.exitCode ?? (r.timedOut ? 124 : 127),
        stdout: String(r.stdout ?? ''),
        stderr: String(r.stderr ?? '') || (r.exitCode === undefined && !r.timedOut ? String(r.shortMessage ?? '') : ''),
        timedOut: Boolean(r.timedOut),
        notFound: code === 'ENOENT',
      };
    } finally {
      await input?.close();
    }
  }

  async close(): Promise<void> {}
}
