/**
 * The transient write-back cache of a live clone: dm-writecache (ssd mode) over the clone's
 * exclusive COW, its cache on a local LV `wb_<clone uuid>` of the node's cache VG. The rw
 * snapshot's COW device is then `cowstack-wb-<uuid>`, so the VM's writes (data and snapshot
 * exceptions) land on the local disk and reach the repository when written back.
 *
 * Why dm-writecache and not dm-cache writeback: dm-writecache takes every write into the
 * cache, while dm-cache only keeps writes for blocks its policy has promoted (smq promotes
 * on repeated hits, so a burst of fresh writes mostly goes straight through to the origin).
 * Measured numbers are in the README's cache section.
 *
 * Invariant: the COW is never deactivated (so never released to another node) while the
 * cache holds blocks not yet written back. unmap, commit and recover write everything back
 * (flush, then the cleaner mode, polling until no block is dirty) and remove the cache
 * BEFORE the COW is touched; discard drops it (nothing goes back anyway). The cache LV
 * outlives a crash: mapping or recovering the clone on this node re-attaches it, never
 * re-initialises it (only a new cache LV gets its superblock zeroed).
 */
import { CowstackError, EXIT } from '../../exec/errors.js';
import * as blockData from '../../tools/blockData.js';
import * as dmsetup from '../../tools/dmsetup.js';
import * as host from '../../tools/host.js';
import * as lvm from '../../tools/lvm.js';
import {
  cacheLvPath,
  cacheTag,
  WB_HOST_TAG,
  wbHostOf,
  writebackLvName,
  type CacheLv,
  type CacheState,
} from './meta.js';
import { activateCacheLv } from './vg.js';
import { runGuarded } from '../executor.js';
import type { NodeSession } from '../node.js';
import { dmName, dmPath, dmUuid, lvMapperPath, sameUuid } from '../dmNames.js';
import type { CloneObj } from '../metadata.js';
import type { NodeState } from '../observe.js';
import type { Step } from '../plan.js';
import { activateStep, lvRef } from '../lvSteps.js';
import { EXTENT, formatSize, roundUp } from '../validate.js';
import type { CacheKind, CacheLayer } from './kind.js';

/** Cache block size: the page size, what VM writes are made of. */
export const WB_BLOCK_BYTES = 4096;
export const WB_MAX_BYTES = 1024 * 2 ** 20;
export const WB_MIN_BYTES = 8 * 2 ** 20;

/** As large as the COW (it cannot take more writes than that), within [8 MiB, 1 GiB]. */
export const writebackBytes = (clone: CloneObj): number =>
  Math.min(WB_MAX_BYTES, Math.max(WB_MIN_BYTES, roundUp(clone.sizeBytes, EXTENT)));

export function writebackLv(cache: CacheState | undefined, clone: Pick<CloneObj, 'uuid'>): CacheLv | undefined {
  return cache?.lvs.find((c) => c.kind === 'writeback' && sameUuid(c.originUuid, clone.uuid));
}

export const writecacheTableFor = (clone: CloneObj, cacheVg: string): string =>
  dmsetup.writecacheTable(
    clone.sizeBytes / 512,
    lvMapperPath(clone.vg, clone.name),
    cacheLvPath({ vg: cacheVg, name: writebackLvName(clone.uuid) }),
    WB_BLOCK_BYTES,
  );

/** A new cache LV: created, activated, superblock zeroed (stale bytes must never be read as a cache). */
export function createWritebackSteps(cacheVg: string, clone: CloneObj): Step[] {
  const name = writebackLvName(clone.uuid);
  const ref = `${cacheVg}/${name}`;
  const bytes = writebackBytes(clone);
  return [
    {
      title: `create write-back cache LV ${ref} (${formatSize(bytes)}) for ${lvRef(clone)}`,
      req: lvm.createLvReq({
        vg: cacheVg,
        name,
        bytes,
        tags: [cacheTag.kind('writeback'), cacheTag.origin(clone.uuid)],
      }),
      undo: [lvm.removeLvReq(ref)],
    },
    activateCacheLv({ vg: cacheVg, name }),
    {
      title: `zero the superblock of ${ref}`,
      req: blockData.zeroHeaderReq(cacheLvPath({ vg: cacheVg, name }), WB_BLOCK_BYTES),
    },
  ];
}

/** Steps that put the cache device between the rw snapshot and the COW (re-attaching an existing cache). */
export function attachWritebackSteps(wb: CacheLv, clone: CloneObj): Step[] {
  const name = dmName('wb', clone.uuid);
  return [
    ...(wb.lv.activeLocally ? [] : [activateCacheLv(wb)]),
    {
      title: `attach write-back cache ${name} (${clone.name})`,
      req: dmsetup.createReq(name, dmUuid('wb', clone.uuid), writecacheTableFor(clone, wb.vg)),
      undo: [dmsetup.removeReq(name)],
    },
  ];
}

