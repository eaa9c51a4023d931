/**
 * The journal's durability on the node: its directory and logs carry the synchronous-update
 * attribute (chattr +S, tools/flock.ts), so a record the node lock's keeper has written is
 * on disk before the step it precedes runs. A fresh node gets the attribute with the
 * directory (the first operation's lock); `install --node` gives it to a node an older
 * cowstack set up; `doctor` reports a node where it is missing.
 */
import type { Runner } from '../exec/types.js';
import * as flock from '../tools/flock.js';

export type JournalSync =
  /** No directory yet: the first operation makes it synchronous. */
  | { state: 'absent' }
  | { state: 'synchronous' }
  /** The directory or logs (or entry files) without the attribute. */
  | { state: 'lacking'; paths: string[] }
  /** lsattr failed: a file system without attributes (tmpfs), or another error in its words. */
  | { state: 'unknown'; error: string };

/** One lsattr of the directory and what is in it. */
export async function readJournalSync(runner: Runner): Promise<JournalSync> {
  const r = await runner.run(flock.attrsReq());
  if (r.exitCode !== 0) {
    const error = r.stderr.trim() || `lsattr exited with ${r.exitCode}`;
    return /No such file or directory/.test(error) ? { state: 'absent' } : { state: 'unknown', error };
  }
  const paths = [...flock.parseSyncAttrs(r.stdout)]
    .filter(([p, sync]) => !sync && (p === flock.JOURNAL_DIR || /\.(log|json)$/.test(p)))
    .map(([p]) => p);
  return paths.length ? { state: 'lacking', paths } : { state: 'synchronous' };
}

/**
 * The journal directory, made synchronous before its first record. A file system without the
 * attribute does not stop the node (chattr fails, the directory stays): `doctor` reports it.
 */
export async function makeJournalDir(runner: Runner): Promise<void> {
  await runner.run(flock.lockDirReq());
  await runner.run({ ...flock.syncAttrReq(), allowFailure: true });
}
