/**
 * The node lock: one cowstack operation at a time changes a node's devices and LVs of one
 * repository VG. Two maps of sibling clones share ancestors' devices and activations, and
 * one operation's undo would take away what the other just built (issue 10 item 4), so
 * every operation that changes the node holds this lock from before it observes the node
 * until it is done. Read-only commands and --dry-run never take it.
 *
 * The lock is flock(1) on the node, held by a keeper process that lives exactly as long
 * as the operation (tools/flock.ts): locally a child of cowstack, over ssh a remote command
 * whose stdin is the ssh channel. A release closes that stdin; a cowstack killed by SIGKILL
 * closes it too (the kernel closes the descriptor), so no stale lock survives its holder.
 * A dropped ssh connection releases it once sshd notices the dead client.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { PassThrough } from 'node:stream';
import { CowstackError, EXIT } from '../exec/errors.js';
import type { RunResult, Runner } from '../exec/types.js';
import * as flock from '../tools/flock.js';
import { recordLine, setOperationId, type JournalRecord } from './journal.js';
import { setJournalSink } from './journalSink.js';
import { makeJournalDir } from './journalSync.js';
import { DryRunRunner } from '../exec/dryRunRunner.js';

export const DEFAULT_LOCK_WAIT_SECONDS = 120;
const RELEASE_WAIT_MS = 15_000;

/** What a waiter that gives up is told about the holder. */
export interface LockHolder {
  /** cowstack's process id on the machine it runs on (the node, or the front-end with --host). */
  pid: number;
  host: string;
  command: string;
  since: string;
  opId: string;
}

export interface NodeLock {
  readonly opId: string;
  /** Idempotent. */
  release(): Promise<void>;
}

export interface NodeLockOptions {
  /** Seconds to wait for another operation to finish (config node.lockWaitSeconds). */
  waitSeconds?: number;
  /** The command line shown to a waiter that gives up (e.g. "clone map vm1"). */
  command: string;
}

/** A unique id per operation, recorded in the holder file and in its journal entries. */
export const newOperationId = (): string => `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;

/** The lock of this VG on the node behind runner; one lock file per repository VG. */
export async function acquireNodeLock(runner: Runner, vg: string, opts: NodeLockOptions): Promise<NodeLock> {
  const wait = opts.waitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS;
  const opId = newOperationId();
  const since = new Date().toISOString();
  const holder: LockHolder = { pid: process.pid, host: hostname(), command: opts.command.slice(0, 200), since, opId };
  const holderLine = recordLine({ rec: 'lock', ...holder });
  let keeper = startKeeper(runner, vg, wait, holderLine);
  let first = await keeper.first;
  if (first !== 'held' && first.exitCode === flock.FLOCK_NO_FILE) {
    // A fresh node (or /var/lib/cowstack just mounted): make the directory, then once more.
    await makeJournalDir(runner);
    keeper = startKeeper(runner, vg, wait, holderLine);
    first = await keeper.first;
  }
  if (first !== 'held') {
    keeper.stdin.end();
    if (first.exitCode === flock.FLOCK_BUSY) throw await busy(runner, vg, wait);
    const why = `flock exited with ${first.exitCode}: ${first.stderr.trim()}`;
    throw new CowstackError(EXIT.FAILED, `could not take the node lock ${flock.lockFile(vg)}${where(runner)}: ${why}`, {
      hint: `check that flock (util-linux) is installed and ${flock.JOURNAL_DIR} is writable for root on the node`,
      data: { lock: flock.lockFile(vg), host: runner.target },
    });
  }
  const { stdin, done, append } = keeper;
  setJournalSink(runner.target, { append });
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    setJournalSink(runner.target, undefined);
    stdin.end();
    // The keeper's outcome no longer matters. Its end is awaited so that the next operation
    // finds the lock free, but not forever: an ssh session to a dead host ends only when
    // ssh gives up on it, and the lock ends with it anyway.
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, RELEASE_WAIT_MS)));
    await Promise.race([done.catch(() => undefined), bound]);
    clearTimeout(timer);
  };
  setOperationId(opId);
  return { opId, release };
}

interface Keeper {
  stdin: PassThrough;
  /** 'held' once the holder record came back; the keeper's result if it ended before. */
  first: Promise<'held' | RunResult>;
  done: Promise<RunResult>;
  /** Writes a line and resolves once it is in the log (tools/flock.ts: holdReq). */
  append(line: string): Promise<void>;
}

function startKeeper(runner: Runner, vg: string, wait: number, holderLine: string): Keeper {
  const stdin = new PassThrough();
  let echoed = 0;
  let written = 0;
  const waiters: Array<{ upTo: number; resolve: () => void; reject: (e: unknown) => void }> = [];
  const flush = () => {
    while (waiters.length && echoed >= waiters[0]!.upTo) waiters.shift()!.resolve();
  };
  const send = (text: string): Promise<void> =>
    new Promise((resolve, reject) => {
      written += Buffer.byteLength(text);
      waiters.push({ upTo: written, resolve, reject });
      stdin.write(text);
    });
  // The line's echo comes before tee writes it to the log; the newline's echo after that
  // write has returned, since tee reads the newline, sent after the echo, only then.
  const write = async (line: string): Promise<void> => {
    await send(line);
    await send('\n');
  };
  const done = runner.run({
    ...flock.holdReq(vg, wait),
    stdin,
    onStdout: (chunk) => {
      echoed += Buffer.byteLength(chunk);
      flush();
    },
  });
  // A keeper that ends has stopped writing the log: every record still waiting fails.
  const failWaiters = () => {
    for (const w of waiters.splice(0)) w.reject(keeperEnded(runner, vg));
  };
  done.then(failWaiters, failWaiters);
  const first = Promise.race([write(holderLine).then(() => 'held' as const), done]);
  return {
    stdin,
    first,
    done,
    append: (line) => Promise.race([write(line), done.then(() => Promise.reject(keeperEnded(runner, vg)))]),
  };
}

const keeperEnded = (runner: Runner, vg: string) =>
  new CowstackError(EXIT.FAILED, `the node lock of VG ${vg}${where(runner)} ended while the operation held it`, {
    hint: 'the ssh session to the node or its flock process died: run cowstack recover on the node',
    data: { lock: flock.lockFile(vg), host: runner.target },
  });

/** Run fn holding the node lock (none under --dry-run: nothing changes, nothing to serialize). */
export function withNodeLock<T>(
  runner: Runner,
  vg: string,
  opts: NodeLockOptions & { dryRun?: boolean },
  fn: () => Promise<T>,
): Promise<T> {
  return withNodeLocks([{ runner }], vg, opts, fn);
}

/**
 * Run fn holding the node locks of several nodes, taken in the order given (the caller sorts
 * them: see tm/lockHosts.ts). unreachableOk: a node that ssh cannot reach is skipped.
 */
export async function withNodeLocks<T>(
  nodes: ReadonlyArray<{ runner: Runner; unreachableOk?: boolean }>,
  vg: string,
  opts: NodeLockOptions & { dryRun?: boolean },
  fn: () => Promise<T>,
): Promise<T> {
  const held: NodeLock[] = [];
  const planned: Runner[] = [];
  try {
    if (opts.dryRun) {
      // Nothing is locked (nothing changes), but the plan shows the lock a real run takes and
      // each journal record as the line written to that lock's stdin, not a file command.
      for (const { runner } of nodes.filter((n) => n.runner instanceof DryRunRunner)) {
        await runner.run({ ...flock.holdReq(vg, opts.waitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS), title: 'node lock' });
        const append = async (line: string) =>
          (runner as DryRunRunner).note(`journal record on the lock's stdin: ${line.trim()}`);
        setJournalSink(runner.target, { append });
        planned.push(runner);
      }
    } else {
      for (const n of nodes) {
        try {
          held.push(await acquireNodeLock(n.runner, vg, opts));
        } catch (e) {
          if (!(n.unreachableOk && e instanceof CowstackError && e.exitCode === EXIT.UNREACHABLE)) throw e;
        }
      }
    }
    return await fn();
  } finally {
    for (const lock of held.reverse()) await lock.release();
    for (const runner of planned) setJournalSink(runner.target, undefined);
  }
}

