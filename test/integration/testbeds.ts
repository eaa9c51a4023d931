/**
 * Which testbed cluster a test file runs on. Vitest runs the integration files in
 * COWSTACK_TESTBEDS workers at once (vitest.config.ts); a worker runs one file at a time and
 * carries VITEST_POOL_ID = 1..workers, so worker N always uses cluster N and no two files
 * ever share a cluster at the same time.
 */
import { inject } from 'vitest';
import { attach, type Testbed } from '../testbed/index.js';

export function testbedCount(): number {
  const n = Number(process.env.COWSTACK_TESTBEDS ?? 2);
  if (!Number.isInteger(n) || n < 1 || n > 4) throw new Error(`COWSTACK_TESTBEDS must be 1..4 (got ${process.env.COWSTACK_TESTBEDS})`);
  return n;
}

export function myTestbedState(): string {
  const dirs = inject('testbedStates');
  const id = Number(process.env.VITEST_POOL_ID ?? 1);
  return dirs[(id - 1) % dirs.length]!;
}

export const attachMine = (): Promise<Testbed> => attach(myTestbedState());

/** The repository LUN's stable path on the nodes of this cluster. */
export const repoDevice = (tb: Pick<Testbed, 'portal' | 'targetIqn'>): string => `/dev/disk/by-path/ip-${tb.portal}-iscsi-${tb.targetIqn}-lun-1`;
