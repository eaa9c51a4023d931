/**
 * Full local replicas of images in the node's cache VG. A replica is copied with synchronous
 * direct 4 MiB writes in chunks whose progress is recorded in its tags (a re-run continues),
 * verified against the image's recorded sha256, and only then marked complete and made
 * read-only. Clones mapped on the node then stand on the replica (see replica.ts, planStack)
 * and read nothing from the repository.
 */
import { CowstackError, EXIT, notFound, refused, usageError } from '../../exec/errors.js';
import * as blockData from '../../tools/blockData.js';
import * as lvm from '../../tools/lvm.js';
import { collectGarbage } from '../nodeGc.js';
import { runGuarded } from '../executor.js';
import type { NodeSession } from '../node.js';
import { dmName, lvMapperPath } from '../dmNames.js';
import { findImage, observeNode } from '../observe.js';
import type { Step } from '../plan.js';
import { activateStep, lvRef } from '../lvSteps.js';
import { EXTENT, formatSize } from '../validate.js';
import { dropStale, makeRoom, removeCacheLv } from './eviction.js';
import type { CacheKind } from './kind.js';
import { cacheLvPath, cacheTag, replicaLvName } from './meta.js';
import { replicaLayer, usableReplica } from './replica.js';
import { activateCacheLv, cacheVgOf, observeCache } from './vg.js';

/** Bytes copied between two progress records: small enough to lose little on a crash. */
export const COPY_CHUNK = 64 * 2 ** 20;

export interface ReplicateOptions {
  /** Copy rate limit in MiB/s (paced between chunks). */
  rateMiBps?: number;
  onProgress?: (bytes: number, total: number) => void;
  /** Bytes per recorded progress step (tests). */
  chunkBytes?: number;
  /**
   * Copy from this local file (a staged copy that arrived peer to peer, core/stage) instead of
   * the image LV: the repository is not read. The replica is verified against the image's
   * sha256 all the same.
   */
  sourceFile?: string;
}

