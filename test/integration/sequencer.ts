/**
 * Integration files run on COWSTACK_TESTBEDS clusters at once; the pool hands them out in
 * this order, so the longest go first (longest-processing-time-first keeps the clusters
 * finishing together). Weights are measured run times in seconds on the project's machine;
 * a file not listed runs last. From the full run of 2026-12-01 06:31 (at 21c1c51; the first files'
 * times include their wait for the bring-up), backup.test and migrate.test raised by what the
 * write-back live points and the libvirt migration added in their own runs; crash.test and
 * backup.test from their own runs of 2026-12-02 (power-cut live point, writes through a switch).
 * Set as the root config's sequencer (vitest.config.ts).
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SECONDS: Record<string, number> = {
  // First: the only file that needs the three-node cluster takes it while it is free (testbeds.ts).
  'distribute.test.ts': 10_000,
  'crash.test.ts': 490,
  'backup.test.ts': 470,
  'clones.test.ts': 270,
  'cache.test.ts': 225,
  'nodelocal.test.ts': 220,
  'tm.test.ts': 175,
  'repositories.test.ts': 155,
  'races.test.ts': 150,
  'migrate.test.ts': 130,
  'target.test.ts': 105,
  'sizing.test.ts': 65,
  'foundation.test.ts': 60,
  'unprivileged.test.ts': 50,
  'catalog.test.ts': 20,
};

const weight = (spec: TestSpecification): number => SECONDS[spec.moduleId.split('/').pop() ?? ''] ?? 0;

export default class LongestFirst extends BaseSequencer {
  // Vitest takes the sequencer from the root config, so it sees unit files too (weight 0):
  // they keep vitest's own order, and run first anyway (their project's groupOrder is 0).
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...(await super.sort(files))].sort((a, b) => weight(b) - weight(a));
  }
}
