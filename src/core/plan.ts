/**
 * A plan is an ordered list of steps, each one external command plus the commands that
 * undo it. Core modules compute plans from observed state; runPlan executes them and, if
 * a step fails, undoes the completed steps in reverse so nothing is left half-done.
 */
import { noCommandResult } from '../exec/results.js';
import type { RunRequest, RunResult, Runner } from '../exec/types.js';
import { journalSinkOf } from './journalSink.js';
import { isTransientLockError } from './locks.js';
import { CowstackError, EXIT } from '../exec/errors.js';

export interface Step {
  title: string;
  req: RunRequest;
  /** Commands that revert this step; run in order when a later step fails. */
  undo?: RunRequest[];
  /**
   * Judges the step's output (a read taken under a lock an earlier step took): throwing fails
   * the step, so the plan is undone. Not called for a step the dry run skipped.
   */
  check?: (result: RunResult) => void;
  /**
   * A journal record (core/journal.ts): under the node lock it goes through the lock's keeper
   * (core/journalSink.ts) and `req` is not run; without the lock `req` writes it.
   */
  record?: string;
  /** The record that reverts this step's record, in place of `undo` under the node lock. */
  undoRecord?: string;
  /** The LV (vg/lv) this step deactivates and nothing else: such steps can ride in one lvchange. */
  deactivates?: string;
}

export interface PlanObserver {
  start?(step: Step, index: number, total: number): void;
  done?(step: Step, result: RunResult): void;
  failed?(step: Step, error: unknown): void;
  undo?(step: Step, error?: unknown): void;
  /** A step failed with a transient lock manager error and is run again. */
  retry?(step: Step, error: unknown, attempt: number): void;
}

/** How often, and how far apart, something that failed on the lock manager is tried in all. */
export interface Retry {
  attempts: number;
  pauseMs: number;
}

/**
 * The lock-error policy of a node session (core/node.ts), in one place: which lock manager
 * failures are worth another try, how many tries in all and the pause between them. Tests
 * shorten the pauses by passing their own policy.
 */
export interface LockPolicy {
  /**
   * A step whose lock could not be taken because of a transient lock manager error (a lease
   * I/O timeout on a slow path to the LUN, not a refusal) changed nothing: the executor runs
   * it again after a pause, before the plan is undone.
   */
  step: Retry;
  /**
   * A whole idempotent operation (a TM action: oned re-runs them anyway) that still failed on
   * a transient error after its steps' own retries: run once more from a fresh observation.
   * The pause is longer than a step's: the lease's I/O has already failed for several seconds.
   */
  action: Retry;
  /**
   * A lock conflict on an LV this very host released moments ago (commit, rename): sanlock's
   * release of the exclusive lease may still be in flight on a slow path when the next
   * activation asks for it, which lvmlockd reports as "locked by other host". Asked again a
   * few times, spread over the lease's I/O timeout, before it is called a conflict.
   */
  ownRelease: Retry;
}

export const defaultLockPolicy: LockPolicy = Object.freeze({
  step: Object.freeze({ attempts: 3, pauseMs: 3_000 }),
  action: Object.freeze({ attempts: 3, pauseMs: 5_000 }),
  ownRelease: Object.freeze({ attempts: 4, pauseMs: 5_000 }),
});

/** Which failures withLockRetry tries again: transient lock manager errors, or conflicts after an own release. */
export type LockRetryOn = 'step' | 'action' | 'own-release';

const retriable = (on: LockRetryOn, e: unknown): boolean =>
  on === 'own-release' ? e instanceof CowstackError && e.exitCode === EXIT.LOCK_CONFLICT : isTransientLockError(e);

/**
 * A whole driver action (TM or datastore) run again, from a fresh observation, on a transient
 * lock manager error (the policy's `action` attempts): every driver action is idempotent.
 */
