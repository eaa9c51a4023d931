/**
 * A plan is an ordered list of steps, each one external command plus the commands that
 * undo it. Core modules compute plans from observed state; runPlan executes them and, if
 * a step fails, undoes the completed steps in reverse so nothing is left half-done.
 */
import type { RunRequest, RunResult, Runner } from '../exec/types.js';

export interface Step {
  title: string;
  req: RunRequest;
  /** Commands that revert this step; run in order when a later step fails. */
  undo?: RunRequest[];
}

export interface PlanObserver {
  start?(step: Step, index: number, total: number): void;
  done?(step: Step, result: RunResult): void;
  failed?(step: Step, error: unknown): void;
  undo?(step: Step, error?: unknown): void;
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
      const r = await runner.run({ title: step.title, ...step.req });
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
    if (!step.undo?.length) continue;
    try {
      for (const u of step.undo) await runner.run(u);
      observer.undo?.(step);
    } catch (error) {
      // Keep undoing the rest; the original error is what the caller reports.
      observer.undo?.(step, error);
    }
  }
}
