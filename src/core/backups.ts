/**
 * Backups of a clone's disk into files OpenNebula's backup datastores (rsync, restic) take:
 * qcow2, `disk.<id>.0` a full copy, `disk.<id>.<N>` an increment (its allocated clusters are
 * what changed since backup N-1, zero clusters what was zeroed; no backing file: OpenNebula
 * rebuilds the chain on restore). A consistent point of a disk is what a commit gives: in
 * incremental mode each backup commits the disk's top as the backup point `<top>-b<N>`
 * (the snapshot algebra of vmDisks.ts) and starts a new top on it. The changes since
 * point N-1 are then exactly the chunks the COWs between N-1 and N hold: read from their
 * dm-snapshot exception tables, never by comparing data. A full-mode backup only reads
 * the top. Both need the disk closed (the VM powered off): a commit needs it.
 *
 * `restoreImage` writes a full backup plus its increments into a new sealed image, which a
 * disk is then a clone of.
 */
import { notFound, refused, usageError } from '../exec/errors.js';
import type { RunRequest } from '../exec/types.js';
import * as files from '../tools/backupFiles.js';
import * as store from '../tools/exceptionStore.js';
import * as qemu from '../tools/qemuImg.js';
import { mapClone, unmapClone } from './clones.js';
import { readCowHeader } from './cowHeader.js';
import { compactUuid, dmName, dmPath, lvMapperPath } from './dmNames.js';
import { withLockRetry } from './plan.js';
import { existingCopy, fillNewImage } from './flatten.js';
import { refuseOpen, renameClone } from './lineage.js';
import type { CloneObj, CowObj } from './metadata.js';
import type { NodeSession } from './node.js';
import { type NodeState, observeNode } from './observe.js';
import { lvRef } from './stack.js';
import { takeLivePoint } from './livePoint.js';
import { EXTENT, roundUp, validateLvName } from './validate.js';
import { backupPointName, backupPointPattern, takeSnapshot, type CowOptions } from './vmDisks.js';

/** Absolute paths of plain names only: they go to qemu's option syntax, where "," separates. */
export function validateBackupPath(p: string, what: string): string {
  if (!/^\/[A-Za-z0-9._/+-]+$/.test(p ?? '') || p.split('/').some((s) => s === '..' || s === '.'))
    throw usageError(
      `${what} "${p}" is not a plain absolute path`,
      'use letters, digits and . _ / + - only, without "." or ".." parts',
    );
  return p;
}

export interface BackupOptions {
  /** The disk's top: a live clone. */
  top: string;
  /** The file to write, e.g. `<vm_dir>/backup/disk.0.3`. */
  file: string;
  /** Incremental mode: backup N of the chain (0: its full backup). Undefined: full mode. */
  increment?: number;
  cow: CowOptions;
  /**
   * The VM runs (TM prebackup_live): the point is taken without closing the disk
   * (core/livePoint.ts), also in full mode, whose file is then read from that point.
   */
  live?: boolean;
  /**
   * After a backup point, leave the disk's new top mapped whether or not the old one was: the
   * caller links the disk to it next (TM prebackup), so an unmap here would be mapped again.
   */
  keepMapped?: boolean;
}

export interface BackupResult {
  top: string;
  file: string;
  kind: 'full' | 'increment';
  /** The backup point this backup read (incremental mode). */
  point?: string;
  /** Bytes of the disk the file holds: the whole disk, or the changed clusters. */
  bytes: number;
  /** The changed ranges an increment copied (merged, whole 64 KiB clusters). */
  ranges?: qemu.Range[];
  /** A live point: how long the VM's disk was suspended for it (ms). */
  pauseMs?: number;
  /** A live point of a write-back cached disk: blocks written back before the suspend, the new cache. */
  writeback?: { drainedBlocks: number; cache: string };
  /**
   * The COWs the disk reads through down to its image after this backup, its top included:
   * backup points are chain levels and are not merged, so each increment adds one.
   */
  levels?: number;
  /** The disk's device, when the backup leaves it mapped (it was, or keepMapped after a point). */
  device?: string;
}

const run = (ctx: NodeSession, req: RunRequest) => ctx.runner.run(req);

function liveTopOf(state: NodeState, top: string): CloneObj {
  const o = state.repo.byName.get(top);
  if (!o) throw notFound(`${state.vg}/${top} does not exist`, 'the disk is not a cowstack disk');
  if (o.kind !== 'clone')
    throw refused(`${lvRef(o)} is a volatile disk: cowstack backs up image-backed (COW clone) disks`);
  if (o.state !== 'live') throw refused(`${lvRef(o)} is ${o.state}, not live`, 'run cowstack recover, then retry');
  return o;
}

