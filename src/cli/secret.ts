/**
 * Secrets (CHAP) come from a file or stdin, never from argv: an argv is readable by every
 * local user (ps, /proc/PID/cmdline) and lands in shell history. One trailing newline is
 * dropped so `echo secret > file` works.
 */
import { readFile } from 'node:fs/promises';
import { usageError } from '../exec/errors.js';

export async function readSecret(source: string): Promise<string> {
  let text: string;
  if (source === '-') {
    if (process.stdin.isTTY)
      throw usageError(
        'the secret is read from stdin, which is a terminal',
        'pipe it in, or give --secret-file FILE (mode 0600)',
      );
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } else {
    try {
      text = await readFile(source, 'utf8');
    } catch (e) {
      throw usageError(
        `cannot read the secret file ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
  }
  const secret = text.replace(/\r?\n$/, '');
  if (!secret) throw usageError(`the secret from ${source === '-' ? 'stdin' : source} is empty`);
  return secret;
}
