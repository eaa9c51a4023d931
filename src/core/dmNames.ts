/**
 * Names and uuids of the device-mapper devices cowstack creates. Both derive from the LV
 * UUID of the LV the device stands for, and the uuid carries cowstack's own prefix (never
 * LVM's "LVM-"), so `dmsetup info -c -o name,uuid` alone rediscovers the whole stack
 * after a crash, whatever the LVs are called now.
 *   cowstack-ro-<uuid>   read-only snapshot of a committed clone (shared by its children)
 *   cowstack-rw-<uuid>   the writable snapshot of a live clone: the VM's disk
 *   cowstack-wb-<uuid>   a live clone's transient write-back cache (dm-writecache over its
 *                        exclusive COW, cache LV in the node-local cache VG): the rw
 *                        snapshot's COW device while it exists
 *   cowstack-lc-<uuid>   the lazy read cache of an image on this node (dm-cache smq,
 *                        writethrough, read-only table over the shared image LV, metadata
 *                        and data LVs in the cache VG): the bottom origin of its stacks
 */
export const DM_UUID_PREFIX = 'COWSTACK-';

export type DmRole = 'ro' | 'rw' | 'wb' | 'lc';
const ROLES: readonly DmRole[] = ['ro', 'rw', 'wb', 'lc'];

/** An LV uuid without its dashes, as dm names and sanlock lookups key it. */
export const compactUuid = (lvUuid: string): string => lvUuid.replace(/-/g, '');

export const dmName = (role: DmRole, lvUuid: string): string => `cowstack-${role}-${compactUuid(lvUuid)}`;
export const dmUuid = (role: DmRole, lvUuid: string): string => `${DM_UUID_PREFIX}${role}-${compactUuid(lvUuid)}`;
export const dmPath = (role: DmRole, lvUuid: string): string => `/dev/mapper/${dmName(role, lvUuid)}`;

/** Parse a dm uuid back into its role and the compact LV uuid; undefined if not ours. */
export function parseDmUuid(uuid: string): { role: DmRole; lvUuid: string } | undefined {
  if (!uuid.startsWith(DM_UUID_PREFIX)) return undefined;
  // Exactly PREFIX-ROLE-UUID: anything after the uuid (a future layer's suffix) is not this role's device.
  const m = /^([a-z]+)-([A-Za-z0-9]{32})$/.exec(uuid.slice(DM_UUID_PREFIX.length));
  if (!m || !ROLES.includes(m[1] as DmRole)) return undefined;
  return { role: m[1] as DmRole, lvUuid: m[2]! };
}

/**
 * The role and LV of one of our devices, from its name first, then its uuid. The kernel sets
 * a device's uuid once; its name can change while it is open. A live backup point
 * (core/livePoint.ts) moves a running disk's writable layer onto a new COW and renames the
 * VM's device after that COW's LV, so its uuid still names the LV that became the backup
 * point: the name is the one that follows the LV the device stands for now.
 */
export function dmIdentity(d: { name: string; uuid: string }): { role: DmRole; lvUuid: string } | undefined {
  const m = /^cowstack-([a-z]+)-([A-Za-z0-9]{32})$/.exec(d.name);
  if (m && ROLES.includes(m[1] as DmRole) && parseDmUuid(d.uuid)) return { role: m[1] as DmRole, lvUuid: m[2]! };
  return parseDmUuid(d.uuid);
}

/**
 * The LV uuid (compact) in the dm uuid of one of LVM's own devices: `LVM-<VG uuid><LV uuid>`,
 * 32 characters each, then a layer's suffix if any (`-real`, `-cow`, `-pool`).
 */
export function lvmDeviceLvUuid(uuid: string): string | undefined {
  return /^LVM-[A-Za-z0-9]{32}([A-Za-z0-9]{32})(-|$)/.exec(uuid)?.[1];
}

export const sameUuid = (a: string, b: string): boolean => compactUuid(a) === compactUuid(b);

/** Device-mapper name of an LV (dashes doubled) and its /dev/mapper path. */
export const lvMapperName = (vg: string, lv: string): string => `${vg.replace(/-/g, '--')}-${lv.replace(/-/g, '--')}`;
export const lvMapperPath = (vg: string, lv: string): string => `/dev/mapper/${lvMapperName(vg, lv)}`;
