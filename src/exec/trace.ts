/**
 * COWSTACK_TRACE=FILE appends one JSON line per command run (time, pid, host, argv, ms, exit
 * code): where an operation spends its time, e.g. which LVM commands wait on the lock
 * manager. Written by the runners and, with the same format, by the test harness and the
 * testbed's ssh, so one file shows a whole test run.
 */
import { appendFileSync } from 'node:fs';

export function trace(entry: {
  target: string;
  argv: readonly string[];
  ms: number;
  exit: number;
  kind?: string;
}): void {
  const file = process.env.COWSTACK_TRACE;
  if (!file) return;
  try {
    appendFileSync(file, `${JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...entry })}\n`);
  } catch {
    // Tracing is a diagnostic aid: never let it fail a storage operation.
  }
}
