/**
 * A VM disk rebuilt from a backup (OpenNebula's TM restore): the backup's file(s) on the
 * node written into a new sealed image (core/backups.ts restoreImage), then the disk's old
 * LVs (its top, snapshots, backup points and an earlier restored image) removed and the top
 * made again as a fresh COW clone of the restored image, mapped here. The plan is data, made
 * from one observation: `--dry-run` prints it. Each step is idempotent and journalled by the
 * operation it uses (fill of the image, discard, create, map), so a re-run after a crash
 * finishes the restore: the restored image, once sealed, is found again by its name and
 * marker and is not read twice.
 */
import { refused } from '../exec/errors.js';
import { restoreImage } from './backups.js';
import { createAndMapClone } from './clones.js';
import { removeLvs } from './gc.js';
import { refuseOpen } from './lineage.js';
import type { NodeSession } from './node.js';
import type { NodeState } from './observe.js';
import { lvRef } from './stack.js';
import { type CowOptions, diskLvs } from './vmDisks.js';

export interface DiskRestorePlan {
  /** The disk's top, e.g. `one-7-0`. */
  top: string;
  /** The sealed image the backup is written into (core/vmDisks.ts restoredName). */
  image: string;
  /** Whether the image must still be written (false: a previous run sealed it). */
  fill: boolean;
  /** The disk's LVs that go, leaf first, before its top is made again on the image. */
  remove: string[];
}

/** What restoring `top` from `image` does, seen from one observation of the node. */
export function planDiskRestore(state: NodeState, top: string, image: string): DiskRestorePlan {
  const made = state.repo.byName.get(image);
  if (made && !(made.kind === 'image' && made.state === 'sealed'))
    throw refused(
      `${lvRef(made)} exists and is not a sealed restored image (${made.kind}, ${made.state})`,
      'run cowstack recover (an interrupted restore leaves an initializing image it removes), then retry',
    );
  return { top, image, fill: !made, remove: diskLvs(state, top).filter((n) => n !== image) };
}

/**
 * Refuse when the disk's top is open here (the VM runs: OpenNebula restores powered-off VMs
 * only). A disk mapped but closed is fine: it is unmapped when its LVs are removed.
 */
export async function refuseOpenDisk(ctx: NodeSession, state: NodeState, top: string): Promise<NodeState> {
  const o = state.repo.byName.get(top);
  if (!o || o.kind !== 'clone' || o.state !== 'live') return state;
  return refuseOpen(ctx, state, o, 'power the VM off before restoring its disks (onevm poweroff), then retry');
}

/**
 * Carry out a plan: the image from `files` (the backup's full file, then its increments, on
 * the node), the old LVs removed, the top a new clone of the image. Returns the top's device.
 */
export async function restoreDisk(
  ctx: NodeSession,
  plan: DiskRestorePlan,
  files: readonly string[],
  cow: CowOptions,
): Promise<{ device: string; sha256?: string }> {
  const made = plan.fill ? await restoreImage(ctx, plan.image, files) : undefined;
  if (plan.remove.length) await removeLvs(ctx, new Set(plan.remove));
  const { mapped } = await createAndMapClone(ctx, { name: plan.top, from: plan.image, ...cow });
  return { device: mapped.device!, sha256: made?.sha256 };
}
