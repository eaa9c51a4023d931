/**
 * Boots the testbed clusters once for the whole integration run and brings each cluster up
 * with cowstack's own commands. There is no skip path: if a testbed cannot be built or
 * booted, the run fails. COWSTACK_TESTBED_KEEP=1 leaves them running for debugging, and
 * COWSTACK_TESTBED_REUSE=1 attaches to ones that are already up.
 *
 * COWSTACK_TESTBEDS (default 2) independent clusters run the integration files two at a
 * time, one file per cluster (see testbeds.ts). Why: one cluster keeps about one host core
 * busy (the guest that runs the operation; the other mostly waits on it, and lease expiry
 * waits keep both idle), so on a 2-core machine a second cluster nearly halves the wall
 * time. Each has its own state dir (.testbed, .testbed-2), ports, tgtd and LUN.
 */
import type { TestProject } from 'vitest/node';
import { attach, down, ensureImage, resolveStateDir, up, type Testbed } from '../testbed/index.js';
import { bringUpCluster } from './cluster.js';
import { testbedCount } from './testbedCount.js';

const log = (s: string) => process.stderr.write(`[testbed] ${s}\n`);

export function stateDirs(count = testbedCount()): string[] {
  const first = resolveStateDir();
  return Array.from({ length: count }, (_, i) => (i === 0 ? first : `${first}-${i + 1}`));
}

async function bringUp(stateDir: string, tag: string): Promise<{ tb: Testbed; reused: boolean }> {
  const t0 = Date.now();
  const say = (s: string) => log(`${tag}${s}`);
  let tb: Testbed | undefined;
  if (process.env.COWSTACK_TESTBED_REUSE) tb = await attach(stateDir).catch(() => undefined);
  const reused = Boolean(tb);
  if (!tb) {
    tb = await up({ nodes: 2, stateDir, log: say });
    say(`booted ${tb.nodes.length} nodes in ${((Date.now() - t0) / 1000).toFixed(0)}s`);
  }
  // Idempotent: on a reused testbed it only checks that everything is in place.
  const c = await bringUpCluster(tb, say);
  say(`cluster up in ${c.seconds.toFixed(0)}s (device ${c.device})`);
  return { tb, reused };
}

export default async function setup(project: TestProject) {
  const image = await ensureImage({ log });
  log(`image ${image.hash} ${image.built ? `built in ${image.seconds.toFixed(0)}s` : 'cached'}`);
  const dirs = stateDirs();
  // All at once: booting and lock-space start-up mostly wait, so they overlap well. Each is
  // started even when another fails, and all of them are stopped on a failure.
  const settled = await Promise.allSettled(dirs.map((d, i) => bringUp(d, dirs.length > 1 ? `#${i + 1} ` : '')));
  const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  const stop = async () => {
    for (const { tb, reused } of ok) {
      if (process.env.COWSTACK_TESTBED_KEEP || reused) {
        log(
          `left running (state ${tb.stateDir}); stop it with: ` +
            `COWSTACK_TESTBED_STATE=${tb.stateDir} npm run testbed -- down`,
        );
        continue;
      }
      await down(tb.stateDir);
      log(`testbed ${tb.stateDir} stopped`);
    }
  };
  if (failed) {
    await stop();
    throw failed.reason;
  }
  project.provide(
    'testbedStates',
    ok.map(({ tb }) => tb.stateDir),
  );
  return stop;
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** One state dir per testbed cluster; a test file uses the one of its worker (testbeds.ts). */
    testbedStates: string[];
  }
}
