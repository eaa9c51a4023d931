/**
 * Integration files run on COWSTACK_TESTBEDS clusters at once; the pool hands them out in
 * this order, so the longest go first (longest-processing-time-first keeps the clusters
 * finishing together). Weights are measured run times in seconds on the project's machine;
 * a file not listed runs last. Set as the root config's sequencer (vitest.config.ts).
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SECONDS: Record<string, number> = {
  'clones.test.ts': 870,
  'nodelocal.test.ts': 760,
  'crash.test.ts': 690,
  'cache.test.ts': 620,
  'tm.test.ts': 580,
  'races.test.ts': 350,
  'target.test.ts': 260,
  'foundation.test.ts': 140,
  'unprivileged.test.ts': 110,
};

const weight = (spec: TestSpecification): number => SECONDS[spec.moduleId.split('/').pop() ?? ''] ?? 0;

export default class LongestFirst extends BaseSequencer {
  // Vitest takes the sequencer from the root config, so it sees unit files too (weight 0):
  // they keep vitest's own order, and run first anyway (their project's groupOrder is 0).
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...(await super.sort(files))].sort((a, b) => weight(b) - weight(a));
  }
}