/**
 * Back up one disk into `file` on the node of `ctx`. Idempotent: a re-run writes the same
 * file. The disk is mapped here for it (in incremental mode its new top, with the point
 * read-only beneath it) and left mapped only if it was.
 */
export async function backupDisk(ctx: NodeSession, o: BackupOptions): Promise<BackupResult> {
  validateBackupPath(o.file, 'backup file');
  const state = await observeNode(ctx);
  const before = state.repo.byName.get(o.top);
  const wasMapped = before !== undefined && state.devices.has(dmName('rw', before.uuid));
  const dir = o.file.slice(0, o.file.lastIndexOf('/')) || '/';
  const n = o.increment ?? (o.live ? 0 : undefined);
  const taken = n === undefined ? undefined : await takePoint(ctx, state, o.top, n, o.cow, o.live);
  const point = taken?.name;
  const paused = {
    ...(taken?.pauseMs === undefined ? {} : { pauseMs: taken.pauseMs }),
    ...(taken?.writeback ? { writeback: taken.writeback } : {}),
  };
  if (point === undefined)
    await refuseOpen(ctx, state, liveTopOf(state, o.top), 'power the VM off for the backup: its disk is changing');
  await run(ctx, files.mkdirReq(dir));
  // Right after a commit this host may still be releasing the point's exclusive lease.
  const mapped = await withLockRetry(ctx, () => mapClone(ctx, o.top), { on: 'own-release' });
  const unmapAfter = !wasMapped && mapped.action === 'mapped' && !(o.keepMapped && point);
  try {
    const now = await observeNode(ctx);
    const src = now.repo.byName.get(point ?? o.top);
    // A dry run took no point: the plan so far is what it shows.
    if (!src && ctx.dryRun)
      return { top: o.top, file: o.file, kind: o.increment ? 'increment' : 'full', point, bytes: 0, ...paused };
    if (!src) throw notFound(`${ctx.vg}/${point ?? o.top} is gone`, 'run cowstack recover, then retry the backup');
    const device = point ? dmPath('ro', src.uuid) : mapped.device!;
    const size = now.repo.chain(src).at(-1)!.sizeBytes;
    const topNow = now.repo.byName.get(o.top);
    const standsOn = topNow && now.repo.levels(topNow);
    // How the disk is left: its depth, and its device unless it is unmapped again below.
    const leftAs = {
      ...(standsOn === undefined ? {} : { levels: standsOn }),
      ...(unmapAfter ? {} : { device: mapped.device }),
    };
    if (!o.increment) {
      await run(ctx, qemu.toQcow2Req(device, o.file));
      return { top: o.top, file: o.file, kind: 'full', point, bytes: size, ...paused, ...leftAs };
    }
    const levels = levelsSince(now, src as CloneObj, backupPointName(o.top, o.increment - 1));
    const ranges = clusterRanges(await changedBytes(ctx, levels), size);
    await writeIncrement(ctx, device, o.file, size, ranges);
    const bytes = ranges.reduce((n, r) => n + r.length, 0);
    return { top: o.top, file: o.file, kind: 'increment', point, bytes, ranges, ...paused, ...leftAs };
  } finally {
    if (!ctx.dryRun && unmapAfter) await unmapClone(ctx, o.top);
  }
}

/**
 * Commit the top as backup point N and start a new top on it (or find that a previous run
 * did, or finish what a cut one began). Point 0 begins a new chain: the points of an earlier
 * one are renamed aside (they stay chain levels under the disk); point N needs point N-1
 * under the top.
 */