export interface ReplicateResult {
  name: string;
  vg: string;
  uuid: string;
  cacheVg: string;
  replica: string;
  device: string;
  sizeBytes: number;
  action: 'replicated' | 'resumed' | 'none';
  copiedBytes: number;
  sha256?: string;
  evicted: string[];
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Make (or finish) the verified local replica of an image on this node. Idempotent. */
export async function replicate(ctx: NodeSession, name: string, opts: ReplicateOptions = {}): Promise<ReplicateResult> {
  const started = Date.now();
  const cacheVg = cacheVgOf(ctx);
  if (opts.rateMiBps !== undefined && !(opts.rateMiBps > 0))
    throw usageError(`rate limit "${opts.rateMiBps}" must be a positive number of MiB/s`);
  const state = await observeNode(ctx);
  const image = findImage(state, name);
  if (image.state !== 'sealed')
    throw refused(
      `${lvRef(image)} is ${image.state}; only sealed images are replicated`,
      `seal it first: cowstack image seal ${name}`,
    );
  if (!image.sha256)
    throw refused(
      `${lvRef(image)} has no recorded sha256, so a copy could not be verified`,
      'images sealed by cowstack carry one; re-import it',
    );
  let cache = await observeCache(ctx.runner, cacheVg);
  if (!cache.exists)
    throw notFound(
      `this node (${ctx.runner.target}) has no cache VG ${cacheVg}`,
      'create it on a local disk: cowstack cache init DEVICE',
    );
  const lvName = replicaLvName(image.uuid);
  const base = {
    name,
    vg: ctx.vg,
    uuid: image.uuid,
    cacheVg,
    replica: lvName,
    device: cacheLvPath({ vg: cacheVg, name: lvName }),
    sizeBytes: image.sizeBytes,
  };
  const evicted = await dropStale(ctx, cache, state.repo);
  if (evicted.length) cache = await observeCache(ctx.runner, cacheVg);
  let rp = cache.lvs.find((c) => c.name === lvName);
  // A replica of this very LV made against another checksum is not this content's copy.
  if (rp && rp.sha256 !== image.sha256) {
    await removeCacheLv(ctx, rp, cache);
    evicted.push(rp.name);
    rp = undefined;
    cache = await observeCache(ctx.runner, cacheVg);
  }
  if (rp?.state === 'complete') {
    return {
      ...base,
      action: 'none',
      copiedBytes: rp.sizeBytes,
      sha256: rp.sha256,
      evicted,
      seconds: (Date.now() - started) / 1000,
    };
  }
  const ref = `${cacheVg}/${lvName}`;
  const steps: Step[] = [];
  if (!rp) {
    evicted.push(...(await makeRoom(ctx, cache, image.sizeBytes, state.repo)));
    steps.push({
      title: `create replica ${ref} (${formatSize(image.sizeBytes)}) of ${lvRef(image)}`,
      req: lvm.createLvReq({
        vg: cacheVg,
        name: lvName,
        bytes: image.sizeBytes,
        tags: [
          cacheTag.kind('replica'),
          cacheTag.origin(image.uuid),
          cacheTag.state('copying'),
          cacheTag.copied(0),
          cacheTag.sha256(image.sha256),
        ],
      }),
      undo: [lvm.removeLvReq(ref)],
    });
  }
  if (!rp?.lv.activeLocally) steps.push(activateCacheLv({ vg: cacheVg, name: lvName }));
  // A staged file needs no access to the image LV at all.
  const imageWasActive = image.lv.activeLocally || opts.sourceFile !== undefined;
  if (!imageWasActive) steps.push(activateStep(image, 'shared', ctx.scope));
  await runGuarded(ctx, steps, image);

  let copied = rp?.copiedBytes ?? 0;
  const resumed = copied > 0;
  const chunk = opts.chunkBytes ?? COPY_CHUNK;
  const src = opts.sourceFile ?? lvMapperPath(ctx.vg, image.name);
  const dst = base.device;
  try {
    while (copied < image.sizeBytes) {
      const t0 = Date.now();
      const blocks = Math.min(chunk, image.sizeBytes - copied) / EXTENT;
      const at = copied / EXTENT;
      const next = copied + blocks * EXTENT;
      await runGuarded(ctx, [
        {
          title: `copy ${formatSize(copied)}..${formatSize(next)} of ${formatSize(image.sizeBytes)} into ${ref}`,
          // One 4 MiB direct request at a time: a bulk read of the shared LUN must not
          // starve sanlock's lease renewals on the same path.
          req: blockData.copyRangeReq(src, dst, at, blocks),
        },
        {
          title: `record progress of ${ref}`,
          req: lvm.tagLvReq(ref, { del: [cacheTag.copied(copied)], add: [cacheTag.copied(next)] }),
        },
      ]);
      copied = next;
      opts.onProgress?.(copied, image.sizeBytes);
      if (opts.rateMiBps && copied < image.sizeBytes) {
        const wantMs = ((blocks * EXTENT) / (opts.rateMiBps * 2 ** 20)) * 1000;
        const spent = Date.now() - t0;
        if (wantMs > spent) await sleep(wantMs - spent);
      }
    }
    let sha: string | undefined;
    if (!ctx.dryRun) {
      sha = blockData.parseChecksum((await ctx.runner.run(blockData.checksumReq(dst))).stdout);
      if (sha !== image.sha256) {
        // Start over next time rather than keep a copy that is known to be wrong.
        await runGuarded(ctx, [
          {
            title: `restart ${ref} from zero`,
            req: lvm.tagLvReq(ref, { del: [cacheTag.copied(copied)], add: [cacheTag.copied(0)] }),
          },
        ]);
        throw new CowstackError(
          EXIT.FAILED,
          `replica ${ref} of ${lvRef(image)} has sha256 ${sha}, the image records ${image.sha256}`,
          {
            hint:
              'the copy is not used; run cowstack cache replicate again (it starts over). If it fails again, ' +
              'check the local disk.',
            data: { replica: ref, sha256: sha, expected: image.sha256 },
          },
        );
      }
    }
    // The last progress step recorded copied = size: deleting and adding that same tag here
    // removed it (lvchange applies --addtag before --deltag), so cache list said 0 copied.
    const copiedTags: lvm.TagChange[] =
      copied === image.sizeBytes ? [] : [{ del: [cacheTag.copied(copied)], add: [cacheTag.copied(image.sizeBytes)] }];
    await runGuarded(ctx, [
      {
        title: `mark ${ref} complete and read-only`,
        req: lvm.changeLvReq(ref, {
          readOnly: true,
          tags: [
            { del: [cacheTag.state('copying')], add: [cacheTag.state('complete')] },
            ...copiedTags,
            { add: [cacheTag.used(Math.floor(Date.now() / 1000))] },
          ],
        }),
      },
    ]);
    return {
      ...base,
      action: resumed ? 'resumed' : 'replicated',
      copiedBytes: copied,
      sha256: sha,
      evicted,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    if (!imageWasActive && !ctx.dryRun) await collectGarbage(ctx, image.name);
  }
}

export interface ReplicaMapResult {
  /** The local replica the mapped stack stands on (cache VG LV name). */
  replica?: string;
}

/** `clone map --cache replica`: make the image's replica first when the node has none usable. */
export const replicaKind: CacheKind<ReplicaMapResult> = {
  ...replicaLayer,
  mode: 'replica',
  async prepareMap(ctx, state, clone) {
    const image = state.repo.chain(clone).at(-1)!;
    // Only before anything of this stack is mapped here: a live stack keeps its origin.
    if (
      image.kind !== 'image' ||
      usableReplica(state.cache, image) ||
      state.devices.has(dmName('rw', clone.uuid)) ||
      state.devices.has(dmName('ro', clone.uuid))
    )
      return {};
    await replicate(ctx, image.name, { rateMiBps: ctx.cacheRateMiBps });
    return { observeAgain: true };
  },
  mapResult: (_state, _clone, plan) => (plan.replica ? { replica: plan.replica } : {}),
};
