/**
 * Repository capacity: how `cluster init` sizes the VG metadata area, and how full the three
 * things that run out in a shared repository VG are (metadata area, sanlock lease space,
 * extents), so that doctor and status can warn before LVM refuses an lvcreate.
 *
 * Measured on the testbed (lvm2 2.03.16, sanlock 3.8.5, tgt LUN with 512-byte logical and
 * 4096-byte physical sectors); the README's "Sizing" section has the numbers.
 */
import { CommandError, refused } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as blockdev from '../tools/blockdev.js';
import * as lvm from '../tools/lvm.js';
import { formatSize } from './validate.js';

export const DEFAULT_MAX_LVS = 2000;

/**
 * Metadata budget per LV. Measured: a clone LV with cowstack's four tags takes about 512 bytes
 * of VG metadata in a shared VG (444 in a local one: no lock args). Images carry two sha256
 * tags more (about 170 bytes). Twice the measured size leaves room for longer names and tags.
 */
export const METADATA_BYTES_PER_LV = 1024;
/** The measured size, for the estimate of LVs left in a VG that has none yet to average over. */
const MEASURED_CLONE_METADATA_BYTES = 490;
const ESTIMATE_FROM_LVS = 50;

/**
 * LVM keeps the previous metadata copy intact while it writes the next one into the same
 * circular area, so only half of it can hold metadata: vg_mda_free of a new VG is half the area.
 */
const MDA_USABLE_FRACTION = 0.5;

/** The first MiB also holds the PV label and the VG's own entries (host tags, lvmlock). */
const METADATA_BASE_BYTES = 64 * 1024;

/** --metadatasize in MiB for a VG meant to hold maxLvs LVs. */
export function metadataMiBFor(maxLvs: number): number {
  const bytes = (METADATA_BASE_BYTES + maxLvs * METADATA_BYTES_PER_LV) / MDA_USABLE_FRACTION;
  return Math.max(1, Math.ceil(bytes / 2 ** 20));
}

/**
 * lvmlockd keeps the lockspace (host slots), the global lock and the VG lock in the first 67
 * lease slots of the `lvmlock` LV; LV leases follow, one slot each (measured: the first LV's
 * lock args are 67 slots in).
 */
export const LEASE_FIRST_LV_SLOT = 67;
/** lvcreate extends lvmlock by this much when it is full (lvm.conf global/sanlock_lv_extend). */
export const LEASE_GROW_BYTES = 256 * 2 ** 20;

/** sanlock's lease alignment for a LUN's physical sector size (sanlock 3.8 as driven by lvm2 2.03). */
export const leaseAlignBytes = (physicalSector: number): number => (physicalSector >= 4096 ? 8 : 1) * 2 ** 20;

/** The lvmlock size maxLvs leases need, in whole extension steps. */
export function leaseBytesFor(maxLvs: number, alignBytes: number): number {
  const raw = (LEASE_FIRST_LV_SLOT + maxLvs) * alignBytes;
  return Math.ceil(raw / LEASE_GROW_BYTES) * LEASE_GROW_BYTES;
}

export interface Sizing {
  maxLvs: number;
  metadataMiB: number;
  physicalSectorBytes?: number;
  leaseAlignBytes?: number;
  /** lvmlock size once maxLvs LVs exist (it grows from the VG's free extents as LVs are made). */
  leaseBytes?: number;
  explanation: string[];
}

/** What `cluster init` will create and what the LUN must hold besides the disks themselves. */
export function sizingFor(maxLvs: number, physicalSector?: number): Sizing {
  const metadataMiB = metadataMiBFor(maxLvs);
  const explanation = [
    `metadata area ${metadataMiB} MiB: room for about ${maxLvs} LVs with cowstack's tags ` +
      `(${METADATA_BYTES_PER_LV} bytes budgeted per LV; LVM cannot grow it later)`,
  ];
  if (!physicalSector) return { maxLvs, metadataMiB, explanation };
  const align = leaseAlignBytes(physicalSector);
  const leaseBytes = leaseBytesFor(maxLvs, align);
  explanation.push(
    `lease space: every LV holds a ${align / 2 ** 20} MiB sanlock lease in the hidden lvmlock LV ` +
      `(${physicalSector}-byte physical sectors); lvmlock grows in ${LEASE_GROW_BYTES / 2 ** 20} MiB steps ` +
      `from free extents, to ${gib(leaseBytes)} for ${maxLvs} LVs: size the LUN for that plus the disks`,
  );
  return {
    maxLvs,
    metadataMiB,
    physicalSectorBytes: physicalSector,
    leaseAlignBytes: align,
    leaseBytes,
    explanation,
  };
}