async function takePoint(
  ctx: NodeSession,
  state: NodeState,
  top: string,
  n: number,
  cow: CowOptions,
  live = false,
): Promise<{ name: string; pauseMs?: number; writeback?: BackupResult['writeback'] }> {
  const name = backupPointName(top, n);
  const o = state.repo.byName.get(top);
  const p = state.repo.byName.get(name);
  const prev = n > 0 ? backupPointName(top, n - 1) : undefined;
  const disk = `disk ${top}`;
  const snap = { top, snap: name, snapId: n, disk, snapshot: `backup point ${n} of ${disk}` };
  // The top on point N: a re-run after success. Never for point 0: a chain that had only its
  // full backup leaves the disk on its point 0 too, and a new chain's full backup must read
  // the disk as it is now, not that old point. A re-run of point 0 takes it again (one more
  // chain level), which reads the same data.
  if (n > 0 && o && p && o.kind === 'clone' && o.parentUuid === p.uuid) return { name };
  if (!live && cutShort(state, o, p, prev)) {
    await takeSnapshot(ctx, state, snap, cow);
    return { name };
  }
  const t = liveTopOf(state, top);
  let now = state;
  if (n === 0) {
    const re = backupPointPattern(top);
    // Only points of the current chain: a renamed one already carries its uuid's start.
    const old = [...state.repo.byName.values()].filter((l) => re.exec(l.name)?.[2] === undefined && re.test(l.name));
    // lvmlockd renames an LV only under its exclusive lock, which an old point active shared
    // under the mapped disk never gives (lvrename: "already locked with incompatible mode").
    if (old.length && live)
      throw refused(
        `${lvRef(t)} stands on backup points of an earlier chain, which LVM renames only while ` +
          'nothing maps them: a running disk cannot start a new backup chain',
        'power the VM off for the first backup of the new chain (prebackup), then back it up live again',
      );
    // A cold disk is unmapped first (its old points released with it); the backup maps it again.
    if (old.length && state.devices.has(dmName('rw', t.uuid))) await unmapClone(ctx, top);
    for (const l of old) await renameClone(ctx, l.name, `${l.name}.${compactUuid(l.uuid).slice(0, 8)}`);
    // The point is planned on the names as they are now: the old point 0 is no longer one.
    if (old.length) now = await observeNode(ctx);
  } else if (!state.repo.chain(t).some((l) => l.name === prev))
    throw refused(
      `${lvRef(t)} has no backup point ${n - 1} (${prev}) to take increment ${n} from`,
      'take a full backup first (in OpenNebula: reset the backup chain, or back up in FULL mode)',
    );
  if (p && n !== 0)
    throw refused(
      `backup point ${n} of ${lvRef(t)} (${name}) exists but the disk does not stand on it`,
      'run cowstack recover; if it stays, reset the backup chain (a full backup renames old points aside)',
    );
  if (live) {
    const r = await takeLivePoint(ctx, now, t, name);
    return { name, pauseMs: r.pauseMs, ...(r.writeback ? { writeback: r.writeback } : {}) };
  }
  const seen = await refuseOpen(
    ctx,
    now,
    t,
    'power the VM off for the backup (a backup point is a commit), or back it up live (prebackup_live, --live)',
  );
  await takeSnapshot(ctx, seen, snap, cow);
  return { name };
}

/**
 * A cold point cut short after its commit (the top committed, not renamed yet) or after its
 * rename (no top, the point with no child yet), on point `prev` for an increment:
 * takeSnapshot finishes either. Nothing else leaves a disk's top committed or missing.
 */
function cutShort(state: NodeState, o: CowObj | undefined, p: CowObj | undefined, prev?: string): boolean {
  const x = o && !p ? o : !o && p ? p : undefined;
  if (x?.kind !== 'clone' || x.state !== 'committed' || state.repo.childrenOf(x).length) return false;
  return prev === undefined || (state.repo.levels(x) !== undefined && state.repo.chain(x).some((l) => l.name === prev));
}

/** The chain levels written since backup point `prev`: from `point` down to, not including, `prev`. */
function levelsSince(state: NodeState, point: CloneObj, prev: string): CloneObj[] {
  const chain = state.repo.chain(point);
  const at = chain.findIndex((l) => l.name === prev);
  if (at < 0)
    throw refused(
      `${lvRef(point)} does not descend from backup point ${prev}`,
      'take a full backup first (in OpenNebula: reset the backup chain)',
    );
  return chain.slice(0, at) as CloneObj[];
}

/** The byte offsets of the origin chunks each level's COW holds (its exception table), with their size. */
async function changedBytes(ctx: NodeSession, levels: CloneObj[]): Promise<Array<{ at: number; bytes: number }>> {
  const out: Array<{ at: number; bytes: number }> = [];
  for (const l of levels) {
    const cow = lvMapperPath(ctx.vg, l.name);
    // A live point's COW had its first pages cached by udev's probe: read below the cache.
    const chunk = store.parseHeader(await readCowHeader(ctx, cow), cow) * 512;
    const areas = Math.ceil(l.sizeBytes / ((store.perArea(chunk) + 1) * chunk)) + 1;
    for (let i = 0; i < areas; i++) {
      const { chunks, ended } = store.parseArea(
        (await run(ctx, store.readWordsReq(cow, store.areaOffset(i, chunk), chunk))).stdout,
      );
      for (const c of chunks) out.push({ at: c * chunk, bytes: chunk });
      if (ended) break;
    }
  }
  return out;
}

