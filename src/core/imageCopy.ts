/**
 * `image copy NAME --to-vg VG2`: a sealed image copied into another repository VG (README
 * "Growing a site: several repositories"). A clone lives in its image's VG (lineage is by LV
 * UUID within one VG), so VMs of another repository need the image there. The source is
 * activated shared on this node, streamed with dd in 1 GiB ranges (one step each: the
 * progress), the copy's checksum compared with the source's recorded sha256 before it is
 * sealed, journalled in the target VG (`cowstack recover --vg VG2` removes a half-made copy).
 * Idempotent: the copy carries `cowstack_copied_from:<source LV UUID>`; a second run finds it.
 */
import { refused, usageError } from '../exec/errors.js';
import * as blockData from '../tools/blockData.js';
import { collectGarbage } from './clones.js';
import { lvMapperPath } from './dmNames.js';
import { existingCopy, fillNewImage, type FlattenResult } from './flatten.js';
import { readSealed } from './images.js';
import type { NodeSession } from './node.js';
import { findImage, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { lvRef } from './stack.js';
import { formatSize, validateLvName } from './validate.js';

/** 4 MiB dd blocks per copy step: 1 GiB, the grain of the progress a long copy reports. */
export const COPY_RANGE_BLOCKS = 256;
const BLOCK = 4 * 1024 * 1024;

export interface ImageCopyResult extends Omit<FlattenResult, 'action'> {
  /** The source VG (`vg` is the copy's). */
  fromVg: string;
  action: 'copied' | 'none';
}

/** The dd steps that copy `bytes` of `from` onto `to`, one per 1 GiB range, titled with the progress. */
export function copySteps(from: string, to: string, bytes: number, what: string): Step[] {
  const blocks = Math.ceil(bytes / BLOCK);
  const steps: Step[] = [];
  for (let at = 0; at < blocks; at += COPY_RANGE_BLOCKS) {
    const n = Math.min(COPY_RANGE_BLOCKS, blocks - at);
    const done = Math.min((at + n) * BLOCK, bytes);
    steps.push({
      title: `${what} (${formatSize(done)} of ${formatSize(bytes)})`,
      req: blockData.copyRangeReq(from, to, at, n),
    });
  }
  return steps;
}

/**
 * Copy image `name` of `src`'s VG into `dst`'s VG as `as` (default: the same name). Both
 * sessions run on one node, which sees both VGs.
 */
export async function copyImageToVg(
  src: NodeSession,
  dst: NodeSession,
  name: string,
  as = name,
): Promise<ImageCopyResult> {
  validateLvName(as, 'image name');
  if (src.vg === dst.vg)
    throw usageError(
      `--to-vg ${dst.vg} is the VG the image is in`,
      'name another repository VG; within one VG, clone the image instead (or use the ds clone action)',
    );
  const o = findImage(await observeNode(src), name);
  if (o.state !== 'sealed')
    throw refused(
      `${lvRef(o)} is ${o.state}; only a sealed image has stable content to copy`,
      `seal it first: cowstack image seal ${name} --vg ${src.vg}`,
    );
  // A catalogue image's trust (endorsement, the site's approval) is per repository VG: a
  // plain copy would shed it and be clonable unchecked. The catalogue brings it in instead.
  if (o.catalog)
    throw refused(
      `${lvRef(o)} is catalogue image ${o.catalog.name}@${o.catalog.version} of list ${o.catalog.list}: ` +
        'its endorsement and approval do not follow a copy',
      `import it into ${dst.vg} from the signed list: cowstack catalog sync LIST --vg ${dst.vg}`,
    );
  if (!o.sha256)
    throw refused(
      `${lvRef(o)} has no recorded sha256: its copy could not be verified`,
      `export it and import the file into ${dst.vg}: cowstack image export / image import`,
    );
  const marker = `cowstack_copied_from:${o.uuid}`;
  const there = await observeNode(dst);
  const half = there.repo.byName.get(as);
  if (half?.kind === 'image' && half.state === 'initializing' && half.tags.includes(marker))
    throw refused(
      `${dst.vg}/${as} is a copy of ${lvRef(o)} that did not finish`,
      `run cowstack recover --vg ${dst.vg} (it removes the half-made copy), then copy again`,
    );
  const done = existingCopy(dst, there, name, as, marker);
  if (done) return { ...done, action: 'none', fromVg: src.vg };
  const mine = await readSealed(src, o, 'copy');
  try {
    const from = lvMapperPath(o.vg, o.name);
    const r = await fillNewImage(
      dst,
      as,
      o.sizeBytes,
      marker,
      (device) => copySteps(from, device, o.sizeBytes, `copy ${lvRef(o)} into ${dst.vg}/${as}`),
      o.sha256,
    );
    return { ...r, name, action: 'copied', fromVg: src.vg };
  } finally {
    if (mine && !src.dryRun) await collectGarbage(src, name);
  }
}
