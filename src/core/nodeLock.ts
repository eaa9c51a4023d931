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
import type { Runner } from '../exec/types.js';
import * as flock from '../tools/flock.js';
import { setOperationId } from './journal.js';

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
  await runner.run(flock.lockDirReq());
  const stdin = new PassThrough();
  stdin.write(flock.LOCK_HANDSHAKE);
  let echoed = '';
  let held!: () => void;
  const acquired = new Promise<'held'>((resolve) => (held = () => resolve('held')));
  const keeper = runner.run({
    ...flock.holdReq(vg, wait),
    stdin,
    onStdout: (chunk) => {
      echoed += chunk;
      if (echoed.includes(flock.LOCK_HANDSHAKE)) held();
    },
  });
  // A keeper that ends (or fails to start) before the handshake came back never held the lock.
  const first = await Promise.race([acquired, keeper]);
  if (first !== 'held') {
    stdin.end();
    if (first.exitCode === flock.FLOCK_BUSY) throw await busy(runner, vg, wait);
    const why = `flock exited with ${first.exitCode}: ${first.stderr.trim()}`;
    throw new CowstackError(EXIT.FAILED, `could not take the node lock ${flock.lockFile(vg)}${where(runner)}: ${why}`, {
      hint: 'check that flock (util-linux) is installed and /run/lock is writable for root on the node',
      data: { lock: flock.lockFile(vg), host: runner.target },
    });
  }
  const since = new Date().toISOString();
  const holder: LockHolder = { pid: process.pid, host: hostname(), command: opts.command.slice(0, 200), since, opId };
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    stdin.end();
    // The keeper's outcome no longer matters. Its end is awaited so that the next operation
    // finds the lock free, but not forever: an ssh session to a dead host ends only when
    // ssh gives up on it, and the lock ends with it anyway.
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, RELEASE_WAIT_MS)));
    await Promise.race([keeper.catch(() => undefined), bound]);
    clearTimeout(timer);
  };
  try {
    await runner.run(flock.writeHolderReq(vg, `${JSON.stringify(holder)}\n`));
  } catch (e) {
    await release();
    throw e;
  }
  setOperationId(opId);
  return { opId, release };
}

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
  try {
    if (!opts.dryRun) {
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
  }
}

const where = (runner: Runner) => (runner.target === 'local' ? '' : ` on ${runner.target}`);

async function busy(runner: Runner, vg: string, wait: number): Promise<CowstackError> {
  const r = await runner.run(flock.readHolderReq(vg)).catch(() => undefined);
  let holder: Partial<LockHolder> | undefined;
  try {
    holder = r?.exitCode === 0 ? (JSON.parse(r.stdout) as Partial<LockHolder>) : undefined;
  } catch {
    holder = undefined;
  }
  const who = holder?.pid
    ? `pid ${holder.pid} on ${holder.host ?? '?'} ("cowstack ${holder.command ?? '?'}", since ${holder.since ?? '?'})`
    : `an operation that has not recorded itself in ${flock.holderFile(vg)} yet`;
  const message =
    `another cowstack operation holds the node lock of VG ${vg}${where(runner)}: ${who}; ` + `gave up after ${wait}s`;
  return new CowstackError(EXIT.TIMEOUT, message, {
    hint:
      'wait for it to finish and run the command again (config node.lockWaitSeconds sets the wait); the lock ' +
      "goes with its holder's process: a lock that outlives it means its ssh session is still open on the node",
    data: { lock: flock.lockFile(vg), host: runner.target, holder: holder ?? null, waitSeconds: wait },
  });
}
