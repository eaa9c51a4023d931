/**
 * Garbage collection of a VM manager's disks: removing a set of LVs (a disk, or every disk of
 * a VM, with their snapshots) in an order that never strands a clone without its parent.
 */
import { refused } from '../exec/errors.js';
import { discardClone, type OpContext } from './clones.js';
import { removeImage } from './images.js';
import type { CowObj } from './metadata.js';
import { observe } from './observe.js';

/**
 * Remove LVs leaf first (a snapshot only after what stands on it), observing again after
 * each round. Refuses when what is left has dependants outside the set. Returns what it removed.
 */
export async function removeLvs(ctx: OpContext, names: Set<string>): Promise<string[]> {
  const removed: string[] = [];
  for (;;) {
    const state = await observe(ctx.runner, ctx.vg, ctx.scope);
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
    for (const o of leaves) {
      if (o.kind === 'clone') await discardClone(ctx, o.name);
      else await removeImage(ctx, o.name);
      removed.push(o.name);
    }
  }
}
