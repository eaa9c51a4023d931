/**
 * Integration files run on COWSTACK_TESTBEDS clusters at once; the pool hands them out in
 * this order, so the longest go first (longest-processing-time-first keeps the clusters
 * finishing together). Weights are measured run times in seconds on the project's machine;
 * a file not listed runs last. From the full run of 2026-11-30 06:28 (clones: after its import
 * test moved to a 4 MiB image, estimated from that test's share; catalog: its own run at 13:16).
 * Set as the root config's sequencer (vitest.config.ts).
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SECONDS: Record<string, number> = {
  'nodelocal.test.ts': 655,
  'crash.test.ts': 650,
  'clones.test.ts': 530,
  'cache.test.ts': 365,
  'races.test.ts': 295,
  'tm.test.ts': 285,
  'target.test.ts': 210,
  'foundation.test.ts': 120,
  'catalog.test.ts': 70,
  'unprivileged.test.ts': 75,
};

const weight = (spec: TestSpecification): number => SECONDS[spec.moduleId.split('/').pop() ?? ''] ?? 0;

export default class LongestFirst extends BaseSequencer {
  // Vitest takes the sequencer from the root config, so it sees unit files too (weight 0):
  // they keep vitest's own order, and run first anyway (their project's groupOrder is 0).
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...(await super.sort(files))].sort((a, b) => weight(b) - weight(a));
  }
}
