/**
 * Removing caches from the cache VG: on demand (`cache drop`, by image or when stale), when
 * their origin LV is gone, and to make room for a new one (least recently used first). A
 * lazy cache's two LVs go together; write-back caches are never evicted (they may hold the
 * only copy of a VM's writes) and nothing open is ever removed.
 */
import { refused, usageError } from '../../exec/errors.js';
import * as lvm from '../../tools/lvm.js';
import type { NodeSession } from '../node.js';
import { compactUuid, sameUuid } from '../dmNames.js';
import type { Repo } from '../metadata.js';
import { findImage, observeNode } from '../observe.js';
import { runGuarded } from '../executor.js';
import type { Step } from '../plan.js';
import { formatSize } from '../validate.js';
import type { CacheLv, CacheState } from './meta.js';
import { cacheVgOf, observeCache } from './vg.js';

/**
 * The caches whose origin LV exists in no VG of the node. One cache VG serves every repository
 * of the node (config repositories): an origin that is not in this repository may be in
 * another one, and its write-back cache may hold the only copy of a VM's writes. The other
 * VGs are asked once, and only when some origin is not here.
 */
export async function staleCaches(ctx: NodeSession, lvs: readonly CacheLv[], repo: Repo): Promise<CacheLv[]> {
  const elsewhere = lvs.filter((c) => !repo.byUuid.has(c.originUuid));
  if (!elsewhere.length) return [];
  const known = await lvm.allLvUuids(ctx.runner);
  return elsewhere.filter((c) => !known.has(compactUuid(c.originUuid)));
}

/** Caches whose origin LV is gone can never be used again: drop them (if not open). */
export async function dropStale(ctx: NodeSession, cache: CacheState, repo: Repo): Promise<string[]> {
  const dropped: string[] = [];
  for (const c of await staleCaches(ctx, units(cache.lvs), repo)) {
    if (c.lv.open) continue;
    await removeCacheLv(ctx, c, cache);
    dropped.push(c.name);
  }
  return dropped;
}

/**
 * The removable units of a cache VG: every LV except the metadata LV of a lazy cache whose
 * data LV is listed too (the pair goes together: removeCacheLv removes both).
 */
export const units = (lvs: CacheLv[]): CacheLv[] =>
  lvs.filter(
    (c) => c.kind !== 'lazymeta' || !lvs.some((d) => d.kind === 'lazy' && sameUuid(d.originUuid, c.originUuid)),
  );

/** The bytes a cache unit frees: a lazy cache's data LV with its metadata LV. */
export const unitBytes = (c: CacheLv, cache: CacheState): number =>
  c.sizeBytes +
  (c.kind === 'lazy'
    ? cache.lvs
        .filter((m) => m.kind === 'lazymeta' && sameUuid(m.originUuid, c.originUuid))
        .reduce((n, m) => n + m.sizeBytes, 0)
    : 0);

/**
 * Evict unused replicas and lazy caches, least recently used first, until `bytes` fit;
 * refuse if they cannot. An attached lazy cache holds its LVs open: never evicted.
 */
export async function makeRoom(ctx: NodeSession, cache: CacheState, bytes: number, repo: Repo): Promise<string[]> {
  let free = cache.freeBytes;
  if (free >= bytes) return [];
  // Write-back caches may hold the only copy of a VM's writes: never evicted.
  const candidates = cache.lvs
    .filter((c) => (c.kind === 'replica' || c.kind === 'lazy') && !c.lv.open)
    .sort((a, b) => a.usedAt - b.usedAt);
  const need = candidates.reduce((n, c) => n + unitBytes(c, cache), free);
  if (need < bytes) {
    throw refused(
      `the cache VG ${cache.vg} has ${formatSize(free)} free and ${formatSize(need - free)} in unused ` +
        `caches; ${formatSize(bytes)} are needed`,
      'drop caches in use elsewhere (unmap their clones) or give the cache VG a larger disk',
    );
  }
  const evicted: string[] = [];
  for (const c of candidates) {
    if (free >= bytes) break;
    await removeCacheLv(ctx, c, cache);
    evicted.push(`${c.name} (${repo.byUuid.get(c.originUuid)?.name ?? 'stale'})`);
    free += unitBytes(c, cache);
  }
  return evicted;
}

/** Remove a cache LV; a lazy cache's data LV goes with its metadata LV (one command each). */
export async function removeCacheLv(ctx: NodeSession, c: CacheLv, cache?: CacheState): Promise<void> {
  const group =
    c.kind === 'lazy'
      ? [c, ...(cache?.lvs ?? []).filter((m) => m.kind === 'lazymeta' && sameUuid(m.originUuid, c.originUuid))]
      : [c];
  const refs = (list: CacheLv[]) => list.map((x) => `${x.vg}/${x.name}`);
  const active = group.filter((x) => x.lv.activeLocally);
  const steps: Step[] = [];
  if (active.length)
    steps.push({
      title: `deactivate ${refs(active).join(' ')}`,
      req: lvm.deactivateReq(refs(active)),
    });
  steps.push({
    title: `remove cache LV ${refs(group).join(' ')}`,
    req: lvm.removeLvReq(refs(group)),
  });
  await runGuarded(ctx, steps);
}

export interface DropResult {
  cacheVg: string;
  dropped: string[];
  action: 'dropped' | 'none';
}

/** Drop the caches of an image (by its current name) or every stale one; refuses open ones. */
export async function dropCaches(ctx: NodeSession, target: { image?: string; stale?: boolean }): Promise<DropResult> {
  const cacheVg = cacheVgOf(ctx);
  if (!target.image && !target.stale) throw usageError('say what to drop: an IMAGE name or --stale');
  const cache = await observeCache(ctx.runner, cacheVg);
  if (!cache.exists) return { cacheVg, dropped: [], action: 'none' };
  const state = await observeNode(ctx);
  let victims: CacheLv[];
  if (target.image) {
    const image = findImage(state, target.image);
    victims = cache.lvs.filter((c) => sameUuid(c.originUuid, image.uuid));
  } else {
    victims = await staleCaches(ctx, cache.lvs, state.repo);
  }
  const open = victims.filter((c) => c.lv.open);
  if (open.length) {
    throw refused(
      `cache ${open.map((c) => `${c.vg}/${c.name}`).join(', ')} is in use by mapped clones on this node`,
      'unmap the clones of that image on this node first',
    );
  }
  const drop = units(victims);
  for (const c of drop) await removeCacheLv(ctx, c, cache);
  return { cacheVg, dropped: drop.map((c) => c.name), action: drop.length ? 'dropped' : 'none' };
}
