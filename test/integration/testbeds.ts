/**
 * Which testbed cluster a test file runs on. Vitest runs the integration files
 * COWSTACK_TESTBEDS at a time (vitest.config.ts), each in its own worker process; a file
 * claims a cluster that no running file holds, for as long as its process lives.
 *
 * Why a claim file and not VITEST_POOL_ID: with a unit and an integration project in one run,
 * vitest 4.1 gives every integration worker pool id 1 although two run at once (checked with
 * a probe: seven files, two at a time, all "pool 1"), and two files on one cluster break
 * each other (one powers a node off, the other lists devices it does not own).
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';
import { attach, type Testbed } from '../testbed/index.js';
import { readiness } from './readiness.js';
import { CLUSTER_NODES } from './clusterShape.js';

const claimFile = (stateDir: string) => path.join(stateDir, 'claimed-by-pid');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take the cluster in stateDir for this process: created exclusively, or left by a dead process. */
function claim(stateDir: string): boolean {
  const file = claimFile(stateDir);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = Number(readFileSync(file, 'utf8').trim() || 0);
    if (holder === process.pid) return true;
    if (holder && alive(holder)) return false;
    // A file whose process died (or was killed) left it: take it over.
    unlinkSync(file);
  }
  return false;
}

const held = new Set<string>();
process.on('exit', () => {
  for (const dir of held) {
    try {
      if (Number(readFileSync(claimFile(dir), 'utf8')) === process.pid) unlinkSync(claimFile(dir));
    } catch {
      // already gone (testbed stopped)
    }
  }
});

/**
 * A cluster that is up, has at least `nodes` nodes and that no running file holds: the
 * smallest such one, and a larger one only while every smaller fitting cluster is up and
 * held. So a two-node file never takes the three-node cluster while the two-node one is
 * still booting, and distribute.test (first in the sequencer's order) finds it free.
 * Waits (bounded) while all are held or still coming up (the global setup boots them while
 * the unit tests run). The file sees only its first `nodes` nodes (default 2): a file written
 * for two nodes behaves the same on the cluster that has a third (it joined the lockspace;
 * distribute.test, the only file that uses it, powers it off when it is done).
 */
export async function attachMine(timeoutMs = 1_100_000, nodes = 2): Promise<Testbed> {
  const fitting = inject('testbedStates')
    .map((dir, i) => ({ dir, size: CLUSTER_NODES(i).nodes }))
    .filter((c) => c.size >= nodes)
    .sort((a, b) => a.size - b.size);
  if (!fitting.length) throw new Error(`no testbed cluster of this run has ${nodes} nodes`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mine = fitting.find(
      (c) =>
        readiness(c.dir) === 'ready' &&
        fitting.every((s) => s.size >= c.size || readiness(s.dir) === 'ready') &&
        claim(c.dir),
    );
    if (mine) {
      held.add(mine.dir);
      const tb = await attach(mine.dir);
      return { ...tb, nodes: tb.nodes.slice(0, nodes) };
    }
    // The previous file's worker may still be exiting: its claim goes with its process.
    if (Date.now() > deadline)
      throw new Error(
        `no free testbed cluster (up, unclaimed, ${nodes} nodes) among ${fitting.map((c) => c.dir).join(', ')} ` +
          `after ${timeoutMs / 1000} s`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The repository LUN's stable path on the nodes of this cluster. */
export const repoDevice = (tb: Pick<Testbed, 'portal' | 'targetIqn'>): string =>
  `/dev/disk/by-path/ip-${tb.portal}-iscsi-${tb.targetIqn}-lun-1`;
