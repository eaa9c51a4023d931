/**
 * The executor: runs a node session's plan (core/plan.ts) with the session's progress and
 * lock-error policy: transient lock manager errors are retried per step, completed steps are
 * undone when one fails, journal records go to the node lock's keeper, and a refusal by the
 * lock manager becomes a lock-conflict error (exit 4) naming the LV and who holds it.
 */
import { isLockRefusal, isTransientLockError, lockConflict } from './locks.js';
import type { CowObj } from './metadata.js';
import type { SessionBase } from './node.js';
import { runPlan, type PlanOutcome, type Step } from './plan.js';

/** The LV a plan's lock is taken for: enough to name it and find its holder. */
export type LockTarget = Pick<CowObj, 'vg' | 'name' | 'uuid'>;

/**
 * Runs a plan; a lock manager refusal on the way becomes a lock-conflict error naming the LV.
 * With several candidates (a whole stack), the LV is the one the refused command named.
 * A transient lock manager error that outlasted the step's retries is not a refusal (lvmlockd
 * says "Failed to lock logical volume" for both): it is thrown as it is, so that a caller that
 * may run the whole operation again (a TM action) still recognises it.
 */
export async function runGuarded(
  ctx: SessionBase,
  steps: Step[],
  lockTarget?: LockTarget | LockTarget[],
): Promise<PlanOutcome> {
  try {
    return await runPlan(ctx.runner, steps, ctx.observer, ctx.lockPolicy);
  } catch (e) {
    const candidates = lockTarget === undefined ? [] : Array.isArray(lockTarget) ? lockTarget : [lockTarget];
    if (candidates.length && isLockRefusal(e) && !isTransientLockError(e)) {
      const hit = candidates.find((c) => e.argv.includes(`${c.vg}/${c.name}`)) ?? candidates[0]!;
      throw await lockConflict(ctx.runner, hit.vg, hit.name, hit.uuid, e);
    }
    throw e;
  }
}
