/**
 * The node-local journal of multi-step operations in flight. An entry is written before
 * the first step and removed after the last, so after a crash `cowstack recover` knows
 * which operation was interrupted and whether to finish it (commit, unmap) or undo it
 * (map, create, import). Cluster-wide state is never kept here: that is in LV tags.
 */
import type { Runner } from '../exec/types.js';
import { listDir, readFile, STDIN_PATH } from '../tools/files.js';
import type { Step } from './plan.js';

export const JOURNAL_DIR = process.env.COWSTACK_JOURNAL_DIR ?? '/var/lib/cowstack/journal';

export type JournalOp = 'map' | 'unmap' | 'commit' | 'create-clone' | 'create-image' | 'import' | 'flatten' | 'discard';

export interface JournalEntry {
  op: JournalOp;
  vg: string;
  name: string;
  uuid?: string;
  started: string;
  /** The operation that wrote it (absent in entries written before operation ids). */
  opId?: string;
}

/**
 * The operation this process runs, set when it takes the node lock (core/nodeLock.ts), and
 * recorded in each entry it writes (recover reports it). It is deliberately not part of the
 * file name: the node lock already keeps two live operations apart, and an entry left by a
 * killed operation must be the one a re-run of that operation overwrites and closes. With
 * one file per run, a stale `map` entry would outlive a successful re-run, and a later
 * recover would tear that good mapping down as an interrupted map.
 */
let operationId: string | undefined;
export function setOperationId(id: string | undefined): void {
  operationId = id;
}

const fileOf = (vg: string, name: string, op: JournalOp) => `${JOURNAL_DIR}/${vg}.${name}.${op}.json`;

export function beginStep(entry: Omit<JournalEntry, 'started' | 'opId'>): Step {
  const opId = operationId;
  const full: JournalEntry = { ...entry, started: new Date().toISOString(), ...(opId ? { opId } : {}) };
  const file = fileOf(entry.vg, entry.name, entry.op);
  return {
    title: `journal: ${entry.op} ${entry.vg}/${entry.name} begins`,
    req: {
      argv: ['install', '-D', '-m', '0600', STDIN_PATH, file],
      kind: 'write',
      root: true,
      input: `${JSON.stringify(full)}\n`,
    },
    // If the plan is undone, nothing is in flight any more.
    undo: [removeStep(entry, file).req],
  };
}

/**
 * The end of this operation's entry, or (recover) of an entry read back: that one is
 * removed by the file it was read from (entries of a release that put the op id in the
 * file name are read and removed alike).
 */
export function endStep(entry: Pick<JournalEntry, 'vg' | 'name' | 'op'> & { file?: string }): Step {
  return removeStep(entry, entry.file ?? fileOf(entry.vg, entry.name, entry.op));
}

const removeStep = (entry: Pick<JournalEntry, 'vg' | 'name' | 'op'>, file: string): Step => ({
  title: `journal: ${entry.op} ${entry.vg}/${entry.name} done`,
  req: { argv: ['rm', '-f', '--', file], kind: 'write', root: true },
});

export async function readJournal(runner: Runner): Promise<Array<JournalEntry & { file: string }>> {
  const out: Array<JournalEntry & { file: string }> = [];
  for (const f of await listDir(runner, JOURNAL_DIR)) {
    if (!f.endsWith('.json')) continue;
    const file = `${JOURNAL_DIR}/${f}`;
    const text = await readFile(runner, file);
    try {
      out.push({ ...(JSON.parse(text ?? '') as JournalEntry), file });
    } catch {
      // A torn write (crash inside install) holds no decision: treat as absent, but report it.
      out.push({ op: 'map', vg: '', name: '', started: '', file });
    }
  }
  return out;
}