/** Changed byte spans rounded out to whole qcow2 clusters, merged, within the disk. */
export function clusterRanges(spans: ReadonlyArray<{ at: number; bytes: number }>, size: number): qemu.Range[] {
  const C = qemu.CLUSTER;
  const clusters = new Set<number>();
  for (const s of spans)
    for (let c = Math.floor(s.at / C); c * C < Math.min(s.at + s.bytes, size); c++) clusters.add(c);
  const out: qemu.Range[] = [];
  for (const c of [...clusters].sort((a, b) => a - b)) {
    const last = out.at(-1);
    const end = Math.min((c + 1) * C, size);
    if (last && last.start + last.length === c * C) last.length = end - last.start;
    else out.push({ start: c * C, length: end - c * C });
  }
  return out;
}

/** The parts of `ranges` (cluster-aligned, sorted) no data range of the written file (sorted) covers. */
export function uncovered(ranges: readonly qemu.Range[], data: readonly qemu.Range[]): qemu.Range[] {
  const C = qemu.CLUSTER;
  const out: qemu.Range[] = [];
  let d = 0;
  for (const r of ranges)
    for (let at = r.start; at < r.start + r.length; at += C) {
      while (d < data.length && data[d]!.start + data[d]!.length <= at) d++;
      if (d < data.length && data[d]!.start <= at) continue;
      const len = Math.min(C, r.start + r.length - at);
      const last = out.at(-1);
      if (last && last.start + last.length === at) last.length += len;
      else out.push({ start: at, length: len });
    }
  return out;
}

/**
 * The changed clusters, copied from the point's device onto a sparse canvas, into a qcow2
 * file: qemu-img leaves the canvas's holes (unchanged) unallocated, and also the clusters the
 * VM zeroed, which qemu-io then marks as zero clusters.
 */
async function writeIncrement(ctx: NodeSession, device: string, file: string, size: number, ranges: qemu.Range[]) {
  if (!ranges.length) {
    await run(ctx, qemu.createQcow2Req(file, size));
    return;
  }
  const canvas = `${file}.canvas`;
  const C = qemu.CLUSTER;
  await run(ctx, files.removeFileReq(canvas));
  await run(ctx, files.sparseFileReq(canvas, size));
  try {
    for (const r of ranges)
      await run(ctx, files.copyBlocksReq(device, canvas, C, r.start / C, Math.ceil(r.length / C)));
    await run(ctx, qemu.toQcow2Req(canvas, file));
    if (ctx.dryRun) return;
    const zeros = uncovered(ranges, qemu.parseDataRanges((await run(ctx, qemu.mapReq(file))).stdout));
    if (zeros.length) await run(ctx, qemu.writeZeroesReq(file, zeros));
  } finally {
    await run(ctx, files.removeFileReq(canvas));
  }
}

export interface RestoreResult {
  image: string;
  vg: string;
  uuid?: string;
  sizeBytes: number;
  sha256?: string;
  files: string[];
  action: 'restored' | 'none';
}

/**
 * Write a backup (its full file, then its increments in order; files on the node of `ctx`)
 * into a new sealed image `image`. Idempotent: the image a previous run made is the answer.
 */
export async function restoreImage(ctx: NodeSession, image: string, chain: readonly string[]): Promise<RestoreResult> {
  validateLvName(image, 'image name');
  if (!chain.length) throw usageError('restore needs the backup files', 'give the full backup, then its increments');
  chain.forEach((f) => validateBackupPath(f, 'backup file'));
  const state = await observeNode(ctx);
  const last = chain.at(-1)!;
  const marker = `cowstack_restored_from:${last}`;
  const done = existingCopy(ctx, state, image, image, marker);
  if (done) return { ...done, files: [...chain], action: 'none' };
  const sizes = new Set<number>();
  for (const f of chain) sizes.add(qemu.parseVirtualSize((await run(ctx, qemu.infoReq(f))).stdout));
  if (sizes.size !== 1)
    throw usageError(
      `the backup files ${chain.join(', ')} have different disk sizes (${[...sizes].join(', ')} bytes)`,
      'give the files of one backup chain: the full backup, then its increments',
    );
  const bytes = [...sizes][0]!;
  const made = await fillNewImage(ctx, image, roundUp(bytes, EXTENT), marker, (device) => ({
    title: `restore ${chain.length} backup file(s) into ${ctx.vg}/${image}`,
    req: qemu.chainToDeviceReq(chain, device),
  }));
  return { ...made, files: [...chain], action: 'restored' };
}
