/** What the cache VG holds, for `cache list`: every cache unit with its state and counters. */
import * as dmsetup from '../../tools/dmsetup.js';
import type { NodeSession } from '../node.js';
import { dmName } from '../dmNames.js';
import type { Repo } from '../metadata.js';
import { observeNode } from '../observe.js';
import { staleCaches, unitBytes, units } from './eviction.js';
import type { CacheLv, CacheState } from './meta.js';
import { cacheVgOf, observeCache } from './vg.js';

export interface CacheEntry {
  kind: CacheLv['kind'];
  name: string;
  /** The cache LV's own uuid (a re-attached cache keeps it; a rebuilt one would not). */
  uuid: string;
  cacheVg: string;
  /**
   * Replicas: complete / copying, or stale when the origin LV exists in no VG of the node. Write-back
   * caches: attached (its device is up), or detached (a crash left it: mapping or recovering
   * the clone here re-attaches it and writes it back). Lazy caches: attached (its device
   * is up), ready (cleanly detached: re-attached with its mappings), new (never attached),
   * unclean (left attached by a crash: reset at its next attach).
   */
  state: CacheLv['state'] | 'stale' | 'attached' | 'detached' | 'ready' | 'new' | 'unclean';
  /** Write-back caches: blocks not yet written back to the COW. */
  dirtyBlocks?: number;
  origin: { uuid: string; name?: string };
  sizeBytes: number;
  copiedBytes: number;
  active: boolean;
  open: boolean;
  lastUsed?: string;
  /**
   * Write-back caches (kernel counters: read + write hits, read misses); a replica serves every read.
   * Lazy: read hits / misses.
   */
  hits?: number;
  misses?: number;
  /** Lazy caches while attached (dm-cache status; the kernel's counters restart at each attach). */
  lazy?: {
    metaBytes: number;
    device: string;
    usedBlocks: number;
    totalBlocks: number;
    blockBytes: number;
    readHits: number;
    readMisses: number;
    promotions: number;
    demotions: number;
    hitRatio: number;
    needsCheck: boolean;
  };
}

export interface CacheReport {
  cacheVg: string;
  exists: boolean;
  sizeBytes: number;
  freeBytes: number;
  caches: CacheEntry[];
}

export async function listCaches(ctx: NodeSession): Promise<CacheReport> {
  const cacheVg = cacheVgOf(ctx);
  const cache = await observeCache(ctx.runner, cacheVg);
  const repo = cache.exists ? (await observeNode(ctx)).repo : undefined;
  // Write-back caches report their counters through their dm device (one status call for all).
  const statuses = cache.lvs.some((c) => c.kind === 'writeback' || (c.kind === 'lazy' && c.lv.open))
    ? await dmsetup.statusAll(ctx.runner)
    : new Map<string, dmsetup.DmLine[]>();
  // Stale: the origin LV is in no VG of the node (another repository's image is not stale).
  const all = units(cache.lvs);
  const stale = new Set(repo ? (await staleCaches(ctx, all, repo)).map((c) => c.name) : []);
  return {
    cacheVg,
    exists: cache.exists,
    sizeBytes: cache.sizeBytes,
    freeBytes: cache.freeBytes,
    caches: all.map((c) => toEntry(c, repo, stale.has(c.name), statuses, cache)),
  };
}

function toEntry(
  c: CacheLv,
  repo: Repo | undefined,
  stale: boolean,
  statuses: Map<string, dmsetup.DmLine[]>,
  cache: CacheState,
): CacheEntry {
  const origin = repo?.byUuid.get(c.originUuid);
  let wb: Partial<CacheEntry> = {};
  if (c.kind === 'writeback') {
    const line = statuses.get(dmName('wb', c.originUuid))?.[0];
    const st = line?.target === 'writecache' ? dmsetup.parseWritecacheStatus(line.args) : undefined;
    wb = st
      ? {
          state: 'attached',
          dirtyBlocks: st.dirtyBlocks,
          ...(st.readBlocks !== undefined
            ? { hits: (st.readHits ?? 0) + (st.writeHits ?? 0), misses: st.readBlocks - (st.readHits ?? 0) }
            : {}),
        }
      : { state: 'detached' };
  }
  if (c.kind === 'lazy') {
    const device = dmName('lc', c.originUuid);
    const line = statuses.get(device)?.[0];
    const st = line?.target === 'cache' ? dmsetup.parseCacheStatus(line.args) : undefined;
    const metaBytes = unitBytes(c, cache) - c.sizeBytes;
    wb = st
      ? {
          state: 'attached',
          hits: st.readHits,
          misses: st.readMisses,
          lazy: {
            metaBytes,
            device,
            usedBlocks: st.cacheUsed,
            totalBlocks: st.cacheTotal,
            blockBytes: st.cacheBlockSectors * 512,
            readHits: st.readHits,
            readMisses: st.readMisses,
            promotions: st.promotions,
            demotions: st.demotions,
            hitRatio: st.readHits + st.readMisses ? st.readHits / (st.readHits + st.readMisses) : 0,
            needsCheck: st.needsCheck,
          },
        }
      : { state: c.lazyState === 'attached' ? 'unclean' : c.lazyState };
  }
  return {
    kind: c.kind,
    name: c.name,
    uuid: c.uuid,
    cacheVg: c.vg,
    state: stale ? 'stale' : c.state,
    ...wb,
    origin: { uuid: c.originUuid, name: origin?.name },
    sizeBytes: c.sizeBytes,
    copiedBytes: c.copiedBytes,
    active: c.lv.activeLocally,
    open: c.lv.open,
    lastUsed: c.usedAt ? new Date(c.usedAt * 1000).toISOString() : undefined,
    // Whatever else it is, a cache whose origin LV is gone can never be used again.
    ...(stale ? { state: 'stale' as const } : {}),
  };
}
