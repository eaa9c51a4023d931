/**
 * How an operation in core is called today: the runner, the repository VG and the options
 * every operation shares, and running a plan with the lock manager's refusals named.
 * (Its own module so that src/core/cache and clones.ts can both use it without a cycle.)
 */
import type { Runner } from '../exec/types.js';
import type * as lvm from '../tools/lvm.js';
import type { CacheMapMode } from './config.js';
import { isLockRefusal, lockConflict } from './locks.js';
import { lvRef } from './lvSteps.js';
import type { CowObj } from './metadata.js';
import { runPlan, type PlanObserver, type PlanOutcome, type Step } from './plan.js';

export interface OpContext {
  runner: Runner;
  vg: string;
  scope?: lvm.LvmScope;
  observer?: PlanObserver;
  dryRun?: boolean;
  /** The node-local cache VG (config cache.vg); unset: caches are not looked at. */
  cacheVg?: string;
  /** What `clone map` does with caches when the caller does not say (config cache.map). */
  cacheMap?: CacheMapMode[];
  /** Copy rate limit for replicas made on map (config cache.rateMiBps). */
  cacheRateMiBps?: number;
  /** Data size of a new lazy cache (config cache.lazySize); default: see lazyDataBytes. */
  cacheLazySize?: string;
}

/**
 * Runs a plan; a lock manager refusal on the way becomes a lock-conflict error naming the LV.
 * With several candidates (a whole stack), the LV is the one the refused command named.
 */
export async function runGuarded(ctx: OpContext, steps: Step[], lockTarget?: CowObj | CowObj[]): Promise<PlanOutcome> {
  try {
    return await runPlan(ctx.runner, steps, ctx.observer);
  } catch (e) {
    const candidates = lockTarget === undefined ? [] : Array.isArray(lockTarget) ? lockTarget : [lockTarget];
    if (candidates.length && isLockRefusal(e)) {
      const hit = candidates.find((c) => e.argv.includes(lvRef(c))) ?? candidates[0]!;
      throw await lockConflict(ctx.runner, hit.vg, hit.name, hit.uuid, e);
    }
    throw e;
  }
}
