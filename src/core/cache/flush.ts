/**
 * `cache flush [CLONE]`: write a mapped clone's write-back cache back to its COW now, while the
 * VM keeps running on it, so that the COW holds every write made so far (before a backup or a
 * snapshot of the LUN, or to bound what a lost local disk could take with it).
 *
 * The write-back cache is dm-writecache (writeback.ts). cowstack makes no dm-cache writeback
 * device: its dm-cache is the lazy read cache, writethrough over a read-only image, never dirty.
 * dm-writecache's `flush` message commits the cache's metadata, writes back every block it
 * holds and returns once they are on the origin (the kernel's process_flush_mesg: writeback_all
 * and a wait for the write-back work; measured on the testbed's 6.1 kernel: 256 dirty blocks,
 * then 0 when the message returned). The cache stays in its normal mode, so new writes are
 * cached again at once. The cleaner mode that unmap and commit use is not for this: a message
 * switches it on and none switches it off (only a new table does, a suspend of the VM's I/O),
 * and in it new writes bypass the cache.
 */
import { CowstackError, EXIT, refused, usageError } from '../../exec/errors.js';
import * as dmsetup from '../../tools/dmsetup.js';
import { dmName } from '../dmNames.js';
import { runGuarded } from '../executor.js';
import type { CloneObj } from '../metadata.js';
import type { NodeSession } from '../node.js';
import { findClone, observeNode, type NodeState } from '../observe.js';
import type { Step } from '../plan.js';
import { validateLvName } from '../validate.js';
import { wbHostOf } from './meta.js';
import { nodeName, writebackLv, writecacheStatus } from './writeback.js';

export interface FlushEntry {
  clone: string;
  uuid: string;
  /** The write-back cache device (dm name); absent when the clone has none on this node. */
  device?: string;
  /** flushed: dirty blocks were written back; none: nothing was dirty, or there is no cache. */
  action: 'flushed' | 'none';
  /** Blocks not yet on the COW before the flush and after it (cache blocks of WB_BLOCK_BYTES). */
  dirtyBefore: number;
  dirtyAfter: number;
  seconds: number;
  /** Why nothing was done (no write-back cache). */
  reason?: string;
}

/** As long as unmap and commit wait for a write-back (writeback.ts): up to 1 GiB over a slow path. */
export const FLUSH_TIMEOUT_MS = 30 * 60_000;

export interface FlushResult {
  vg: string;
  clones: FlushEntry[];
}

export interface FlushOptions {
  /** One clone; without it every clone mapped here with a write-back cache. */
  name?: string;
  /** How long one clone's write-back may take (default FLUSH_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Progress poll interval (tests shorten it). */
  pollMs?: number;
  /** Told each clone's dirty block count while its cache is written back. */
  onProgress?: (clone: string, dirtyBlocks: number, dirtyBefore: number) => void;
}

export async function flushCaches(ctx: NodeSession, opts: FlushOptions = {}): Promise<FlushResult> {
  if (opts.name !== undefined) validateLvName(opts.name, 'clone name');
  if (opts.timeoutMs !== undefined && !(Number.isFinite(opts.timeoutMs) && opts.timeoutMs > 0))
    throw usageError(`timeout ${opts.timeoutMs} ms is not a positive duration`);
  const state = await observeNode(ctx, { caches: 'auto' });
  const clones = opts.name ? [findClone(state, opts.name)] : mappedWithWriteback(state);
  const out: FlushEntry[] = [];
  for (const clone of clones) {
    const device = dmName('wb', clone.uuid);
    if (state.devices.has(device)) out.push(await flushOne(ctx, clone, device, opts));
    else out.push(await nothingToFlush(ctx, state, clone));
  }
  return { vg: ctx.vg, clones: out };
}

function mappedWithWriteback(state: NodeState): CloneObj[] {
  return [...state.repo.byName.values()].filter(
    (o): o is CloneObj => o.kind === 'clone' && state.devices.has(dmName('wb', o.uuid)),
  );
}

