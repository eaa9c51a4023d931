import type { RunRequest, RunResult, Runner } from './types.js';

export interface PlannedCommand {
  host: string;
  argv: readonly string[];
  root: boolean;
  title?: string;
}

/** What --dry-run reports for a request on a host (also for plans made as data, e.g. catalog stage). */
export const plannedCommand = (host: string, req: RunRequest): PlannedCommand => ({
  host,
  argv: req.argv,
  root: Boolean(req.root),
  title: req.title,
});

/** A planned line that is no command of its own. */
export const plannedNote = (host: string, title: string): PlannedCommand => ({ host, argv: [], root: false, title });

/**
 * --dry-run: reads run for real (so plans are computed from the true state), writes are
 * recorded as the exact argv that would run and reported by the CLI at the end.
 */
export class DryRunRunner implements Runner {
  readonly planned: PlannedCommand[] = [];

  constructor(private readonly inner: Runner) {}

  get target(): string {
    return this.inner.target;
  }

  async run(req: RunRequest): Promise<RunResult> {
    if (req.kind === 'read') return this.inner.run(req);
    this.planned.push(plannedCommand(this.inner.target, req));
    return { argv: req.argv, exitCode: 0, stdout: '', stderr: '', skipped: true, durationMs: 0 };
  }

  /** A planned line that is no command of its own (a journal record written to the node lock's stdin). */
  note(title: string): void {
    this.planned.push(plannedNote(this.inner.target, title));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
