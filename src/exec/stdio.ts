import type { Readable } from 'node:stream';
import type { RunRequest } from './types.js';

/** execa stdio options for a request: buffered input, a stream, or nothing; stdout to a file or '-'. */
export function stdio(req: RunRequest): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (req.input !== undefined) out.input = req.input;
  // execa takes a stream without a file descriptor only through `input`.
  else if (req.stdin) out.input = req.stdin as Readable;
  else out.stdin = 'ignore';
  if (req.stdoutFile === '-') out.stdout = 'inherit';
  else if (req.stdoutFile) out.stdout = { file: req.stdoutFile };
  return out;
}
