/**
 * The replica as a layer of a clone's device stack: which replica a clone may stand on, and
 * the steps that make it ready. Pure: no I/O here (the copy itself is replicate.ts).
 */
import * as lvm from '../../tools/lvm.js';
import { lvMapperName, sameUuid } from '../dmNames.js';
import type { ImageObj } from '../metadata.js';
import type { Step } from '../plan.js';
import type { CacheLayer } from './kind.js';
import { cacheLvPath, cacheTag, replicaLvName, type CacheLv, type CacheState } from './meta.js';
import { activateCacheLv } from './vg.js';

/**
 * The replica a clone of `image` may stand on: complete, made from exactly this LV (uuid)
 * and verified against exactly this content (sha256). Anything else is ignored.
 */
export function usableReplica(cache: CacheState | undefined, image: ImageObj): CacheLv | undefined {
  return cache?.lvs.find(
    (c) =>
      c.kind === 'replica' &&
      c.state === 'complete' &&
      sameUuid(c.originUuid, image.uuid) &&
      Boolean(image.sha256) &&
      c.sha256 === image.sha256,
  );
}

/**
 * Record that a map used this replica now: eviction drops the least recently used first.
 * Never --deltag the tag it adds (twice in one second): lvchange adds before it deletes.
 */
export function touchStep(c: CacheLv, now = Math.floor(Date.now() / 1000)): Step {
  const old = c.usedAt && c.usedAt !== now ? [cacheTag.used(c.usedAt)] : [];
  return {
    title: `mark ${c.vg}/${c.name} used`,
    req: lvm.tagLvReq(`${c.vg}/${c.name}`, { del: old, add: [cacheTag.used(now)] }),
  };
}

/** Steps that put a usable replica under a stack: activate it if needed, mark it used. */
export function replicaSteps(c: CacheLv): Step[] {
  return [...(c.lv.activeLocally ? [] : [activateCacheLv(c)]), touchStep(c)];
}

/**
 * A complete, verified local replica of exactly this image LV replaces it at the bottom: the
 * node then reads nothing from the repository for the stack. It is activated and marked used
 * only when the plan builds something on it (or it is not active).
 */
export const replicaLayer: CacheLayer = {
  name: 'replica',
  bottom(state, image) {
    const replica = usableReplica(state.cache, image);
    if (!replica) return undefined;
    return {
      device: cacheLvPath(replica),
      names: { replica: replica.name },
      steps: (building) => (building || !replica.lv.activeLocally ? replicaSteps(replica) : []),
    };
  },
  // A snapshot mapped before the replica existed stands on the image LV: without the tables
  // that cannot be told apart, so the image LV is assumed still in use.
  ambiguousBottom: (state, image) =>
    state.cache !== undefined && state.devices.has(lvMapperName(state.cache.vg, replicaLvName(image.uuid))),
};
