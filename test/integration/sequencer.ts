/**
 * Integration files run on COWSTACK_TESTBEDS clusters at once; the pool hands them out in
 * this order, so the longest go first (longest-processing-time-first keeps the clusters
 * finishing together). Weights are measured run times in seconds on the project's machine;
 * a file not listed runs last. From the full run of 2026-11-30 11:00 (cache: with the flush
 * test added since; catalog: its own runs). Set as the root config's sequencer (vitest.config.ts).
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SECONDS: Record<string, number> = {
  // First: the only file that needs the three-node cluster takes it while it is free (testbeds.ts).
  'distribute.test.ts': 10_000,
  'crash.test.ts': 730,
  'nodelocal.test.ts': 420,
  'clones.test.ts': 500,
  'cache.test.ts': 390,
  'races.test.ts': 310,
  'tm.test.ts': 400,
  'backup.test.ts': 530, // with the live backups of a running VM (session 7) and TM restore (session 8)
  'migrate.test.ts': 200,
  'target.test.ts': 175,
  'foundation.test.ts': 115,
  'sizing.test.ts': 105,
  'repositories.test.ts': 160, // a second LUN, its VG's init and join (session 8)
  'unprivileged.test.ts': 95,
  'catalog.test.ts': 90,
};

const weight = (spec: TestSpecification): number => SECONDS[spec.moduleId.split('/').pop() ?? ''] ?? 0;

export default class LongestFirst extends BaseSequencer {
  // Vitest takes the sequencer from the root config, so it sees unit files too (weight 0):
  // they keep vitest's own order, and run first anyway (their project's groupOrder is 0).
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...(await super.sort(files))].sort((a, b) => weight(b) - weight(a));
  }
}
