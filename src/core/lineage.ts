/**
 * Small operations the OpenNebula driver needs on top of the clone lifecycle: renaming a
 * clone inside its lineage (disk snapshots, persistent sync-backs) and saving a live clone's
 * current content as a new sealed image (disk save-as of the running state).
 */
import { refused, usageError } from '../exec/errors.js';
import * as lvm from '../tools/lvm.js';
import { unmapClone } from './clones.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { dmName } from './dmNames.js';
import type { CowObj, ImageObj } from './metadata.js';
import { findClone, type NodeState, observeNode } from './observe.js';
import { lvRef } from './stack.js';
import { copyIntoNewImage, existingCopy, type FlattenResult } from './flatten.js';
import { EXTENT, roundUp, validateLvName } from './validate.js';
import { lookAgainAfterUdev } from './holders.js';

/**
 * Rename a clone. Children point at its LV UUID and dm names derive from UUIDs, so nothing
 * that depends on it changes; only the name a caller looks it up by. Idempotent: if `from`
 * is gone and `to` is a clone, the rename already happened.
 */
export async function renameClone(ctx: NodeSession, from: string, to: string): Promise<'renamed' | 'none'> {
  validateLvName(to, 'new name');
  const state = await observeNode(ctx);
  const src = state.repo.byName.get(from);
  const dst = state.repo.byName.get(to);
  if (!src && dst?.kind === 'clone') return 'none';
  const o = findClone(state, from);
  if (dst || state.repo.foreign.some((l) => l.name === to))
    throw refused(`${ctx.vg}/${to} already exists`, 'pick another name');
  await runGuarded(
    ctx,
    [{ title: `rename ${lvRef(o)} to ${to}`, req: lvm.renameLvReq(ctx.vg, from, to, ctx.scope) }],
    o,
  );
  return 'renamed';
}

/**
 * Copy what a live clone reads now into a new sealed image. The clone must not be open (a
 * running VM would change it under the copy); it is mapped here for the copy if it was not
 * mapped, and unmapped again afterwards, so the node is left as it was found.
 */
export async function saveLiveAsImage(ctx: NodeSession, name: string, imageName: string): Promise<FlattenResult> {
  validateLvName(imageName, 'image name');
  const state = await observeNode(ctx);
  const o = findClone(state, name);
  if (o.state !== 'live')
    throw usageError(`${lvRef(o)} is ${o.state}, not live`, `use cowstack clone flatten ${name} --to ${imageName}`);
  const marker = `cowstack_saved_from:${o.uuid}`;
  const done = existingCopy(ctx, state, name, imageName, marker);
  if (done) return done;
  const seen = await refuseOpen(ctx, state, o, 'power the VM off first, or save one of its snapshots');
  return copyIntoNewImage(ctx, seen, o, imageName, marker, `copy ${name} into`, () => unmapClone(ctx, name));
}

/**
 * Refuse a live clone whose writable device is open here (a running VM changes it under a
 * reader), after giving udev's probe (which holds a disk open for a moment after a map or a
 * write, as for clone unmap and commit) time to let go. Returns the state it last saw.
 */
export async function refuseOpen(ctx: NodeSession, state: NodeState, o: CowObj, hint: string): Promise<NodeState> {
  const top = (s: NodeState) => s.devices.get(dmName('rw', o.uuid));
  const seen = await lookAgainAfterUdev(
    ctx.runner,
    state,
    (s) => (top(s)?.open ?? 0) > 0,
    () => observeNode(ctx),
  );
  if ((top(seen)?.open ?? 0) > 0)
    throw refused(`${lvRef(o)} is open on ${ctx.runner.target} (a running VM?): its content is changing`, hint);
  return seen;
}

/** Grow a writable image (a volatile VM disk) to at least `bytes`; never shrinks. */
export async function growVolatile(
  ctx: NodeSession,
  image: ImageObj | CowObj,
  bytes: number,
): Promise<'grown' | 'none'> {
  if (image.kind !== 'image' || image.state !== 'writable')
    throw refused(`${lvRef(image)} is not a writable image`, 'only volatile disks grow in place');
  const size = roundUp(bytes, EXTENT);
  if (size <= image.sizeBytes) return 'none';
  await runGuarded(
    ctx,
    [
      {
        title: `grow ${lvRef(image)} to ${size} bytes`,
        req: lvm.extendLvReq(lvRef(image), size, ctx.scope),
      },
    ],
    image,
  );
  return 'grown';
}
