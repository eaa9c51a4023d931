export * from './types.js';
export * from './errors.js';
export { shellQuote, shellJoin } from './quote.js';
export { LocalRunner } from './localRunner.js';
export { SshRunner, type SshOptions } from './sshRunner.js';
export { DryRunRunner, type PlannedCommand } from './dryRunRunner.js';
export { RecordingRunner, type Expectation } from './recordingRunner.js';
export type { RunnerHooks } from './baseRunner.js';

import { DryRunRunner } from './dryRunRunner.js';
import { LocalRunner } from './localRunner.js';
import { SshRunner } from './sshRunner.js';
import type { RunnerHooks } from './baseRunner.js';
import type { Runner, SudoPolicy } from './types.js';

export interface RunnerOptions {
  host?: string;
  sudo?: SudoPolicy;
  dryRun?: boolean;
  sshConfig?: string;
  hooks?: RunnerHooks;
}

/** The runner for one command invocation: where, as whom, and whether writes happen. */
export function createRunner(opts: RunnerOptions = {}): Runner {
  const base: Runner =
    opts.host && opts.host !== 'local' && opts.host !== 'localhost'
      ? new SshRunner(opts.host, opts.sudo, { configFile: opts.sshConfig }, opts.hooks)
      : new LocalRunner(opts.sudo, opts.hooks);
  return opts.dryRun ? new DryRunRunner(base) : base;
}
