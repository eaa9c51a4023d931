/**
 * Garbage collection of a VM manager's disks: removing a set of LVs (a disk, or every disk of
 * a VM, with their snapshots) in an order that never strands a clone without its parent.
 */
import { refused } from '../exec/errors.js';
import { discardClone } from './clones.js';
import type { NodeSession } from './node.js';
import { removeImage } from './images.js';
import type { CowObj } from './metadata.js';
import { type NodeState, observeNode } from './observe.js';

/**
 * Remove LVs leaf first (a snapshot only after what stands on it), observing again after
 * each round but the last. Refuses when what is left has dependants outside the set. Returns
 * what it removed. With `seen` (the caller's observation, under the node lock), the first
 * round plans from it; a single disk without snapshots then costs no observation of its own.
 */
export async function removeLvs(ctx: NodeSession, names: Set<string>, seen?: NodeState): Promise<string[]> {
  const removed: string[] = [];
  let state = seen ?? (await observeNode(ctx, { caches: 'auto' }));
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
    state = await observeNode(ctx, { caches: 'auto' });
  }
}

/**
 * An image and its persistent lineage (`<image>-p<K>`, their snapshots `-s<N>`: the sync-backs
 * of a persistent image, core/vmDisks.ts) removed together, as OpenNebula removes an image.
 * Anything else that descends from it (a VM's disk, a clone made by hand) refuses the whole
 * removal before anything changes, naming what depends on it. Returns what it removed.
 */
export async function removeImageAndLineage(ctx: NodeSession, name: string): Promise<string[]> {
  const state = await observeNode(ctx, { caches: 'auto' });
  const o = state.repo.byName.get(name);
  if (!o) return [];
  if (o.kind !== 'image') throw refused(`${ctx.vg}/${name} is a clone, not an image`, 'check the image SOURCE');
  const lineage = new RegExp(`^${name.replace(/[.+]/g, '\\$&')}-p(0|[1-9][0-9]*)(-s(0|[1-9][0-9]*))?$`);
  const names = new Set([name]);
  const others: string[] = [];
  for (let todo: CowObj[] = [o]; todo.length;) {
    const next: CowObj[] = [];
    for (const p of todo)
      for (const k of state.repo.childrenOf(p)) {
        if (lineage.test(k.name)) next.push(k);
        else others.push(`${k.name} (on ${p.name})`);
      }
    next.forEach((k) => names.add(k.name));
    todo = next;
  }
  if (others.length)
    throw refused(
      `image ${ctx.vg}/${name} cannot be removed: ${others.length} clone(s) depend on it: ${others.join(', ')}`,
      'terminate the VMs using it (or remove or flatten those clones) first',
      { children: others },
    );
  return removeLvs(ctx, names, state);
}