const gib = (b: number): string => `${(b / 2 ** 30).toFixed(2)} GiB`;
const pct = (used: number, total: number): number => (total > 0 ? Math.round((100 * used) / total) : 0);

export interface CapacityReport {
  vg: string;
  lvCount: number;
  metadata: {
    areaBytes: number;
    /** Half the area: what LVM can fill (it keeps the previous copy beside the new one). */
    usableBytes: number;
    freeBytes: number;
    usedPercent: number;
    bytesPerLv?: number;
    /** LVs that still fit at the current average size per LV (the measured clone size below 50 LVs). */
    lvsLeft: number;
  };
  leases?: {
    lvmlockBytes: number;
    alignBytes: number;
    slots: number;
    inUse: number;
    free: number;
    usedPercent: number;
    /** lvmlock grows by this much from free extents when its slots run out. */
    growBytes: number;
    canGrow: boolean;
  };
  extents: {
    extentBytes: number;
    total: number;
    free: number;
    freeBytes: number;
    usedPercent: number;
  };
  warnPercent: number;
  warnings: Array<{ what: 'metadata' | 'leases' | 'extents'; message: string; fix: string }>;
}

export async function repoCapacity(
  runner: Runner,
  vg: string,
  opts: { warnPercent?: number; scope?: lvm.LvmScope; pvDevice?: string } = {},
): Promise<CapacityReport | undefined> {
  const warnPercent = opts.warnPercent ?? 80;
  const space = await lvm.vgSpace(runner, vg, opts.scope);
  if (!space) return undefined;
  const all = await lvm.leaseLvs(runner, vg, opts.scope);
  const lvmlock = all.find((l) => l.name === 'lvmlock');
  let leases: CapacityReport['leases'];
  if (lvmlock) {
    const pv = opts.pvDevice ?? (await lvm.pvs(runner, opts.scope)).find((p) => p.vg === vg)?.name;
    const align = leaseAlignBytes(pv ? await blockdev.physicalBlockSize(runner, pv) : 512);
    const inUse = all.filter((l) => l !== lvmlock && lvm.leaseOffset(l.lockArgs) !== undefined).length;
    const slots = Math.max(0, Math.floor(lvmlock.sizeBytes / align) - LEASE_FIRST_LV_SLOT);
    leases = {
      lvmlockBytes: lvmlock.sizeBytes,
      alignBytes: align,
      slots,
      inUse,
      free: Math.max(0, slots - inUse),
      usedPercent: pct(inUse, slots),
      growBytes: LEASE_GROW_BYTES,
      canGrow: space.freeBytes >= LEASE_GROW_BYTES,
    };
  }
  const usable = Math.floor(space.mdaBytes * MDA_USABLE_FRACTION);
  const used = Math.max(0, usable - space.mdaFreeBytes);
  const bytesPerLv = space.lvCount > 0 ? Math.round(used / space.lvCount) : undefined;
  // The VG's own entries (lvmlock, host tags) dominate the average of a few LVs (measured: 1536
  // bytes each with 2 LVs): estimate from the average only once there are enough LVs.
  const perLv =
    bytesPerLv && space.lvCount >= ESTIMATE_FROM_LVS ? Math.max(bytesPerLv, 256) : MEASURED_CLONE_METADATA_BYTES;
  const report: CapacityReport = {
    vg,
    lvCount: space.lvCount,
    metadata: {
      areaBytes: space.mdaBytes,
      usableBytes: usable,
      freeBytes: space.mdaFreeBytes,
      usedPercent: pct(used, usable),
      ...(bytesPerLv ? { bytesPerLv } : {}),
      lvsLeft: Math.floor(space.mdaFreeBytes / perLv),
    },
    ...(leases ? { leases } : {}),
    extents: {
      extentBytes: space.extentBytes,
      total: space.extentCount,
      free: space.freeExtents,
      freeBytes: space.freeBytes,
      usedPercent: pct(space.extentCount - space.freeExtents, space.extentCount),
    },
    warnPercent,
    warnings: [],
  };
  report.warnings = capacityWarnings(report);
  return report;
}

