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
 *
 * The directory carries the synchronous-update attribute (chattr +S, inherited by the files
 * made in it; ext4, XFS and btrfs keep it): each of tee's writes to the log returns only once
 * the record is on the node's disk, so a power cut cannot take a record whose step ran. It
 * costs no command per operation, only a disk flush per record.
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

/** Makes the journal directory's records synchronous (a fresh node; `install --node` on an older one). */
export const syncAttrReq = (paths: readonly string[] = [JOURNAL_DIR]): RunRequest => ({
  argv: ['chattr', '+S', '--', ...paths],
  kind: 'write',
  root: true,
});

/** The attributes of the journal directory (`.`) and of each file in it, one `lsattr` line each. */
export const attrsReq = (): RunRequest => ({
  argv: ['lsattr', '-a', '--', JOURNAL_DIR],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** lsattr's lines as path -> whether the synchronous-update attribute (S) is set; `..` left out. */
export function parseSyncAttrs(stdout: string): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const line of stdout.split('\n')) {
    const m = /^(\S+)\s+(.+)$/.exec(line.trim());
    if (!m || m[2]!.endsWith('/..')) continue;
    const file = m[2]!.endsWith('/.') ? m[2]!.slice(0, -2) : m[2]!;
    out.set(file, m[1]!.includes('S'));
  }
  return out;
}

/**
 * Wait up to waitSeconds for the lock, then run `tee -a LOG`, which appends what the caller
 * writes to its stdin (its first line, the holder record, comes back once the lock is held)
 * until stdin closes: the caller's end, closed on release or by the kernel when the caller
 * dies (also through ssh, whose channel closes with the client). The lock goes with flock's
 * process. tee writes what it read to its stdout first, then to the log: the echo of a
 * record says tee has it, not that it is in the log. The caller therefore sends a newline
 * after each echo and waits for that echo too: tee reads the newline only after its write
 * of the record to the log has returned (on disk, in the synchronous directory).
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
  bin('chattr', 'e2fsprogs', 'make the journal directory synchronous (its records survive a power cut)'),
  bin('lsattr', 'e2fsprogs', 'check that the journal directory and its logs are synchronous (doctor)'),
];
