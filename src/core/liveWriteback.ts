/**
 * The write-back cached disk in a live backup point (livePoint.ts). Its VM device stands on
 * dm-writecache (`cowstack-wb-<top>`, cache LV `wb_<top>` in the node's cache VG) over the
 * COW, so the COW alone is not the disk until the cache is written back. The point is then:
 *   prepare (VM runs)    the new COW, marked write-back cached on this node; its own fresh
 *                        cache LV (superblock zeroed) and writecache device over it; then a
 *                        `flush` of the old cache, which writes back what is dirty so far
 *                        while the VM keeps running (and caching: only what it writes from
 *                        now to the suspend is left for the window).
 *   switch (VM paused)   suspend the VM's device; `flush` the old cache again (what the VM
 *                        wrote since); its status must say 0 blocks in use, none in
 *                        write-back, no error, else the switch is refused and undone; only
 *                        then the point's read-only table is loaded on the COW LV itself
 *                        (the snapshot constructor reads the exception store from the COW,
 *                        which now holds every exception and every data chunk) and resumed;
 *                        the VM's device is loaded on the read-only point and the new cache.
 *   finish (VM runs)     the old cache device and LV go (nothing is dirty, nothing writes to
 *                        it), the point loses the write-back marker, then the usual finish.
 *
 * No hand-over of the exception store here: the point's COW device (the LV) is not the VM
 * snapshot's (the cache device), so the kernel reads the store from disk instead, which is why
 * the table is loaded only after the drain, under the suspend. The old table is never resumed
 * once the point is live (recover keeps the same rule as for the hand-over).
 *
 * Why a fresh cache on the new top and not the old one re-pointed: dm-writecache indexes its
 * blocks by origin sector, and after the drain the old cache still holds clean copies of the
 * old COW's blocks; re-pointed at the new COW they would be read as its bytes (wrong data),
 * and 6.1 has no message that drops clean blocks. A new cache LV costs an lvcreate and a
 * zeroed superblock, all done while the VM runs; the old one is removed after the switch.
 * The cache VG needs room for both for that moment (the lvcreate refuses otherwise, before
 * anything of the VM's disk is touched).
 */
import { refused } from '../exec/errors.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { FLUSH_TIMEOUT_MS } from './cache/flush.js';
import { WB_HOST_TAG, writebackLvName } from './cache/meta.js';
import { attachWritebackSteps, createWritebackSteps, writecacheStatus } from './cache/writeback.js';
import { dmName, dmPath } from './dmNames.js';
import type { CloneObj } from './metadata.js';
import type { NodeSession } from './node.js';
import type { Step } from './plan.js';

/** A dry run has no new COW: its uuid in the names the plan prints. */
export const PLANNED_UUID = 'NEW-TOP-UUID';

export interface WritebackSwitch {
  cacheVg: string;
  /** The old top's cache device: flushed before and under the suspend, removed at the finish. */
  oldDevice?: string;
  /** The old top's cache LV (vg/name), removed at the finish. */
  oldLv?: string;
  /** The write-back marker the old top carries (removed once its cache is gone). */
  marker?: string;
  /** The host whose marker the new top gets at its creation. */
  host: string;
}

/** The new top's cache LV and device (made while the VM runs, before the suspend). */
export function newCacheSteps(wb: WritebackSwitch, next: CloneObj): Step[] {
  const lv = { vg: wb.cacheVg, name: writebackLvName(next.uuid), activeLocally: false } as lvm.LvInfo;
  return [
    ...createWritebackSteps(wb.cacheVg, next),
    ...attachWritebackSteps(
      {
        kind: 'writeback',
        name: lv.name,
        vg: lv.vg,
        uuid: '',
        originUuid: next.uuid,
        state: 'complete',
        copiedBytes: 0,
        usedAt: 0,
        sizeBytes: 0,
        lv: { ...lv, activeLocally: true },
      },
      next,
    ),
  ];
}

/** The path of the new top's cache device, the COW of the VM's device after the switch. */
export const newCachePath = (nextUuid: string | undefined): string => dmPath('wb', nextUuid ?? PLANNED_UUID);

export const flushStep = (device: string, why: string): Step => ({
  title: `write back ${device} (${why})`,
  req: { ...dmsetup.messageReq(device, 'flush'), timeoutMs: FLUSH_TIMEOUT_MS },
});

/**
 * Under the suspend, after the last flush: every block of the old cache is on the COW, or the
 * switch is refused. In ssd mode every block in use may be dirty, so "in use" must be 0.
 */
export async function refuseDirty(
  ctx: NodeSession,
  device: string,
  hint = 'the backup point was not taken and the disk runs on as before; check the repository path, then retry',
): Promise<void> {
  if (ctx.dryRun) return;
  const s = await writecacheStatus(ctx, device);
  const dirty = s.dirtyBlocks + s.writebackBlocks;
  if (s.error || dirty)
    throw refused(
      `${device} still holds ${dirty} block(s) not on the COW after its flush` +
        (s.error ? ` and reports I/O error ${s.error}` : ''),
      hint,
      { device, dirtyBlocks: dirty, ioError: s.error },
    );
}

/** Undo of the new cache (the switch did not happen): its device, then its LV. */
export const dropNewCacheReqs = (wb: WritebackSwitch, nextUuid: string | undefined) =>
  nextUuid
    ? [dmsetup.removeReq(dmName('wb', nextUuid)), lvm.removeLvReq(`${wb.cacheVg}/${writebackLvName(nextUuid)}`)]
    : [];

/** After the switch: the old cache goes (written back, nothing writes to it), then the point's marker. */
export function oldCacheSteps(ctx: NodeSession, wb: WritebackSwitch, pointRef: string): Step[] {
  const steps: Step[] = [];
  if (wb.oldDevice)
    steps.push({
      title: `remove the old top's write-back cache ${wb.oldDevice} (written back under the suspend)`,
      req: dmsetup.removeReq(wb.oldDevice),
    });
  if (wb.oldLv) {
    steps.push({ title: `deactivate ${wb.oldLv}`, req: lvm.deactivateReq(wb.oldLv) });
    steps.push({ title: `remove the old top's cache LV ${wb.oldLv}`, req: lvm.removeLvReq(wb.oldLv) });
  }
  if (wb.marker)
    steps.push({
      title: `clear the write-back marker of ${pointRef} (its every block is on the COW)`,
      req: lvm.tagLvReq(pointRef, { del: [wb.marker] }, ctx.scope),
    });
  return steps;
}

export const markerOf = (host: string): string => `${WB_HOST_TAG}${host}`;
