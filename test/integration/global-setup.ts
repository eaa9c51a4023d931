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
import { attach, down, ensureImage, envLunSectorBytes, resolveStateDir, up, type Testbed } from '../testbed/index.js';
import { bringUpCluster } from './cluster.js';
import { clearReadiness, recordReadiness } from './readiness.js';
import { testbedCount } from './testbedCount.js';
import { CLUSTER_NODES } from './clusterShape.js';

const log = (s: string) => process.stderr.write(`[testbed] ${s}\n`);

export function stateDirs(count = testbedCount()): string[] {
  const first = resolveStateDir();
  return Array.from({ length: count }, (_, i) => (i === 0 ? first : `${first}-${i + 1}`));
}

/**
 * The LUN's physical sector size for the suite's clusters: 512 bytes. 4096-byte sectors (what
 * tgt gives a file here, and what many SANs report) space sanlock's leases 8 MiB apart, and
 * every lease operation then reads eight times as much (README "Lock-manager I/O": about
 * 200 MiB per clone create + map + unmap against 30), which under TCG is guest CPU every
 * test waits for. The 4K layout is still proven in every run: repositories.test's second LUN
 * keeps tgt's 4096 and checks its leases are 8 MiB apart. COWSTACK_TESTBED_LUN_PBS=4096 runs
 * the whole suite on 4K LUNs.
 */
const lunSectorBytes = (): 512 | 4096 => (process.env.COWSTACK_TESTBED_LUN_PBS ? envLunSectorBytes() : 512);

async function bringUp(stateDir: string, tag: string, i: number): Promise<{ tb: Testbed; reused: boolean }> {
  const t0 = Date.now();
  const say = (s: string) => log(`${tag}${s}`);
  let tb: Testbed | undefined;
  if (process.env.COWSTACK_TESTBED_REUSE) tb = await attach(stateDir).catch(() => undefined);
  const reused = Boolean(tb);
  if (!tb) {
    tb = await up({ ...CLUSTER_NODES(i), stateDir, log: say, lunSectorBytes: lunSectorBytes() });
    say(
      `booted ${tb.nodes.length} nodes in ${((Date.now() - t0) / 1000).toFixed(0)}s ` +
        `(LUN: ${lunSectorBytes()}-byte physical sectors)`,
    );
  }
  // Idempotent: on a reused testbed it only checks that everything is in place.
  const c = await bringUpCluster(tb, say);
  say(`cluster up in ${c.seconds.toFixed(0)}s (device ${c.device})`);
  return { tb, reused };
}

export default function setup(project: TestProject) {
  const dirs = stateDirs();
  for (const d of dirs) clearReadiness(d);
  // Not awaited: the clusters boot while the unit tests run (vitest waits for a global setup
  // before it starts any file, and the unit phase is a minute and a half of the bring-up's
  // four). Each integration file waits for its cluster's readiness record (testbeds.ts).
  const bringUps = (async () => {
    const image = await ensureImage({ log });
    log(`image ${image.hash} ${image.built ? `built in ${image.seconds.toFixed(0)}s` : 'cached'}`);
    // All at once: booting and lock-space start-up mostly wait, so they overlap well. Each is
    // started even when another fails, and all of them are stopped on a failure.
    return Promise.allSettled(
      dirs.map(async (d, i) => {
        try {
          const r = await bringUp(d, dirs.length > 1 ? `#${i + 1} ` : '', i);
          recordReadiness(d, { ok: true });
          return r;
        } catch (e) {
          recordReadiness(d, { ok: false, error: e instanceof Error ? e.message : String(e) });
          // A cluster that booted but could not be brought up is stopped here: the teardown
          // below sees only the ones that came up, and running guests keep vitest from exiting.
          if (!process.env.COWSTACK_TESTBED_KEEP && !process.env.COWSTACK_TESTBED_REUSE)
            await down(d).catch((err: unknown) => log(`stopping ${d} after its failure: ${String(err)}`));
          throw e;
        }
      }),
    );
  })().catch((e: unknown) => {
    // The image could not be built: no cluster can come up.
    const error = e instanceof Error ? e.message : String(e);
    for (const d of dirs) recordReadiness(d, { ok: false, error });
    return [] as PromiseSettledResult<{ tb: Testbed; reused: boolean }>[];
  });
  project.provide('testbedStates', dirs);
  return async () => {
    const settled = await bringUps;
    const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
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
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** One state dir per testbed cluster; a test file uses the one of its worker (testbeds.ts). */
    testbedStates: string[];
  }
}
