/**
 * Small operations the OpenNebula driver needs on top of the clone lifecycle: renaming a
 * clone inside its lineage (disk snapshots, persistent sync-backs) and saving a live clone's
 * current content as a new sealed image (disk save-as of the running state).
 */
import { refused, usageError } from '../exec/errors.js';
import * as lvm from '../tools/lvm.js';
import { mapClone, runGuarded, unmapClone, type OpContext } from './clones.js';
import { dmName, lvMapperPath } from './dmNames.js';
import { beginStep, endStep } from './journal.js';
import { lvChecksum, sealStep } from './images.js';
import { roleTag, stateTag, type CowObj, type ImageObj } from './metadata.js';
import { findClone, observe } from './observe.js';
import type { Step } from './plan.js';
import { activateStep, deactivateStep, lvRef } from './stack.js';
import type { FlattenResult } from './flatten.js';
import { EXTENT, roundUp, validateLvName } from './validate.js';

/**
 * Rename a clone. Children point at its LV UUID and dm names derive from UUIDs, so nothing
 * that depends on it changes; only the name a caller looks it up by. Idempotent: if `from`
 * is gone and `to` is a clone, the rename already happened.
 */
export async function renameClone(ctx: OpContext, from: string, to: string): Promise<'renamed' | 'none'> {
  validateLvName(to, 'new name');
  const state = await observe(ctx.runner, ctx.vg, ctx.scope);
  const src = state.repo.byName.get(from);
  const dst = state.repo.byName.get(to);
  if (!src && dst?.kind === 'clone') return 'none';
  const o = findClone(state, from);
  if (dst || state.repo.foreign.some((l) => l.name === to)) throw refused(`${ctx.vg}/${to} already exists`, 'pick another name');
  await runGuarded(ctx, [{ title: `rename ${lvRef(o)} to ${to}`, req: lvm.lvmRequest('lvrename', [ctx.vg, from, to], 'write', ctx.scope) }], o);
  return 'renamed';
}

/**
 * Copy what a live clone reads now into a new sealed image. The clone must not be open (a
 * running VM would change it under the copy); it is mapped here for the copy if it was not
 * mapped, and unmapped again afterwards, so the node is left as it was found.
 */
export async function saveLiveAsImage(ctx: OpContext, name: string, imageName: string): Promise<FlattenResult> {
  validateLvName(imageName, 'image name');
  const state = await observe(ctx.runner, ctx.vg, ctx.scope);
  const o = findClone(state, name);
  if (o.state !== 'live') throw usageError(`${lvRef(o)} is ${o.state}, not live`, `use cowstack clone flatten ${name} --to ${imageName}`);
  const image = state.repo.chain(o).at(-1)!;
  const marker = `cowstack_saved_from:${o.uuid}`;
  const existing = state.repo.byName.get(imageName);
  if (existing?.kind === 'image' && existing.state === 'sealed' && existing.tags.includes(marker)) {
    return { name, image: imageName, vg: ctx.vg, uuid: existing.uuid, sizeBytes: existing.sizeBytes, sha256: (existing as ImageObj).sha256, action: 'none' };
  }
  if (existing || state.repo.foreign.some((l) => l.name === imageName)) throw refused(`${ctx.vg}/${imageName} already exists`, 'pick another image name');
  const top = state.devices.get(dmName('rw', o.uuid));
  if (top && top.open > 0) throw refused(`${lvRef(o)} is open on ${ctx.runner.target} (a running VM?): its content is changing`, 'power the VM off first, or save one of its snapshots');

  const mapped = await mapClone(ctx, name);
  const ref = `${ctx.vg}/${imageName}`;
  const target = { vg: ctx.vg, name: imageName } as ImageObj;
  const journal = { op: 'flatten' as const, vg: ctx.vg, name: imageName };
  const steps: Step[] = [
    beginStep(journal),
    {
      title: `create image LV ${ref}`,
      req: lvm.lvmRequest('lvcreate', ['-an', '-Zn', '-Wn', '--setautoactivation', 'n', '-L', `${image.sizeBytes}b`, '-n', imageName, '--addtag', roleTag('image'), '--addtag', stateTag('initializing'), '--addtag', marker, ctx.vg], 'write', ctx.scope),
      undo: [lvm.lvmRequest('lvremove', ['-y', ref], 'write', ctx.scope)],
    },
    activateStep(target, 'exclusive', ctx.scope),
    {
      title: `copy ${name} into ${ref}`,
      req: { argv: ['dd', `if=${mapped.device}`, `of=${lvMapperPath(ctx.vg, imageName)}`, 'bs=4M', 'iflag=direct', 'oflag=direct', 'conv=fsync', 'status=none'], kind: 'write', root: true, timeout: 'data' },
    },
  ];
  try {
    await runGuarded(ctx, steps);
    const sha = await lvChecksum(ctx, imageName);
    await runGuarded(ctx, [sealStep(ctx, imageName, 'initializing', sha), deactivateStep(target, ctx.scope), endStep(journal)]);
    const lv = ctx.dryRun ? undefined : await lvm.findLv(ctx.runner, ctx.vg, imageName, ctx.scope);
    return { name, image: imageName, vg: ctx.vg, uuid: lv?.uuid, sizeBytes: image.sizeBytes, sha256: sha, action: 'flattened' };
  } finally {
    if (!ctx.dryRun && mapped.action === 'mapped') await unmapClone(ctx, name);
  }
}

/** Grow a writable image (a volatile VM disk) to at least `bytes`; never shrinks. */
export async function growVolatile(ctx: OpContext, image: ImageObj | CowObj, bytes: number): Promise<'grown' | 'none'> {
  if (image.kind !== 'image' || image.state !== 'writable') throw refused(`${lvRef(image)} is not a writable image`, 'only volatile disks grow in place');
  const size = roundUp(bytes, EXTENT);
  if (size <= image.sizeBytes) return 'none';
  await runGuarded(ctx, [{ title: `grow ${lvRef(image)} to ${size} bytes`, req: lvm.lvmRequest('lvextend', ['-L', `${size}b`, lvRef(image)], 'write', ctx.scope) }], image);
  return 'grown';
}
