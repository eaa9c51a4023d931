/**
 * `clone flatten NAME --to IMAGE`: copy what a committed clone's chain reads into a new
 * standalone sealed image, to cut chain depth (each level costs an exception lookup).
 */
import { CowstackError, EXIT, refused } from '../exec/errors.js';
import * as blockData from '../tools/blockData.js';
import * as lvm from '../tools/lvm.js';
import { collectGarbage, mapClone } from './clones.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { lvMapperPath } from './dmNames.js';
import { beginStep, endStep } from './journal.js';
import { roleTag, stateTag, type CloneObj, type ImageObj } from './metadata.js';
import { lvChecksum, readSealed, sealStep } from './images.js';
import { findClone, findImage, type NodeState, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { activateStep, deactivateStep, lvRef } from './stack.js';
import { validateLvName } from './validate.js';

export interface FlattenResult {
  name: string;
  image: string;
  vg: string;
  uuid?: string;
  sizeBytes: number;
  sha256?: string;
  action: 'flattened' | 'none';
}

export async function flattenClone(ctx: NodeSession, name: string, imageName: string): Promise<FlattenResult> {
  validateLvName(imageName, 'image name');
  const state = await observeNode(ctx);
  const o = findClone(state, name);
  const marker = `cowstack_flattened_from:${o.uuid}`;
  const done = existingCopy(ctx, state, name, imageName, marker);
  if (done) return done;
  if (o.state !== 'committed')
    throw refused(
      `${lvRef(o)} is ${o.state}; only a committed clone has stable content to flatten`,
      `commit it first: cowstack clone commit ${name}`,
    );
  return copyIntoNewImage(ctx, state, o, imageName, marker, `copy ${name}'s chain into`, () =>
    collectGarbage(ctx, name),
  );
}

/**
 * The image a previous copy of this clone made (found by its marker tag): the idempotent
 * answer. Any other LV of that name is refused.
 */
export function existingCopy(
  ctx: NodeSession,
  state: NodeState,
  name: string,
  imageName: string,
  marker: string,
): FlattenResult | undefined {
  const existing = state.repo.byName.get(imageName);
  if (existing?.kind === 'image' && existing.state === 'sealed' && existing.tags.includes(marker)) {
    return {
      name,
      image: imageName,
      vg: ctx.vg,
      uuid: existing.uuid,
      sizeBytes: existing.sizeBytes,
      sha256: (existing as ImageObj).sha256,
      action: 'none',
    };
  }
  if (existing || state.repo.foreign.some((l) => l.name === imageName))
    throw refused(`${ctx.vg}/${imageName} already exists`, 'pick another image name');
  return undefined;
}

/**
 * Map the clone here and copy what its stack reads into a new image (copyDeviceIntoImage).
 * `release` undoes the mapping this call made.
 */
export async function copyIntoNewImage(
  ctx: NodeSession,
  state: NodeState,
  o: CloneObj,
  imageName: string,
  marker: string,
  what: string,
  release: () => Promise<unknown>,
): Promise<FlattenResult> {
  const image = state.repo.chain(o).at(-1)!;
  const mapped = await mapClone(ctx, o.name);
  try {
    const r = await copyDeviceIntoImage(ctx, {
      device: mapped.device!,
      sizeBytes: image.sizeBytes,
      imageName,
      marker,
      what,
    });
    return { ...r, name: o.name };
  } finally {
    if (!ctx.dryRun && mapped.action === 'mapped') await release();
  }
}

/** Copy a device into a new image (fillNewImage). */
async function copyDeviceIntoImage(
  ctx: NodeSession,
  o: { device: string; sizeBytes: number; imageName: string; marker: string; what: string },
): Promise<Omit<FlattenResult, 'name'>> {
  const r = await fillNewImage(ctx, o.imageName, o.sizeBytes, o.marker, (device) => ({
    title: `${o.what} ${ctx.vg}/${o.imageName}`,
    req: blockData.copyReq(o.device, device),
  }));
  return { ...r, action: 'flattened' };
}

/**
 * A new image LV of `bytes` tagged with `marker`, filled by the step(s) `fill` builds for its
 * device (journalled: a crash leaves an "initializing" LV recover removes), checksummed and
 * sealed. Also core/backups.ts's restore (qemu-img writes a backup chain). `expectSha`: the
 * checksum the content must have (a copy of a sealed image); a different one removes the new
 * LV and fails, so no unverified copy is ever sealed.
 */
export async function fillNewImage(
  ctx: NodeSession,
  imageName: string,
  bytes: number,
  marker: string,
  fill: (device: string) => Step | Step[],
  expectSha?: string,
): Promise<Omit<FlattenResult, 'name' | 'action'>> {
  const ref = `${ctx.vg}/${imageName}`;
  const target = { vg: ctx.vg, name: imageName } as ImageObj;
  const journal = { op: 'flatten' as const, vg: ctx.vg, name: imageName };
  const steps: Step[] = [
    beginStep(journal),
    {
      title: `create image LV ${ref}`,
      req: lvm.createLvReq(
        { vg: ctx.vg, name: imageName, bytes, tags: [roleTag('image'), stateTag('initializing'), marker] },
        ctx.scope,
      ),
      undo: [lvm.removeLvReq(ref, ctx.scope)],
    },
    activateStep(target, 'exclusive', ctx.scope),
    ...[fill(lvMapperPath(ctx.vg, imageName))].flat(),
  ];
  await runGuarded(ctx, steps);
  const sha = await lvChecksum(ctx, imageName);
  if (expectSha && sha && sha !== expectSha) {
    await runGuarded(ctx, [
      deactivateStep(target, ctx.scope),
      { title: `remove the unverified ${ref}`, req: lvm.removeLvReq(ref, ctx.scope) },
      endStep(journal),
    ]);
    throw new CowstackError(EXIT.FAILED, `${ref} read sha256 ${sha} after the copy, not ${expectSha}: removed it`, {
      hint: 'check the paths to the LUNs (multipath, iSCSI sessions, dmesg) and run the copy again',
    });
  }
  await runGuarded(ctx, [
    sealStep(ctx, imageName, 'initializing', sha),
    deactivateStep(target, ctx.scope),
    endStep(journal),
  ]);
  const lv = ctx.dryRun ? undefined : await lvm.findLv(ctx.runner, ctx.vg, imageName, ctx.scope);
  return { image: imageName, vg: ctx.vg, uuid: lv?.uuid, sizeBytes: bytes, sha256: sha };
}

/**
 * `ds clone`: a sealed image copied into a new sealed image (OpenNebula's image clone). The
 * source is activated shared for the copy, and released again if this call activated it.
 */
export async function copyImage(ctx: NodeSession, from: string, imageName: string): Promise<FlattenResult> {
  validateLvName(imageName, 'image name');
  const state = await observeNode(ctx);
  const o = findImage(state, from);
  const marker = `cowstack_copied_from:${o.uuid}`;
  const done = existingCopy(ctx, state, from, imageName, marker);
  if (done) return done;
  const mine = await readSealed(ctx, o, 'copy');
  try {
    const device = lvMapperPath(o.vg, o.name);
    const r = await copyDeviceIntoImage(ctx, {
      device,
      sizeBytes: o.sizeBytes,
      imageName,
      marker,
      what: `copy ${from} into`,
    });
    return { ...r, name: from };
  } finally {
    if (mine && !ctx.dryRun) await collectGarbage(ctx, from);
  }
}