/** One warning per resource at or above the threshold, each with what to do about it. */
export function capacityWarnings(c: CapacityReport): CapacityReport['warnings'] {
  const w: CapacityReport['warnings'] = [];
  if (c.metadata.usedPercent >= c.warnPercent)
    w.push({
      what: 'metadata',
      message:
        `VG ${c.vg} metadata area ${c.metadata.usedPercent}% full (${c.lvCount} LVs` +
        `, room for about ${c.metadata.lvsLeft} more)`,
      fix:
        'LVM cannot grow the metadata area of an existing PV: remove unused images and clones, or ' +
        'put new disks in a second repository VG made with cowstack cluster init --max-lvs N',
    });
  const l = c.leases;
  // Leases only run out when lvmlock is nearly full *and* cannot take another extension step.
  if (l && l.usedPercent >= c.warnPercent && !l.canGrow)
    w.push({
      what: 'leases',
      message:
        `VG ${c.vg} lease space ${l.usedPercent}% used (${l.inUse} of ${l.slots} leases) and ` +
        `${gib(c.extents.freeBytes)} free is less than the next ${l.growBytes / 2 ** 20} MiB lvmlock extension`,
      fix: 'grow the LUN and run pvresize on it, or remove unused images and clones',
    });
  if (c.extents.usedPercent >= c.warnPercent)
    w.push({
      what: 'extents',
      message: `VG ${c.vg} ${c.extents.usedPercent}% allocated (${gib(c.extents.freeBytes)} free)`,
      fix: 'grow the LUN and run pvresize on it, or remove unused images and clones',
    });
  return w;
}

/**
 * Refuse, before anything is written, a new LV the repository VG cannot take: not enough free
 * extents, or a metadata area too full for one more LV. Judged from the observation's lvs rows,
 * which carry the VG's free space (no command of its own). LVM would refuse as well, but only
 * once the operation had begun, and without saying what to do.
 */
export function refuseIfNoRoom(vg: string, rows: readonly lvm.LvInfo[], bytes: number, what: string): void {
  const row = rows.find((l) => l.vg === vg && l.vgFreeBytes !== undefined);
  if (!row) return; // an empty VG (no rows) or an older report: LVM decides
  if (bytes > row.vgFreeBytes!)
    throw refused(
      `${vg} has ${formatSize(row.vgFreeBytes!)} free, ${what} needs ${formatSize(bytes)}`,
      'free space first (cowstack tree shows what can go), give a smaller size, or grow the LUN and pvresize it',
      { vg, freeBytes: row.vgFreeBytes, neededBytes: bytes },
    );
  if (row.vgMdaFreeBytes !== undefined && row.vgMdaFreeBytes < METADATA_BYTES_PER_LV)
    throw refused(
      `the metadata area of ${vg} is full (${row.vgMdaFreeBytes} bytes free, one more LV needs about ` +
        `${METADATA_BYTES_PER_LV}); LVM cannot grow it`,
      'remove LVs that are no longer needed, or start a new repository VG sized with cluster init --max-lvs',
      { vg, mdaFreeBytes: row.vgMdaFreeBytes },
    );
}

/**
 * An lvcreate refused for lease space (sanlock's lvmlock LV full and not extendable), as an
 * error that says so and what to do; undefined for any other failure.
 */
export function leaseSpaceRefusal(vg: string, e: unknown): Error | undefined {
  if (!(e instanceof CommandError) || !/No space for sanlock lock|Extend sanlock LV .* failed/i.test(e.stderr))
    return undefined;
  return refused(
    `no sanlock lease space left in ${vg} (its lvmlock LV is full and cannot grow by ${formatSize(LEASE_GROW_BYTES)})`,
    'free extents so that lvmlock can grow, or remove LVs that are no longer needed (README: Sizing)',
    { vg, cause: e.stderr.trim() },
  );
}
