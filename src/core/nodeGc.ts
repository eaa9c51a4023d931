/**
 * Garbage collection of one node's devices: the read-only ancestors and images that no
 * mapping uses any more are unmapped and released (teardownPlan from the current
 * observation). Nothing in the repository is removed here.
 */
import { dmName } from './dmNames.js';
import { observeNode } from './observe.js';
import type { NodeSession } from './node.js';
import { runGuarded } from './executor.js';
import { bottomTables, teardownPlan } from './stack.js';

/** Unmap read-only ancestors nothing uses any more and release their shared activation. */
export async function collectGarbage(ctx: NodeSession, fromName: string): Promise<void> {
  // With the cache VG: a snapshot on a local replica does not hold the image LV open.
  const state = await observeNode(ctx, { caches: 'auto' });
  const o = state.repo.byName.get(fromName);
  if (!o) return;
  const parent = o.kind === 'clone' ? state.repo.byUuid.get(o.parentUuid) : undefined;
  const start = o.lv.activeLocally || state.devices.has(dmName('ro', o.uuid)) ? o : parent;
  if (!start) return;
  const steps = teardownPlan(state, start, {
    removeTop: false,
    scope: ctx.scope,
    tables: await bottomTables(ctx.runner, state),
  });
  if (steps.length) await runGuarded(ctx, steps);
}
