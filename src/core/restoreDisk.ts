/**
 * A VM disk rebuilt from a backup (OpenNebula's TM restore): the backup's file(s) on the
 * node written into a new sealed image (core/backups.ts restoreImage), then the disk's old
 * LVs (its top, snapshots, backup points and an earlier restored image) removed and the top
 * made again as a fresh COW clone of the restored image, mapped here. The plan is data, made
 * from one observation: `--dry-run` prints it. The whole is one journal entry (`restore`,
 * naming the top and the image), around the entries of the operations it uses (fill of the
 * image, discard, create, map): after a crash, recover undoes it while the image is not sealed
 * (the disk was not touched yet; the fill's own entry removes the half-made image) and finishes
 * it once it is (the old LVs go, the top is made on the image). A re-run does the same: the
 * sealed image is found again by its name and marker and not read twice.
 */
import { refused } from '../exec/errors.js';
import { restoreImage } from './backups.js';
import { createAndMapClone, createClone } from './clones.js';
import { runGuarded } from './executor.js';
import { removeLvs } from './gc.js';
import { refuseOpen } from './lineage.js';
import { beginStep, endStep, type JournalEntry } from './journal.js';
import type { NodeSession } from './node.js';
import { type NodeState, observeNode } from './observe.js';
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
  const journal = { op: 'restore' as const, vg: ctx.vg, name: plan.top, restored: plan.image };
  await runGuarded(ctx, [beginStep(journal)]);
  let made: Awaited<ReturnType<typeof restoreImage>> | undefined;
  try {
    made = plan.fill ? await restoreImage(ctx, plan.image, files) : undefined;
  } catch (e) {
    // Nothing of the disk was touched: nothing is in flight.
    await runGuarded(ctx, [endStep(journal)]).catch(() => undefined);
    throw e;
  }
  // From here on a failure leaves the entry in flight: recover (or the re-run) finishes it.
  if (plan.remove.length) await removeLvs(ctx, new Set(plan.remove));
  const { mapped } = await createAndMapClone(ctx, { name: plan.top, from: plan.image, ...cow });
  await runGuarded(ctx, [endStep(journal)]);
  return { device: mapped.device!, sha256: made?.sha256 };
}

/**
 * recover's part: an interrupted restore is undone while its image is not sealed, else finished
 * (the disk's old LVs removed, its top created on the image, unmapped: the host's TM links it
 * when the VM starts). A top already standing on the image means it had got that far.
 */
export async function settleRestore(
  ctx: NodeSession,
  entry: Pick<JournalEntry, 'name' | 'restored'>,
): Promise<'finished' | 'undone' | 'nothing-to-do'> {
  const state = await observeNode(ctx);
  const image = entry.restored ? state.repo.byName.get(entry.restored) : undefined;
  if (!(image?.kind === 'image' && image.state === 'sealed')) return 'undone';
  const top = state.repo.byName.get(entry.name);
  if (top?.kind === 'clone' && top.state === 'live' && top.parentUuid === image.uuid) return 'nothing-to-do';
  const old = diskLvs(state, entry.name).filter((n) => n !== image.name);
  if (old.length) await removeLvs(ctx, new Set(old), state);
  await createClone(ctx, { name: entry.name, from: image.name });
  return 'finished';
}
