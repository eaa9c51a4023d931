/**
 * Whether a testbed cluster is up: the global setup boots the clusters in the background and
 * records the outcome in the cluster's state dir; each integration file waits for it before
 * it claims the cluster (testbeds.ts). A failed bring-up fails every file with its error:
 * there is no skip path.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export type Readiness = { ok: true } | { ok: false; error: string };

const file = (stateDir: string) => path.join(stateDir, 'cluster-ready.json');

export function clearReadiness(stateDir: string): void {
  rmSync(file(stateDir), { force: true });
}

export function recordReadiness(stateDir: string, r: Readiness): void {
  mkdirSync(stateDir, { recursive: true });
  // Written whole under another name and renamed: a waiting file never reads half a record.
  writeFileSync(`${file(stateDir)}.tmp`, JSON.stringify(r));
  renameSync(`${file(stateDir)}.tmp`, file(stateDir));
}

/**
 * The cluster's recorded bring-up outcome, or undefined while it is still coming up. A failed
 * bring-up throws its error.
 */
export function readiness(stateDir: string): 'ready' | undefined {
  if (!existsSync(file(stateDir))) return undefined;
  const r = JSON.parse(readFileSync(file(stateDir), 'utf8')) as Readiness;
  if (!r.ok) throw new Error(`testbed ${stateDir} could not be brought up: ${r.error}`);
  return 'ready';
}
