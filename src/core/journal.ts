/**
 * The node-local journal of multi-step operations in flight. An entry begins before the
 * first step and ends after the last, so after a crash `cowstack recover` knows which
 * operation was interrupted and whether to finish it (commit, unmap) or undo it (map,
 * create, import). Cluster-wide state is never kept here: that is in LV tags.
 *
 * Under the node lock an entry is two lines in the VG's journal log (`<vg>.log`), written
 * by the lock's keeper: a `begin` record and an `end` record, no command of their own. An
 * entry whose `begin` has no later `end` is in flight. Without the lock (--dry-run, core
 * called directly) an entry is a file of its own (`<vg>.<name>.<op>.json`), written and
 * removed by a command each; entries of both kinds are read back alike.
 */
import type { Runner } from '../exec/types.js';
import { listDir, readFile, writeRootFileReq } from '../tools/files.js';
import { appendLogReq, JOURNAL_DIR, journalLog } from '../tools/flock.js';
import { removeRootFileReq } from '../tools/host.js';
import type { Step } from './plan.js';

export { JOURNAL_DIR };

export type JournalOp =
  | 'map'
  | 'unmap'
  | 'commit'
  | 'create-clone'
  | 'create-image'
  | 'import'
  | 'flatten'
  | 'discard'
  | 'migrate-prepare'
  | 'migrate-release'
  | 'migrate-acquire'
  | 'stage'
  | 'live-backup'
  | 'restore';

export interface JournalEntry {
  op: JournalOp;
  vg: string;
  name: string;
  uuid?: string;
  started: string;
  /** The operation that wrote it (absent in entries written before operation ids). */
  opId?: string;
  /** migrate-release: the hand-over record (handoverTag) it writes, so that recover can finish it. */
  handover?: string;
  /** live-backup: the backup point the disk's top becomes (core/livePoint.ts). */
  point?: string;
  /**
   * live-backup: the new top's COW (its LV uuid), recorded once it is made and its header zeroed:
   * only from then on does a snapshot header on it mean the VM's device was switched onto it.
   */
  next?: string;
  /** live-backup of a write-back cached disk: the cache VG of its old and new caches (core/liveWriteback.ts). */
  writeback?: string;
  /** restore: the sealed image the disk's top (the entry's name) becomes a clone of (core/restoreDisk.ts). */
  restored?: string;
}

/** A line of the journal log. `lock`: who took the node lock (named to a waiter that gives up). */
export type JournalRecord =
  | ({ rec: 'begin' } & JournalEntry)
  | { rec: 'end'; op: JournalOp; vg: string; name: string; opId?: string }
  | { rec: 'lock'; pid: number; host: string; command: string; since: string; opId: string };

export const recordLine = (r: JournalRecord): string => `${JSON.stringify(r)}\n`;

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

/** The entry's file, written whole by install(1); the step's own title says what it is. */
function journalFileReq(file: string, content: string) {
  const { title: _written, ...req } = writeRootFileReq(file, content, '0600');
  return req;
}

export function beginStep(entry: Omit<JournalEntry, 'started' | 'opId'>): Step {
  const opId = operationId;
  const full: JournalEntry = { ...entry, started: new Date().toISOString(), ...(opId ? { opId } : {}) };
  const file = fileOf(entry.vg, entry.name, entry.op);
  const end = removeStep(entry, file);
  return {
    title: `journal: ${entry.op} ${entry.vg}/${entry.name} begins`,
    req: journalFileReq(file, `${JSON.stringify(full)}\n`),
    record: recordLine({ rec: 'begin', ...full }),
    // If the plan is undone, nothing is in flight any more.
    undo: [end.req],
    undoRecord: end.record,
  };
}

/**
 * The end of this operation's entry, or (recover) of an entry read back: from a file of its
 * own, that file is removed; from the log, an `end` record is appended to that log.
 */
export function endStep(entry: Pick<JournalEntry, 'vg' | 'name' | 'op'> & { file?: string; fromLog?: boolean }): Step {
  if (entry.fromLog) {
    const line = endRecord(entry);
    return {
      title: `journal: ${entry.op} ${entry.vg}/${entry.name} done`,
      req: appendLogReq(entry.file ?? journalLog(entry.vg), line),
      record: line,
    };
  }
  if (entry.file) return fileEnd({ ...entry, file: entry.file });
  return removeStep(entry, fileOf(entry.vg, entry.name, entry.op));
}

/**
 * Ends the entry both ways: the `end` record closes a `begin` in the log, the file removal
 * an entry file (a file written without the lock, or by an older release, is read back and
 * must go; the log's `end` record alone would leave it). Under the lock only the record is
 * written: an entry read from a file is removed by its own command in recover (fileEnd).
 */
const removeStep = (entry: Pick<JournalEntry, 'vg' | 'name' | 'op'>, file: string): Step => ({
  title: `journal: ${entry.op} ${entry.vg}/${entry.name} done`,
  req: removeRootFileReq(file),
  record: endRecord(entry),
});

/** The `end` record that closes an entry's `begin` in the log. */
const endRecord = (entry: Pick<JournalEntry, 'vg' | 'name' | 'op'>): string =>
  recordLine({
    rec: 'end',
    op: entry.op,
    vg: entry.vg,
    name: entry.name,
    ...(operationId ? { opId: operationId } : {}),
  });

/** Ends an entry read back from a file of its own: that file is removed (lock or not). */
export function fileEnd(entry: Pick<JournalEntry, 'vg' | 'name' | 'op'> & { file: string }): Step {
  const { record: _record, ...step } = removeStep(entry, entry.file);
  return step;
}

export type ReadEntry = JournalEntry & { file: string; fromLog?: boolean };

export async function readJournal(runner: Runner): Promise<ReadEntry[]> {
  const out: ReadEntry[] = [];
  for (const f of await listDir(runner, JOURNAL_DIR)) {
    if (f.endsWith('.log')) {
      out.push(...inFlight(`${JOURNAL_DIR}/${f}`, (await readFile(runner, `${JOURNAL_DIR}/${f}`)) ?? ''));
      continue;
    }
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

/** The entries of a journal log whose last record is a `begin` (a torn last line is ignored). */
export function inFlight(file: string, text: string): ReadEntry[] {
  const open = new Map<string, ReadEntry>();
  for (const line of text.split('\n')) {
    let r: JournalRecord;
    try {
      r = JSON.parse(line) as JournalRecord;
    } catch {
      continue;
    }
    if (r.rec !== 'begin' && r.rec !== 'end') continue;
    const key = `${r.vg}/${r.name}/${r.op}`;
    if (r.rec === 'end') open.delete(key);
    else {
      const { rec: _rec, ...entry } = r;
      open.set(key, { ...entry, file, fromLog: true });
    }
  }
  return [...open.values()];
}

export { journalLog };
