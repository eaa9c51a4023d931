/**
 * How caches enter a clone's device stack (planStack): which replica a clone may stand on,
 * and the steps that make it ready. Pure: no I/O here.
 */
import * as lvm from '../../tools/lvm.js';
import { cacheTag, type CacheLv, type CacheState } from './meta.js';
import { sameUuid } from '../dmNames.js';
import type { ImageObj } from '../metadata.js';
import type { Step } from '../plan.js';
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
  const old = c.usedAt && c.usedAt !== now ? ['--deltag', cacheTag.used(c.usedAt)] : [];
  return {
    title: `mark ${c.vg}/${c.name} used`,
    req: lvm.lvmRequest('lvchange', [...old, '--addtag', cacheTag.used(now), `${c.vg}/${c.name}`], 'write'),
  };
}

/** Steps that put a usable replica under a stack: activate it if needed, mark it used. */
export function replicaSteps(c: CacheLv): Step[] {
  return [...(c.lv.activeLocally ? [] : [activateCacheLv(c)]), touchStep(c)];
}
