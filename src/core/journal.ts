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
}

const fileOf = (vg: string, name: string, op: JournalOp) => `${JOURNAL_DIR}/${vg}.${name}.${op}.json`;

export function beginStep(entry: Omit<JournalEntry, 'started'>): Step {
  const full: JournalEntry = { ...entry, started: new Date().toISOString() };
  return {
    title: `journal: ${entry.op} ${entry.vg}/${entry.name} begins`,
    req: {
      argv: ['install', '-D', '-m', '0600', STDIN_PATH, fileOf(entry.vg, entry.name, entry.op)],
      kind: 'write',
      root: true,
      input: `${JSON.stringify(full)}\n`,
    },
    // If the plan is undone, nothing is in flight any more.
    undo: [endStep(entry).req],
  };
}

export function endStep(entry: Pick<JournalEntry, 'vg' | 'name' | 'op'>): Step {
  return {
    title: `journal: ${entry.op} ${entry.vg}/${entry.name} done`,
    req: { argv: ['rm', '-f', '--', fileOf(entry.vg, entry.name, entry.op)], kind: 'write', root: true },
  };
}

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