/**
 * Run fn holding one node lock per VG (given by lockOne), taken in name order: two operations
 * over the same two VGs in opposite directions (an image copied each way) cannot deadlock.
 */
export function inVgNameOrder<T>(
  vgs: readonly string[],
  lockOne: (vg: string, fn: () => Promise<T>) => Promise<T>,
  fn: () => Promise<T>,
): Promise<T> {
  const order = [...new Set(vgs)].sort();
  const from = (i: number): Promise<T> => (i === order.length ? fn() : lockOne(order[i]!, () => from(i + 1)));
  return from(0);
}

const where = (runner: Runner) => (runner.target === 'local' ? '' : ` on ${runner.target}`);

async function busy(runner: Runner, vg: string, wait: number): Promise<CowstackError> {
  const r = await runner.run(flock.readHolderReq(vg)).catch(() => undefined);
  let holder: Partial<LockHolder> | undefined;
  for (const line of (r?.exitCode === 0 ? r.stdout : '').split('\n')) {
    try {
      const rec = JSON.parse(line) as JournalRecord;
      if (rec.rec === 'lock') holder = { pid: rec.pid, host: rec.host, command: rec.command, since: rec.since };
    } catch {
      // The tail starts mid-line, or the line is torn: not a record.
    }
  }
  const who = holder?.pid
    ? `pid ${holder.pid} on ${holder.host ?? '?'} ("cowstack ${holder.command ?? '?'}", since ${holder.since ?? '?'})`
    : `an operation that has not recorded itself in ${flock.journalLog(vg)}`;
  const message =
    `another cowstack operation holds the node lock of VG ${vg}${where(runner)}: ${who}; ` + `gave up after ${wait}s`;
  return new CowstackError(EXIT.TIMEOUT, message, {
    hint:
      'wait for it to finish and run the command again (config node.lockWaitSeconds sets the wait); the lock ' +
      "goes with its holder's process: a lock that outlives it means its ssh session is still open on the node",
    data: { lock: flock.lockFile(vg), host: runner.target, holder: holder ?? null, waitSeconds: wait },
  });
}