export const nodeName = (ctx: NodeSession): Promise<string> => host.nodeName(ctx.runner);

export const markWbHostStep = (ctx: NodeSession, clone: CloneObj, host: string): Step => ({
  title: `mark ${lvRef(clone)} write-back cached on ${host}`,
  req: lvm.tagLvReq(lvRef(clone), { add: [`${WB_HOST_TAG}${host}`] }, ctx.scope),
  undo: [lvm.tagLvReq(lvRef(clone), { del: [`${WB_HOST_TAG}${host}`] }, ctx.scope)],
});

/** Refuse to use a clone whose newest blocks may sit in another node's write-back cache. */
export async function refuseForeignWriteback(ctx: NodeSession, clone: CloneObj, verb: string): Promise<void> {
  const host = wbHostOf(clone);
  if (!host) return;
  const me = await nodeName(ctx);
  if (host === me) return;
  throw new CowstackError(
    EXIT.REFUSED,
    `${lvRef(clone)} may have blocks not yet written back in the write-back cache of ${host}; ` +
      `refusing to ${verb} it on ${me}`,
    {
      hint:
        `bring ${host} back and run cowstack recover there (it writes them back); if ${host} is lost for good, ` +
        `remove the marker: lvchange --deltag ${WB_HOST_TAG}${host} ${lvRef(clone)} (its unwritten blocks are lost)`,
      data: { clone: clone.name, host },
    },
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The status of a write-back cache device; anything but a writecache there is an error. */
export async function writecacheStatus(ctx: NodeSession, name: string): Promise<dmsetup.WritecacheStatus> {
  const [line] = await dmsetup.status(ctx.runner, name);
  if (!line || line.target !== 'writecache')
    throw new CowstackError(EXIT.FAILED, `${name} is not a writecache device`, {
      hint: 'inspect it with dmsetup table; run cowstack recover',
    });
  return dmsetup.parseWritecacheStatus(line.args);
}

/** Write back every dirty block of a cache device and wait until none is left. */
export async function flushWriteback(
  ctx: NodeSession,
  name: string,
  opts: { timeoutMs?: number } = {},
): Promise<{ flushedBlocks: number; seconds: number }> {
  const started = Date.now();
  // What is dirty now is what this write-back costs (the flush message alone may write it back).
  const before = ctx.dryRun ? undefined : await writecacheStatus(ctx, name);
  // flush commits what is in flight; cleaner makes it write everything back and take no new writes.
  await runGuarded(ctx, [
    { title: `flush ${name}`, req: dmsetup.messageReq(name, 'flush') },
    { title: `write back everything in ${name}`, req: dmsetup.messageReq(name, 'cleaner') },
  ]);
  if (ctx.dryRun) return { flushedBlocks: 0, seconds: 0 };
  const first = before ? before.dirtyBlocks + before.writebackBlocks : 0;
  const deadline = started + (opts.timeoutMs ?? 30 * 60_000);
  for (;;) {
    const s = await writecacheStatus(ctx, name);
    if (s.error) {
      throw new CowstackError(
        EXIT.FAILED,
        `write-back cache ${name} reports I/O error ${s.error}; its dirty blocks are still only on this node`,
        {
          hint:
            'do not release the clone: fix the repository path or the local disk, ' +
            'then run cowstack recover on this node',
        },
      );
    }
    const dirty = s.dirtyBlocks + s.writebackBlocks;
    if (dirty === 0) return { flushedBlocks: first, seconds: (Date.now() - started) / 1000 };
    if (Date.now() > deadline) {
      throw new CowstackError(
        EXIT.FAILED,
        `write-back cache ${name} still has ${dirty} dirty block(s) ` +
          `after ${Math.round((Date.now() - started) / 1000)} s`,
        {
          hint: 'the clone stays mapped and is not released; check the repository path, then retry',
        },
      );
    }
    await sleep(250);
  }
}

/**
 * Remove a live clone's write-back cache from under it: its rw snapshot is unmapped first (no
 * more writes), then, with `flush`, everything is written back to the COW (a cache left by a
 * crash is re-attached for that), then the cache device and its LV are removed. Returns
 * whether anything was there. Callers re-observe afterwards.
 */
export async function releaseWriteback(
  ctx: NodeSession,
  state: NodeState,
  clone: CloneObj,
  opts: { flush: boolean; force?: boolean },
): Promise<{ released: boolean; flushedBlocks?: number; flushSeconds?: number }> {
  const name = dmName('wb', clone.uuid);
  const dev = state.devices.get(name);
  const lv = writebackLv(state.cache, clone);
  if (!dev && !lv) {
    // Marker without a cache: the cache was already written back and removed (a crash in between).
    const host = wbHostOf(clone);
    if (host && opts.flush && host === (await nodeName(ctx))) {
      await runGuarded(ctx, [
        {
          title: `clear the write-back marker of ${lvRef(clone)}`,
          req: lvm.tagLvReq(lvRef(clone), { del: [`${WB_HOST_TAG}${host}`] }, ctx.scope),
        },
      ]);
      return { released: true };
    }
    return { released: false };
  }
  const first: Step[] = [];
  const top = state.devices.get(dmName('rw', clone.uuid));
  if (top)
    first.push({
      title: `unmap ${top.name} (${clone.name})`,
      req: dmsetup.removeReq(top.name, Boolean(opts.force && top.open > 0)),
    });
  if (!dev && lv && opts.flush) {
    // Left by a crash: its blocks may be the only copy of the VM's last writes. Re-attach it
    // over the COW (held exclusively here) so it can write them back.
    if (!clone.lv.activeLocally) first.push(activateStep(clone, 'exclusive', ctx.scope));
    first.push(...attachWritebackSteps(lv, clone));
  }
  if (first.length) await runGuarded(ctx, first);
  const attached = Boolean(dev) || (opts.flush && Boolean(lv));
  let flushed: { flushedBlocks: number; seconds: number } | undefined;
  if (attached && opts.flush) flushed = await flushWriteback(ctx, name);
  const last: Step[] = [];
  if (attached)
    last.push({
      title: `remove write-back cache ${name} (${clone.name})`,
      req: dmsetup.removeReq(name, Boolean(!opts.flush && opts.force)),
    });
  if (lv) {
    const ref = `${lv.vg}/${lv.name}`;
    last.push({ title: `deactivate ${ref}`, req: lvm.deactivateReq(ref) });
    last.push({ title: `remove write-back cache LV ${ref}`, req: lvm.removeLvReq(ref) });
  }
  // Only now is everything on the COW: other nodes may use the clone again.
  const host = wbHostOf(clone);
  if (host && opts.flush)
    last.push({
      title: `clear the write-back marker of ${lvRef(clone)}`,
      req: lvm.tagLvReq(lvRef(clone), { del: [`${WB_HOST_TAG}${host}`] }, ctx.scope),
    });
  await runGuarded(ctx, last);
  return {
    released: true,
    ...(flushed ? { flushedBlocks: flushed.flushedBlocks, flushSeconds: flushed.seconds } : {}),
  };
}

export const writebackDevicePath = (clone: Pick<CloneObj, 'uuid'>): string => dmPath('wb', clone.uuid);

/**
 * The write-back cache as a layer: a live clone's rw snapshot stands on its device instead of
 * the COW. A cache LV left here (a crash) is re-attached, never mapped around: its blocks may
 * be newer than the COW's.
 */
export const writebackLayer: CacheLayer = {
  name: 'writeback',
  cow(state, clone, snapshotMapped) {
    if (state.devices.has(dmName('wb', clone.uuid))) return { device: writebackDevicePath(clone), steps: [] };
    const wb = writebackLv(state.cache, clone);
    if (wb && !snapshotMapped) return { device: writebackDevicePath(clone), steps: attachWritebackSteps(wb, clone) };
    return undefined;
  },
};

export interface WritebackMapResult {
  /** The write-back cache device under the clone's snapshot. */
  writeback?: string;
}

export const writebackKind: CacheKind<WritebackMapResult> = {
  ...writebackLayer,
  mode: 'write',
  async refuseMap(ctx, clone) {
    if (clone.state === 'live') await refuseForeignWriteback(ctx, clone, 'map');
  },
  async prepareMap(ctx, state, clone) {
    if (clone.state !== 'live' || state.devices.has(dmName('rw', clone.uuid)) || writebackLv(state.cache, clone))
      return {};
    const marker = wbHostOf(clone) ? [] : [markWbHostStep(ctx, clone, await nodeName(ctx))];
    await runGuarded(ctx, [...marker, ...createWritebackSteps(state.cache!.vg, clone)], clone);
    if (!ctx.dryRun) return { observeAgain: true };
    // Nothing was created: plan as if it had been, so the dry run shows the whole stack.
    const lv = { name: writebackLvName(clone.uuid), vg: state.cache!.vg, activeLocally: true } as lvm.LvInfo;
    return {
      state: {
        ...state,
        cache: {
          ...state.cache!,
          lvs: [
            ...state.cache!.lvs,
            {
              kind: 'writeback',
              name: lv.name,
              vg: lv.vg,
              uuid: '',
              originUuid: clone.uuid,
              state: 'complete',
              copiedBytes: 0,
              usedAt: 0,
              sizeBytes: 0,
              lv,
            },
          ],
        },
      },
    };
  },
  mapResult(state, clone, plan) {
    const name = dmName('wb', clone.uuid);
    return state.devices.has(name) || plan.steps.some((s) => s.req.argv.includes(name)) ? { writeback: name } : {};
  },
};
