/**
 * A plan is an ordered list of steps, each one external command plus the commands that
 * undo it. Core modules compute plans from observed state; runPlan executes them and, if
 * a step fails, undoes the completed steps in reverse so nothing is left half-done.
 */
import { noCommandResult } from '../exec/results.js';
import type { RunRequest, RunResult, Runner } from '../exec/types.js';
import { journalSinkOf } from './journalSink.js';
import { isTransientLockError } from './locks.js';

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
}

export interface PlanObserver {
  start?(step: Step, index: number, total: number): void;
  done?(step: Step, result: RunResult): void;
  failed?(step: Step, error: unknown): void;
  undo?(step: Step, error?: unknown): void;
  /** A step failed with a transient lock manager error and is run again. */
  retry?(step: Step, error: unknown, attempt: number): void;
}

/**
 * A step whose lock could not be taken because of a transient lock manager error (a lease
 * I/O timeout, not a refusal) changed nothing: it is run again after a pause, up to
 * `attempts` times in all, before the plan is undone. Tests shorten the pause.
 */
export const transientRetry = { attempts: 3, pauseMs: 3_000 };

async function runStep(runner: Runner, step: Step, observer: PlanObserver): Promise<RunResult> {
  const sink = step.record === undefined ? undefined : journalSinkOf(runner.target);
  if (sink) {
    await sink.append(step.record!);
    return noCommandResult();
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await runner.run({ title: step.title, ...step.req });
    } catch (error) {
      if (attempt >= transientRetry.attempts || !isTransientLockError(error)) throw error;
      observer.retry?.(step, error, attempt);
      await new Promise((r) => setTimeout(r, transientRetry.pauseMs));
    }
  }
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

export async function runPlan(runner: Runner, steps: Step[], observer: PlanObserver = {}): Promise<PlanOutcome> {
  const results: RunResult[] = [];
  const completed: Step[] = [];
  for (const [i, step] of steps.entries()) {
    observer.start?.(step, i, steps.length);
    try {
      const r = await runStep(runner, step, observer);
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