export function retryAction<T>(
  policy: LockPolicy | undefined,
  info: (msg: string) => void,
  fn: () => Promise<T>,
): Promise<T> {
  return withLockRetry({ lockPolicy: policy ?? defaultLockPolicy }, fn, {
    on: 'action',
    onRetry: (e, next, attempts) =>
      info(
        `transient lock manager error (${(e as Error).message.split('\n')[0]}); ` +
          `running the action again (${next}/${attempts})`,
      ),
  });
}

/**
 * Runs fn, and again after the policy's pause while it fails in the way `on` names, up to the
 * policy's attempts in all; any other error, or the last attempt's, is thrown as it is.
 * `onRetry` hears of each retry before the pause (next: the attempt about to run).
 */
export async function withLockRetry<T>(
  session: { lockPolicy: LockPolicy },
  fn: () => Promise<T>,
  o: { on: LockRetryOn; onRetry?: (error: unknown, next: number, attempts: number) => void },
): Promise<T> {
  const { attempts, pauseMs } =
    o.on === 'own-release'
      ? session.lockPolicy.ownRelease
      : o.on === 'action'
        ? session.lockPolicy.action
        : session.lockPolicy.step;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= attempts || !retriable(o.on, error)) throw error;
      o.onRetry?.(error, attempt + 1, attempts);
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  }
}

async function runStep(runner: Runner, step: Step, observer: PlanObserver, lockPolicy: LockPolicy): Promise<RunResult> {
  const sink = step.record === undefined ? undefined : journalSinkOf(runner.target);
  if (sink) {
    await sink.append(step.record!);
    return noCommandResult();
  }
  return withLockRetry({ lockPolicy }, () => runner.run({ title: step.title, ...step.req }), {
    on: 'step',
    onRetry: (error, next) => observer.retry?.(step, error, next - 1),
  });
}

export interface PlanOutcome {
  results: RunResult[];
}

/**
 * Fault injection for the crash tests: COWSTACK_FAULT_AFTER_STEP=N kills this process
 * with SIGKILL right after the N-th step (counted across all plans of the process) has
 * completed, exactly as a power cut of the management process would.
 */
let stepsDone = 0;
function maybeCrash(): void {
  const n = Number(process.env.COWSTACK_FAULT_AFTER_STEP ?? 0);
  stepsDone++;
  if (n > 0 && stepsDone === n) process.kill(process.pid, 'SIGKILL');
}

/**
 * Runs the steps in order; a failed step undoes the completed ones in reverse. Transient lock
 * manager errors are retried per `lockPolicy.step`. Operations of a node session go through
 * runGuarded (core/executor.ts), which also names the lock manager's refusals.
 */
export async function runPlan(
  runner: Runner,
  steps: Step[],
  observer: PlanObserver = {},
  lockPolicy: LockPolicy = defaultLockPolicy,
): Promise<PlanOutcome> {
  const results: RunResult[] = [];
  const completed: Step[] = [];
  for (const [i, step] of steps.entries()) {
    observer.start?.(step, i, steps.length);
    try {
      const r = await runStep(runner, step, observer, lockPolicy);
      if (!r.skipped) step.check?.(r);
      results.push(r);
      completed.push(step);
      observer.done?.(step, r);
      if (!r.skipped) maybeCrash();
    } catch (error) {
      observer.failed?.(step, error);
      await undoAll(runner, completed, observer);
      throw error;
    }
  }
  return { results };
}

async function undoAll(runner: Runner, completed: Step[], observer: PlanObserver): Promise<void> {
  for (const step of [...completed].reverse()) {
    const sink = step.undoRecord === undefined ? undefined : journalSinkOf(runner.target);
    if (!sink && !step.undo?.length) continue;
    try {
      if (sink) await sink.append(step.undoRecord!);
      else for (const u of step.undo!) await runner.run(u);
      observer.undo?.(step);
    } catch (error) {
      // Keep undoing the rest; the original error is what the caller reports.
      observer.undo?.(step, error);
    }
  }
}
