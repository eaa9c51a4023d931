/**
 * Garbage collection of a VM manager's disks: removing a set of LVs (a disk, or every disk of
 * a VM, with their snapshots) in an order that never strands a clone without its parent.
 */
import { refused } from '../exec/errors.js';
import { discardClone } from './clones.js';
import type { NodeSession } from './node.js';
import { removeImage } from './images.js';
import type { CowObj } from './metadata.js';
import { observe, type NodeState } from './observe.js';

/**
 * Remove LVs leaf first (a snapshot only after what stands on it), observing again after
 * each round but the last. Refuses when what is left has dependants outside the set. Returns
 * what it removed. With `seen` (the caller's observation, under the node lock), the first
 * round plans from it; a single disk without snapshots then costs no observation of its own.
 */
export async function removeLvs(ctx: NodeSession, names: Set<string>, seen?: NodeState): Promise<string[]> {
  const removed: string[] = [];
  let state = seen ?? (await observe(ctx.runner, ctx.vg, ctx.scope, ctx.cacheVg));
  for (;;) {
    const left = [...names].map((n) => state.repo.byName.get(n)).filter((o): o is CowObj => Boolean(o));
    if (!left.length) return removed;
    const leaves = left.filter((o) => !state.repo.childrenOf(o).length);
    if (!leaves.length) {
      const deps = left.flatMap((o) => state.repo.childrenOf(o).map((c) => `${c.name} (on ${o.name})`));
      throw refused(
        `cannot remove ${left.map((o) => o.name).join(', ')}: other clones depend on them: ${deps.join(', ')}`,
        'remove or flatten those clones first',
      );
    }
    for (const [i, o] of leaves.entries()) {
      // The round's observation holds for its first removal only: each one changes the node.
      if (o.kind === 'clone') await discardClone(ctx, o.name, i === 0 ? { seen: state } : {});
      else await removeImage(ctx, o.name);
      removed.push(o.name);
    }
    if (leaves.length === left.length) return removed;
    state = await observe(ctx.runner, ctx.vg, ctx.scope, ctx.cacheVg);
  }
}
