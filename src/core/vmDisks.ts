/**
 * The lineage of a VM manager's disks in the repository: which LVs one disk consists of, the
 * snapshot algebra on a disk (take, revert, delete) and the lineage of a persistent image.
 * A disk is a top LV (a live clone, or a writable image for a volatile disk) plus its
 * snapshots, committed clones named `<top>-s<N>` inside the top's chain. A persistent image
 * is never written: each use writes a COW on the lineage's newest sync-back, and the sync-back
 * commits it as `<image>-p<K>` (its snapshots become `<image>-p<K>-s<N>`). The caller names
 * the top (src/tm: `one-<vm>-<disk>`) and words the disk and snapshot for messages.
 */
import { CowstackError, EXIT, notFound, refused, usageError } from '../exec/errors.js';
import { commitClone, createClone, discardClone } from './clones.js';
import type { NodeSession } from './node.js';
import { renameClone } from './lineage.js';
import type { CloneObj, CowObj } from './metadata.js';
import { type NodeState, observeNode } from './observe.js';
import { lvRef } from './stack.js';

/** The N-th snapshot of the disk whose top is `top`. */
export const snapshotName = (top: string, snapId: number): string => `${top}-s${snapId}`;
/** A disk's snapshots; group 1 is the snapshot number. */
export const snapshotPattern = (top: string): RegExp =>
  new RegExp(`^${top.replace(/[.+]/g, '\\$&')}-s(0|[1-9][0-9]*)$`);
/** Backup point N of the disk whose top is `top` (core/backups.ts). */
export const backupPointName = (top: string, n: number): string => `${top}-b${n}`;
/** A disk's backup points; a point of an earlier backup chain carries its LV uuid's start. */
export const backupPointPattern = (top: string): RegExp =>
  new RegExp(`^${top.replace(/[.+]/g, '\\$&')}-b(0|[1-9][0-9]*)(\\.[A-Za-z0-9]{8})?$`);
/**
 * The sealed image a disk was restored into from a backup (TM restore), which the disk's top
 * is then a clone of: `<top>-r<backup image id>.<8 hex naming the backup point>`. It belongs
 * to the disk: removing the disk removes it.
 */
export const restoredName = (top: string, backupId: number, point: string): string => `${top}-r${backupId}.${point}`;
/** The suffix restoredName adds, as a regular expression source without groups that capture. */
export const RESTORED_SUFFIX = '-r(?:0|[1-9][0-9]*)\\.[0-9a-f]{8}';
export const restoredPattern = (top: string): RegExp =>
  new RegExp(`^${top.replace(/[.+]/g, '\\$&')}${RESTORED_SUFFIX}$`);
/** The sync-backs of a persistent image: `<image>-p<K>`. */
export const persistentPattern = (image: string): RegExp =>
  new RegExp(`^${image.replace(/[.+]/g, '\\$&')}-p([1-9][0-9]*)$`);

/** The LVs one disk consists of: its top, snapshots and backup points (a persistent lineage is not the disk's). */
export function diskLvs(state: NodeState, top: string): string[] {
  const re = [snapshotPattern(top), backupPointPattern(top), restoredPattern(top)];
  return [...state.repo.byName.values()]
    .filter((o) => o.name === top || re.some((r) => r.test(o.name)))
    .map((o) => o.name);
}

/** The newest sync-back of a persistent image (`<image>-p<K>`, committed), or the image. */
export function persistentHead(state: NodeState, image: string): { head: CowObj; next: number } {
  const img = state.repo.byName.get(image);
  if (!img || img.kind !== 'image')
    throw notFound(`persistent image ${state.vg}/${image} does not exist`, 'check the image SOURCE in the datastore');
  const re = persistentPattern(image);
  let head: CowObj = img;
  let best = 0;
  let next = 1;
  for (const o of state.repo.byName.values()) {
    const m = re.exec(o.name);
    if (!m) continue;
    const k = Number(m[1]);
    next = Math.max(next, k + 1);
    if (o.kind === 'clone' && o.state === 'committed' && k > best && state.repo.chain(o).includes(img)) {
      best = k;
      head = o;
    }
  }
  return { head, next };
}

/** How a new COW is sized: the caller's chunk and default COW percentage. */
export interface CowOptions {
  chunk?: string;
  defaultPercent?: number;
}

/**
 * Give a persistent image's user its writable top `name`: an exclusive COW on the lineage's
 * newest sync-back (the image itself is never written). Returns the parent it was put on.
 */
export async function startPersistentCow(
  ctx: NodeSession,
  state: NodeState,
  image: string,
  name: string,
  opts: CowOptions,
): Promise<string> {
  const { head } = persistentHead(state, image);
  await createClone(ctx, { name, from: head.name, chunk: opts.chunk, defaultPercent: opts.defaultPercent });
  return head.name;
}

/**
 * Sync a persistent disk back into its image's lineage: commit the top if it is live, then
 * rename its snapshots and the top to the next `<image>-p<K>`. Snapshots first: a crash
 * after them leaves the top under its disk name, and a re-run finishes; the snapshots stay
 * in the image's lineage under names a disk removal never touches. Returns the new name,
 * or undefined when the top is gone (synced back already).
 */
