import { defineConfig } from 'vitest/config';

// Two projects: unit tests are fast and hermetic (recording runner, fixtures);
// integration tests share one booted testbed cluster and therefore run serially.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 600_000,
          hookTimeout: 1_200_000,
          sequence: { concurrent: false },
        },
      },
    ],
  },
});
