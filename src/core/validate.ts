/**
 * Validation of everything that comes from outside (CLI flags, TM arguments, config)
 * before any command runs. Each error names the bad value and states the rule.
 */
import { usageError } from '../exec/errors.js';

// lvm(8) "VALID NAMES": these substrings are reserved for LVM's internal sub-LVs.
const LVM_RESERVED_PARTS = [
  '_cdata',
  '_cmeta',
  '_corig',
  '_iorig',
  '_mimage',
  '_mlog',
  '_pmspare',
  '_rimage',
  '_rmeta',
  '_tdata',
  '_tmeta',
  '_vorigin',
  '_vdata',
  '_wcorig',
];
const LVM_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/;

export function validateLvName(name: string, what = 'LV name'): string {
  const rule = 'letters, digits and + _ . - only, not starting with "-", at most 100 characters';
  if (typeof name !== 'string' || !name) throw usageError(`${what} is empty`, `use ${rule}`);
  if (name.length > 100) throw usageError(`${what} "${name}" is longer than 100 characters`, `use ${rule}`);
  if (!LVM_NAME.test(name)) throw usageError(`${what} "${name}" has characters LVM rejects`, `use ${rule}`);
  if (name === '.' || name === '..') throw usageError(`${what} "${name}" is reserved`, `use ${rule}`);
  if (/^(snapshot|pvmove)/.test(name))
    throw usageError(`${what} "${name}" starts with a prefix LVM reserves (snapshot, pvmove)`);
  const part = LVM_RESERVED_PARTS.find((p) => name.includes(p));
  if (part) throw usageError(`${what} "${name}" contains "${part}", which LVM reserves for internal volumes`);
  return name;
}

export function validateVgName(name: string): string {
  validateLvName(name, 'VG name');
  if (name.length > 63)
    throw usageError(`VG name "${name}" is longer than 63 characters (lvmlockd's lockspace name limit)`);
  return name;
}

/** `VG/LV` as sysadmins type it. */
export function parseVgLv(text: string): { vg: string; lv: string } {
  const m = /^([^/]+)\/([^/]+)$/.exec(text ?? '');
  if (!m) throw usageError(`"${text}" is not of the form VG/LV`, 'name the logical volume as VG/LV, e.g. repo/image1');
  return { vg: validateVgName(m[1]!), lv: validateLvName(m[2]!) };
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  s: 512,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

/**
 * Sizes as LVM writes them: binary units (K, M, G, T, P; KiB..PiB accepted; S = sectors).
 * A bare number is bytes. The result must be a positive multiple of 512 bytes.
 */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bskmgtp]?)(?:i?b)?\s*$/i.exec(String(text ?? ''));
  if (!m)
    throw usageError(
      `${what} "${text}" is not a size`,
      'write a number with an optional binary unit: 512M, 4G, 1.5T, 8192S (sectors)',
    );
  // Exact: a decimal times a power of two is an integer only if it really is one (no rounding:
  // "1024.2" is not 1024 bytes).
  const bytes = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (bytes <= 0) throw usageError(`${what} "${text}" must be greater than zero`);
  if (!Number.isSafeInteger(Math.ceil(bytes))) throw usageError(`${what} "${text}" is too large`);
  if (!Number.isInteger(bytes) || bytes % 512 !== 0)
    throw usageError(`${what} "${text}" is not a multiple of 512 bytes`);
  return bytes;
}

/** LVM's default extent size: LV sizes are rounded up to whole extents. */
export const EXTENT = 4 * 1024 * 1024;
export const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

// RFC 3720 3.2.6.3.1: iqn.YYYY-MM.reversed.domain[:unique], lower case, at most 223 bytes.
const IQN =
  /^iqn\.(\d{4})-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:_-]+)?$/;
const EUI = /^eui\.[0-9A-F]{16}$/;

export function validateIqn(iqn: string, what = 'IQN'): string {
  const rule =
    'iqn.YYYY-MM.reversed.domain[:identifier] in lower case (e.g. iqn.2003-01.org.example.repo:vg0), ' +
    'or eui. and 16 hex digits';
  if (!iqn || iqn.length > 223 || !(IQN.test(iqn) || EUI.test(iqn)))
    throw usageError(`${what} "${iqn}" is not a valid iSCSI name`, `use ${rule}`);
  return iqn;
}

/** host:port with an IPv4 address, a host name or [IPv6]; port defaults to 3260. */
export function validatePortal(portal: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$/.exec(portal ?? '');
  const port = m?.[3] === undefined ? 3260 : Number(m[3]);
  if (!m || port < 1 || port > 65535)
    throw usageError(`portal "${portal}" is not host[:port]`, 'e.g. 192.0.2.10:3260 or repo.example.org');
  return `${m[1]}:${port}`;
}

export function validateHostId(value: string | number): number {
  const n = /^\d{1,4}$/.test(String(value).trim()) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 2000)
    throw usageError(
      `host id "${value}" is not an integer from 1 to 2000`,
      'sanlock host ids are 1..2000 and unique per host in the cluster',
    );
  return n;
}

/** Block device paths: absolute under /dev, nothing a shell or LVM filter would reinterpret. */
export function validateDevicePath(path: string): string {
  if (!/^\/dev\/[A-Za-z0-9._:@+/-]+$/.test(path ?? '') || path.split('/').includes('..')) {
    throw usageError(
      `device "${path}" is not a plain /dev path`,
      'give an absolute path under /dev, e.g. /dev/disk/by-path/ip-...-lun-1',
    );
  }
  return path;
}

export function validateHostName(host: string): string {
  if (!/^[A-Za-z0-9_]([A-Za-z0-9_.-]*)$/.test(host ?? '') || host.length > 253) {
    throw usageError(`host "${host}" is not a valid host name`, 'use a host name, an ssh_config alias, or an address');
  }
  return host;
}
