import type { RunResult } from './types.js';

/** The result of a step that ran no command of its own (a journal record the lock's keeper wrote). */
export const noCommandResult = (): RunResult => ({ argv: [], exitCode: 0, stdout: '', stderr: '', durationMs: 0 });
