/**
 * Where journal records go while an operation holds a node's lock: the lock's keeper on that
 * node appends every line written to it to the node's journal log (tools/flock.ts), so a
 * record costs no command of its own. Keyed by the runner's target: every runner of one
 * node (with or without sudo) writes to that node's log. Without a sink (no lock: --dry-run,
 * core called directly) a record is written by its own command (core/journal.ts).
 */
export interface JournalSink {
  /** Resolves once the keeper has echoed the line, i.e. written it to the log. */
  append(line: string): Promise<void>;
}

const sinks = new Map<string, JournalSink>();

export function setJournalSink(target: string, sink: JournalSink | undefined): void {
  if (sink) sinks.set(target, sink);
  else sinks.delete(target);
}

export const journalSinkOf = (target: string): JournalSink | undefined => sinks.get(target);