export async function syncBack(ctx: NodeSession, state: NodeState, top: string, image: string) {
  const o = state.repo.byName.get(top);
  if (!o) return undefined;
  if (o.kind !== 'clone')
    throw usageError(
      `${lvRef(o)} is a volatile disk, not a persistent image's`,
      'mvds only applies to persistent disks (ln)',
    );
  if (!state.repo.chain(o).some((p) => p.name === image))
    throw refused(`${lvRef(o)} does not descend from ${image}`, 'the SOURCE does not match the disk: check the image');
  if (o.state === 'live') await commitClone(ctx, top);
  const now = await observeNode(ctx);
  const { next } = persistentHead(now, image);
  const target = `${image}-p${next}`;
  const snaps = [...now.repo.byName.values()].filter((s) => snapshotPattern(top).test(s.name));
  for (const s of snaps) await renameClone(ctx, s.name, `${target}-s${s.name.slice(s.name.lastIndexOf('-s') + 2)}`);
  await renameClone(ctx, top, target);
  return target;
}

/** One snapshot of one disk, named for the LVs and worded for messages. */
export interface DiskSnapshot {
  top: string;
  snap: string;
  snapId: number;
  /** e.g. "disk 0 of VM 7" */
  disk: string;
  /** e.g. "snapshot 3 of disk 0 (VM 7)" */
  snapshot: string;
}

/** Delete a snapshot nothing depends on. 'none' when it does not exist (deleted already). */
export async function deleteSnapshot(ctx: NodeSession, state: NodeState, d: DiskSnapshot): Promise<'deleted' | 'none'> {
  const s = state.repo.byName.get(d.snap);
  if (!s) return 'none';
  const kids = state.repo.childrenOf(s);
  if (kids.length) {
    const what = kids.map((k) => (k.name === d.top ? 'the current disk' : k.name)).join(', ');
    throw refused(
      `${d.snapshot} cannot be deleted: ${what} depend(s) on it`,
      'only a snapshot nothing depends on can be deleted; revert to an older one first, or keep it',
    );
  }
  await discardClone(ctx, d.snap);
  return 'deleted';
}

/** The disk's top and snapshot, refusing a disk cowstack cannot snapshot. */
function snapshotObjs(state: NodeState, d: DiskSnapshot) {
  const o = state.repo.byName.get(d.top);
  const s = state.repo.byName.get(d.snap);
  if (!o && !s) throw notFound(`${d.disk} is not a cowstack disk (${state.vg}/${d.top} missing)`);
  if (o && o.kind !== 'clone')
    throw refused(`${lvRef(o)} is a volatile disk: cowstack snapshots image-backed disks only`);
  return { o: o as CloneObj | undefined, s };
}

/** Revert a disk to a snapshot: the live top (with nothing on it) is discarded and a new one started on it. */
export async function revertSnapshot(ctx: NodeSession, state: NodeState, d: DiskSnapshot, opts: CowOptions) {
  const { o, s } = snapshotObjs(state, d);
  if (!s || s.kind !== 'clone' || s.state !== 'committed') throw notFound(`${d.disk} has no snapshot ${d.snapId}`);
  if (o) {
    if (o.state === 'live' && !state.repo.childrenOf(o).length) await discardClone(ctx, d.top);
    else throw refused(`${lvRef(o)} is ${o.state}`, 'run cowstack recover, then retry');
  }
  await createClone(ctx, { name: d.top, from: d.snap, chunk: opts.chunk, defaultPercent: opts.defaultPercent });
}

/**
 * Take a snapshot: commit the top (it becomes the snapshot, renamed) and start a new top on
 * it. 'done' when a previous run took it already.
 */
export async function takeSnapshot(
  ctx: NodeSession,
  state: NodeState,
  d: DiskSnapshot,
  opts: CowOptions,
): Promise<'taken' | 'done'> {
  const { o, s } = snapshotObjs(state, d);
  if (s && o && o.parentUuid === s.uuid) return 'done';
  // A run that renamed the top and failed before starting the new one: finish it.
  const renamed = !o && s?.kind === 'clone' && s.state === 'committed' && !state.repo.childrenOf(s).length;
  if (s && !renamed)
    throw refused(`${d.snapshot} already exists`, "OpenNebula numbers snapshots itself: check the VM's snapshot list");
  if (!o && !renamed) throw notFound(`${d.disk} has no top ${d.top}`);
  if (o?.state === 'live') {
    try {
      await commitClone(ctx, d.top);
    } catch (e) {
      if (e instanceof CowstackError && e.exitCode === EXIT.REFUSED)
        throw refused(
          `${e.message}: disk snapshots need the VM powered off`,
          'power the VM off first (snap_create_live is not supported)',
        );
      throw e;
    }
  }
  if (o) await renameClone(ctx, d.top, d.snap);
  await createClone(ctx, { name: d.top, from: d.snap, chunk: opts.chunk, defaultPercent: opts.defaultPercent });
  return 'taken';
}
