import { defineConfig } from 'vitest/config';
import LongestFirst from './test/integration/sequencer.js';
import { testbedCount } from './test/integration/testbedCount.js';

// Integration files run COWSTACK_TESTBEDS (default 2) at a time, each worker on its own
// testbed cluster (test/integration/testbeds.ts); 1 runs them one after another.
const testbeds = testbedCount();

// Two projects: unit tests are fast and hermetic (recording runner, fixtures); integration
// tests run against booted testbed clusters, after the unit tests (groupOrder).
export default defineConfig({
  test: {
    // Longest integration files first (vitest reads the sequencer from the root config only).
    sequence: { sequencer: LongestFirst },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Some unit tests start the CLI (node) a few times; they run while the testbed's
          // guests boot (global-setup.ts) and share the cores with them, so 5 s is too short.
          testTimeout: 30_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          fileParallelism: testbeds > 1,
          maxWorkers: testbeds,
          testTimeout: 600_000,
          hookTimeout: 1_200_000,
          sequence: { concurrent: false, groupOrder: 1 },
        },
      },
    ],
  },
});
