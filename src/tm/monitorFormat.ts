/**
 * What the TM `monitor` action prints, in the format OpenNebula's own block drivers use.
 *
 * Where the format comes from (OpenNebula 6.x/7.x, src/tm_mad/fs_lvm/monitor and
 * src/tm_mad/lvm/monitor): the datastore's totals as `USED_MB=`, `FREE_MB=`, `TOTAL_MB=` in
 * whole MiB taken from the VG (vg_size, vg_free; used = size - free), not from a filesystem;
 * then, when the driver action's MONITOR_VM_DISKS is 1, one line per VM
 * `VM=[ID=<vm>,MONITOR="<b64> <b64> ..."]`, in which every entry such as
 * `DISK_SIZE=[ID=<disk>,SIZE=<MiB>]` is base64-encoded on its own (`base64 -w 0`, no newline)
 * and a VM's entries are separated by one space. `SNAPSHOT_SIZE=[ID=<snap>,DISK_ID=<disk>,SIZE=<MiB>]`
 * is the entry the older shared driver and the KVM poll probe give for a disk snapshot.
 */

export interface DiskUsage {
  vmId: number;
  diskId: number;
  /** Set for a disk snapshot (SNAPSHOT_SIZE), absent for the disk itself (DISK_SIZE). */
  snapId?: number;
  bytes: number;
}

const MiB = 1024 * 1024;

/**
 * Whole MiB, rounded up: the drivers' DISK_SIZE is `du -m` of the disk, which counts a
 * partly used MiB; a COW holding a few chunks must not read as an empty disk.
 */
export const sizeMb = (bytes: number): number => Math.ceil(bytes / MiB);

/** The three totals, one per line, as fs_lvm prints them. */
export function totalsText(vg: { sizeBytes: number; freeBytes: number }): string {
  const total = Math.floor(vg.sizeBytes / MiB);
  const free = Math.floor(vg.freeBytes / MiB);
  return `USED_MB=${total - free}\nFREE_MB=${free}\nTOTAL_MB=${total}\n`;
}

const entry = (d: DiskUsage): string =>
  d.snapId === undefined
    ? `DISK_SIZE=[ID=${d.diskId},SIZE=${sizeMb(d.bytes)}]`
    : `SNAPSHOT_SIZE=[ID=${d.snapId},DISK_ID=${d.diskId},SIZE=${sizeMb(d.bytes)}]`;

/** One `VM=[...]` line per VM, VMs and then disks (each disk before its snapshots) in id order. */
export function vmDisksText(disks: readonly DiskUsage[]): string {
  const byVm = new Map<number, DiskUsage[]>();
  for (const d of disks) byVm.set(d.vmId, [...(byVm.get(d.vmId) ?? []), d]);
  const order = (a: DiskUsage, b: DiskUsage) => a.diskId - b.diskId || (a.snapId ?? -1) - (b.snapId ?? -1);
  return [...byVm.keys()]
    .sort((a, b) => a - b)
    .map((vm) => {
      const b64 = byVm
        .get(vm)!
        .sort(order)
        .map((d) => Buffer.from(entry(d)).toString('base64'));
      return `VM=[ID=${vm},MONITOR="${b64.join(' ')}"]\n`;
    })
    .join('');
}
