/**
 * `clone flatten NAME --to IMAGE`: copy what a committed clone's chain reads into a new
 * standalone sealed image, to cut chain depth (each level costs an exception lookup).
 */
import { refused } from '../exec/errors.js';
import * as blockData from '../tools/blockData.js';
import * as lvm from '../tools/lvm.js';
import { collectGarbage, mapClone } from './clones.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { lvMapperPath } from './dmNames.js';
import { beginStep, endStep } from './journal.js';
import { roleTag, stateTag, type CloneObj, type ImageObj } from './metadata.js';
import { lvChecksum, sealStep } from './images.js';
import { findClone, observe, type NodeState } from './observe.js';
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
  const state = await observe(ctx.runner, ctx.vg, ctx.scope);
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
 * Map the clone here and copy what its stack reads into a new image (fillNewImage).
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
    const filled = await fillNewImage(ctx, imageName, image.sizeBytes, marker, (device) => ({
      title: `${what} ${ctx.vg}/${imageName}`,
      req: blockData.copyReq(mapped.device!, device),
    }));
    return { name: o.name, ...filled, action: 'flattened' };
  } finally {
    if (!ctx.dryRun && mapped.action === 'mapped') await release();
  }
}

/**
 * A new image LV of `bytes` tagged with `marker`, filled by the step `fill` builds for its
 * device (journalled: a crash leaves an "initializing" LV recover removes), checksummed and
 * sealed.
 */
export async function fillNewImage(
  ctx: NodeSession,
  imageName: string,
  bytes: number,
  marker: string,
  fill: (device: string) => Step,
): Promise<Omit<FlattenResult, 'name' | 'action'>> {
  const ref = `${ctx.vg}/${imageName}`;
  const target = { vg: ctx.vg, name: imageName } as ImageObj;
  const journal = { op: 'flatten' as const, vg: ctx.vg, name: imageName };
  const steps: Step[] = [
    beginStep(journal),
    {
      title: `create image LV ${ref}`,
      req: lvm.createLvReq(
        {
          vg: ctx.vg,
          name: imageName,
          bytes,
          tags: [roleTag('image'), stateTag('initializing'), marker],
        },
        ctx.scope,
      ),
      undo: [lvm.removeLvReq(ref, ctx.scope)],
    },
    activateStep(target, 'exclusive', ctx.scope),
    fill(lvMapperPath(ctx.vg, imageName)),
  ];
  await runGuarded(ctx, steps);
  const sha = await lvChecksum(ctx, imageName);
  await runGuarded(ctx, [
    sealStep(ctx, imageName, 'initializing', sha),
    deactivateStep(target, ctx.scope),
    endStep(journal),
  ]);
  const lv = ctx.dryRun ? undefined : await lvm.findLv(ctx.runner, ctx.vg, imageName, ctx.scope);
  return { image: imageName, vg: ctx.vg, uuid: lv?.uuid, sizeBytes: bytes, sha256: sha };
}