/**
 * A clone with no write-back cache device here. Flushing it is a no-op when nothing of it can
 * sit in a cache (its COW already has every write: a script may flush unconditionally), and an
 * error when its unwritten blocks are somewhere this command cannot reach: another node's cache
 * (flush there), or a cache LV left here by a crash with no device over it (recover or map
 * re-attaches it; a plain "nothing to do" would hide that those blocks are not on the COW).
 */
async function nothingToFlush(ctx: NodeSession, state: NodeState, clone: CloneObj): Promise<FlushEntry> {
  const host = wbHostOf(clone);
  const me = host ? await nodeName(ctx) : undefined;
  if (host && host !== me)
    throw refused(
      `${clone.name} has its write-back cache on ${host}, not on ${me}`,
      `run it there: cowstack --host ${host} cache flush ${clone.name}`,
      { clone: clone.name, host },
    );
  if (writebackLv(state.cache, clone))
    throw refused(
      `${clone.name} has a write-back cache LV on this node but no device over it (left by a crash)`,
      'cowstack recover writes it back (and so does clone map, re-attaching it first)',
      { clone: clone.name },
    );
  return {
    clone: clone.name,
    uuid: clone.uuid,
    action: 'none',
    dirtyBefore: 0,
    dirtyAfter: 0,
    seconds: 0,
    reason: 'no write-back cache on this node: every write is on the COW',
  };
}

/** A pause that does not keep the process alive: the last one must not delay the command's exit. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());

/** How often the dirty count is read while the flush message runs (it says nothing until it is done). */
export const PROGRESS_POLL_MS = 1000;

async function flushOne(ctx: NodeSession, clone: CloneObj, name: string, opts: FlushOptions): Promise<FlushEntry> {
  const started = Date.now();
  const before = await writecacheStatus(ctx, name);
  if (before.error)
    throw new CowstackError(
      EXIT.FAILED,
      `write-back cache ${name} (${clone.name}) reports I/O error ${before.error}; its dirty blocks cannot be ` +
        'written back',
      {
        hint: 'do not release the clone: fix the repository path or the local disk, then run cowstack recover',
        data: { clone: clone.name, device: name, ioError: before.error },
      },
    );
  const entry = (action: FlushEntry['action'], dirtyAfter: number): FlushEntry => ({
    clone: clone.name,
    uuid: clone.uuid,
    device: name,
    action,
    dirtyBefore: before.dirtyBlocks,
    dirtyAfter,
    seconds: (Date.now() - started) / 1000,
  });
  // Idempotent: a cache with nothing dirty gets no message.
  if (before.dirtyBlocks === 0) return entry('none', before.dirtyBlocks);
  const step: Step = {
    title: `write back ${before.dirtyBlocks} dirty block(s) of ${name} (${clone.name})`,
    req: { ...dmsetup.messageReq(name, 'flush'), timeoutMs: opts.timeoutMs ?? FLUSH_TIMEOUT_MS },
  };
  if (ctx.dryRun) {
    await runGuarded(ctx, [step]);
    return entry('flushed', before.dirtyBlocks);
  }
  // The message returns when everything is written back; meanwhile the status tells how far it is.
  let settled = false;
  const flushing = runGuarded(ctx, [step]).finally(() => (settled = true));
  while (!settled) {
    await Promise.race([flushing.catch(() => undefined), sleep(opts.pollMs ?? PROGRESS_POLL_MS)]);
    if (settled) break;
    // Progress only: a status that fails here must not hide how the flush itself ends.
    const now = await writecacheStatus(ctx, name).catch(() => undefined);
    if (now && !settled) opts.onProgress?.(clone.name, now.dirtyBlocks, before.dirtyBlocks);
  }
  await flushing;
  // What a running VM wrote since is cached again: the count after is the cache as it is now.
  const after = await writecacheStatus(ctx, name);
  return entry('flushed', after.dirtyBlocks);
}
