/**
 * Boots the testbed once for the whole integration run and brings the cluster up with
 * cowstack's own commands. There is no skip path: if the testbed cannot be built or
 * booted, the run fails. COWSTACK_TESTBED_KEEP=1 leaves it running for debugging, and
 * COWSTACK_TESTBED_REUSE=1 attaches to one that is already up.
 */
import type { TestProject } from 'vitest/node';
import { attach, down, ensureImage, up, type Testbed } from '../testbed/index.js';
import { bringUpCluster } from './cluster.js';

const log = (s: string) => process.stderr.write(`[testbed] ${s}\n`);

export default async function setup(project: TestProject) {
  const t0 = Date.now();
  const image = await ensureImage({ log });
  log(`image ${image.hash} ${image.built ? `built in ${image.seconds.toFixed(0)}s` : 'cached'}`);
  let tb: Testbed | undefined;
  if (process.env.COWSTACK_TESTBED_REUSE) tb = await attach().catch(() => undefined);
  const reused = Boolean(tb);
  if (!tb) {
    tb = await up({ nodes: 2, log });
    log(`booted ${tb.nodes.length} nodes in ${((Date.now() - t0) / 1000).toFixed(0)}s`);
  }
  // Idempotent: on a reused testbed it only checks that everything is in place.
  const c = await bringUpCluster(tb, log);
  log(`cluster up in ${c.seconds.toFixed(0)}s (device ${c.device})`);
  project.provide('testbedState', tb.stateDir);
  project.provide('repoDevice', `/dev/disk/by-path/ip-${tb.portal}-iscsi-${tb.targetIqn}-lun-1`);
  return async () => {
    if (process.env.COWSTACK_TESTBED_KEEP || reused) {
      log(`left running (state ${tb!.stateDir}); stop it with: npm run testbed -- down`);
      return;
    }
    await down(tb!.stateDir);
    log('testbed stopped');
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    testbedState: string;
    repoDevice: string;
  }
}
