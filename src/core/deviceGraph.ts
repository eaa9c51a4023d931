/**
 * What the node's device-mapper devices alone (one `dmsetup info` with devs_used) say about a
 * mapped clone: enough to take the plainest mapping down without an LVM report.
 */
import type * as dmsetup from '../tools/dmsetup.js';
import { dmName, lvMapperName } from './dmNames.js';

/** An LV's dm uuid: LVM-, the VG uuid and the LV uuid, both without dashes. */
const LVM_DM_UUID = /^LVM-([A-Za-z0-9]{32})([A-Za-z0-9]{32})$/;

/** An LV uuid as LVM prints it (6-4-4-4-4-4-6 characters) from its compact form. */
export function dashedUuid(compact: string): string {
  const parts: string[] = [];
  let at = 0;
  for (const n of [6, 4, 4, 4, 4, 4, 6]) {
    parts.push(compact.slice(at, at + n));
    at += n;
  }
  return parts.join('-');
}

export interface PlainMapping {
  /** The clone's LV uuid, dashed. */
  uuid: string;
  /** Its writable snapshot (the VM's disk) and the clone's own LV device under it. */
  rw: dmsetup.DmDevice;
  cow: dmsetup.DmDevice;
  /** The LV the snapshot stands on (the sealed image) and its LV name. */
  origin: dmsetup.DmDevice;
  originLv: string;
}

/**
 * The clone `name` of `vg` when the node maps it the plainest way: its writable snapshot stands
 * on exactly two devices, the clone's own LV and another LV of the same VG (its image), with no
 * cache layer and no read-only ancestor between, and nothing else stands on the COW. Any other
 * shape (or no such mapping) gives undefined: the caller then observes the repository as usual.
 * The shape itself proves the roles: only cowstack creates COWSTACK-rw devices, over a live
 * clone's COW and its parent's device, and a parent that is an LV is a sealed image.
 */
export function plainMapping(
  vg: string,
  name: string,
  devices: ReadonlyMap<string, dmsetup.DmDevice>,
): PlainMapping | undefined {
  const cow = devices.get(lvMapperName(vg, name));
  const own = cow && LVM_DM_UUID.exec(cow.uuid);
  if (!cow || !own || cow.open !== 1) return undefined;
  const rw = devices.get(dmName('rw', own[2]!));
  if (!rw || rw.uses.length !== 2 || !rw.uses.includes(cow.name)) return undefined;
  const originName = rw.uses.find((u) => u !== cow.name)!;
  const origin = devices.get(originName);
  const theirs = origin && LVM_DM_UUID.exec(origin.uuid);
  const prefix = lvMapperName(vg, '');
  if (!origin || !theirs || theirs[1] !== own[1] || !originName.startsWith(prefix)) return undefined;
  return {
    uuid: dashedUuid(own[2]!),
    rw,
    cow,
    origin,
    originLv: originName.slice(prefix.length).replace(/--/g, '-'),
  };
}
