/**
 * Which of a running VM's drives are cowstack disks that a live migration hands over: a `disk`
 * (not a cdrom) whose source is a VM directory's `disk.<id>` in a datastore and links to a
 * cowstack writable device (/dev/mapper/cowstack-rw-*). Its clone is the TM driver's
 * `one-<vm>-<disk>`, named from the path (the device name carries the clone's uuid, not its
 * name). Everything else (context cdrom, a volatile disk, a disk of another driver) moves with
 * qemu's own migration or not at all, as before cowstack.
 * The bash action this replaces followed the link all the way (readlink -f): to /dev/dm-N where
 * udev makes the /dev/mapper names links, so it found no disk to hand over.
 */
import type { Runner } from '../exec/types.js';
import { readLink } from '../tools/files.js';
import * as virsh from '../tools/virsh.js';
import { commandFailed } from '../exec/errors.js';
import { dmPath } from '../core/dmNames.js';
import { diskLv } from '../tm/args.js';

export interface VmDisk {
  /** The clone: one-<vm>-<disk>. */
  lv: string;
  /** The guest's name for the drive (vda). */
  target: string;
  /** The path qemu opened (the TM driver's link). */
  source: string;
  /** What the link resolves to. */
  device: string;
}

export interface OtherDrive {
  target: string;
  source?: string;
  /** Why it is not handed over. */
  why: string;
}

/** Where the TM driver links a VM's disk: <datastores>/<ds_id>/<vm_id>/disk.<disk_id>, any DATASTORE_LOCATION. */
const DISK_PATH = /\/datastores\/+(0|[1-9][0-9]*)\/+(0|[1-9][0-9]*)\/+disk\.(0|[1-9][0-9]*)$/;
const RW_DEVICE = dmPath('rw', '');

export async function vmDisks(
  runner: Runner,
  uri: string,
  deployId: string,
): Promise<{ disks: VmDisk[]; others: OtherDrive[] }> {
  const r = await runner.run(virsh.domblklistReq(uri, deployId));
  if (r.exitCode !== 0) throw commandFailed(runner.target, r);
  const disks: VmDisk[] = [];
  const others: OtherDrive[] = [];
  for (const d of virsh.parseDomblklist(r.stdout)) {
    const other = (why: string) => others.push({ target: d.target, ...(d.source ? { source: d.source } : {}), why });
    if (d.device !== 'disk') {
      other(`a ${d.device}, not a disk`);
      continue;
    }
    if ((d.type !== 'file' && d.type !== 'block') || !d.source) {
      other(d.source ? `a ${d.type} drive` : 'no source');
      continue;
    }
    // The TM driver's link names the dm device itself; its /dev/mapper name (a link to
    // /dev/dm-N, which realpath would give) says whose it is.
    const device = await readLink(runner, d.source);
    const m = DISK_PATH.exec(d.source);
    if (!device?.startsWith(RW_DEVICE) || !m) {
      other(device ? `${device} is not a cowstack writable clone` : 'not a link to a cowstack device');
      continue;
    }
    disks.push({ lv: diskLv(Number(m[2]), Number(m[3])), target: d.target, source: d.source, device });
  }
  return { disks, others };
}
