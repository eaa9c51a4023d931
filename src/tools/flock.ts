/**
 * The node lock's programs: flock(1) holding an exclusive lock on a file for as long as the
 * `tee -a` it runs reads an open stdin. tee appends every line the holder writes to the VG's
 * journal log and echoes it back, so the echo says the line is in the log: the lock, the
 * holder record and every journal record of the operation cost one command in all.
 *
 * Lock and log live in the journal directory, root's and 0700: a lock file anyone could open
 * could be flocked by anyone (flock needs only read access), which would stall every
 * operation on the node. When the directory is missing (a fresh node), flock cannot open the
 * lock file and exits 66; the caller creates the directory and tries once more.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

export const JOURNAL_DIR = process.env.COWSTACK_JOURNAL_DIR ?? '/var/lib/cowstack/journal';
/** flock's exit code when -w ran out (-E): distinct from tee's and flock's own errors. */
export const FLOCK_BUSY = 75;
/** flock's exit code when it cannot open the lock file (EX_NOINPUT): the directory is missing. */
export const FLOCK_NO_FILE = 66;
/** How much of the log's end a waiter reads to find who holds the lock. */
export const HOLDER_TAIL_BYTES = 65_536;

export const lockFile = (key: string) => `${JOURNAL_DIR}/${key}.lock`;
export const journalLog = (key: string) => `${JOURNAL_DIR}/${key}.log`;

export const lockDirReq = (): RunRequest => ({
  argv: ['install', '-d', '-m', '0700', JOURNAL_DIR],
  kind: 'write',
  root: true,
});

/**
 * Wait up to waitSeconds for the lock, then run `tee -a LOG`, which appends what the caller
 * writes to its stdin (its first line, the holder record, comes back once the lock is held)
 * until stdin closes: the caller's end, closed on release or by the kernel when the caller
 * dies (also through ssh, whose channel closes with the client). The lock goes with flock's
 * process. tee writes a line to its stdout before the log, in the same pass: by the time
 * the caller has seen the echo and sent its next command, the line is in the log.
 */
export const holdReq = (key: string, waitSeconds: number): RunRequest => ({
  argv: ['flock', '-w', String(waitSeconds), '-E', String(FLOCK_BUSY), lockFile(key), 'tee', '-a', journalLog(key)],
  kind: 'write',
  root: true,
  allowFailure: true,
  timeoutMs: 0,
});

/** Appends a record to a journal log without holding the lock (recover under --dry-run, core called directly). */
export const appendLogReq = (log: string, line: string): RunRequest => ({
  argv: ['tee', '-a', log],
  kind: 'write',
  root: true,
  input: line,
});

/** The end of the log (read by a waiter that gave up, to name the holder's last lock record). */
export const readHolderReq = (key: string): RunRequest => ({
  argv: ['tail', '-c', String(HOLDER_TAIL_BYTES), '--', journalLog(key)],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** Empties a log that holds nothing in flight (recover), under the lock: tee's O_APPEND follows. */
export const truncateLogReq = (key: string): RunRequest => ({
  argv: ['truncate', '-s', '0', '--', journalLog(key)],
  kind: 'write',
  root: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('flock', 'util-linux', "hold the node lock while tee appends the operation's records to the VG's journal log"),
  bin('tail', 'coreutils', "read a journal log's end to name the lock holder"),
];
