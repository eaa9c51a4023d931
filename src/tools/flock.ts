/**
 * The node lock's programs: flock(1) holding an exclusive lock on a file for as long as
 * the `cat` it runs reads an open stdin, and the small files next to it. The directory is
 * root's and 0700: a lock file anyone could open could be flocked by anyone (flock needs
 * only read access), which would stall every operation on the node.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';
import { STDIN_PATH } from './files.js';

export const LOCK_DIR = '/run/lock/cowstack';
/** flock's exit code when -w ran out (-E): distinct from cat's and flock's own errors. */
export const FLOCK_BUSY = 75;

/** The line the caller writes to the keeper's stdin: `cat` echoes it once the lock is held. */
export const LOCK_HANDSHAKE = 'cowstack node lock held\n';

export const lockFile = (key: string) => `${LOCK_DIR}/${key}.lock`;
export const holderFile = (key: string) => `${LOCK_DIR}/${key}.holder`;

export const lockDirReq = (): RunRequest => ({
  argv: ['install', '-d', '-m', '0700', LOCK_DIR],
  kind: 'write',
  root: true,
});

/**
 * Wait up to waitSeconds for the lock, then run `cat`, which echoes stdin (the caller's
 * handshake: its first line comes back once the lock is held) until stdin closes: the
 * caller's end, closed on release or by the kernel when the caller dies (also through
 * ssh, whose channel closes with the client). The lock goes with flock's process.
 */
export const holdReq = (key: string, waitSeconds: number): RunRequest => ({
  argv: ['flock', '-w', String(waitSeconds), '-E', String(FLOCK_BUSY), lockFile(key), 'cat'],
  kind: 'write',
  root: true,
  allowFailure: true,
  timeoutMs: 0,
});

/** Who holds the lock (read by a waiter that gave up): written from stdin, root's only. */
export const writeHolderReq = (key: string, content: string): RunRequest => ({
  argv: ['install', '-m', '0600', STDIN_PATH, holderFile(key)],
  kind: 'write',
  root: true,
  input: content,
});

export const readHolderReq = (key: string): RunRequest => ({
  argv: ['cat', '--', holderFile(key)],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('flock', 'util-linux', 'hold the node lock for an operation'),
];
