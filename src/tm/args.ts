/**
 * OpenNebula transfer-manager arguments, parsed and validated before anything runs.
 * oned passes them shell-escaped to tm/cowstack/<action> on the front-end; they come from
 * VM templates, so every one is treated as hostile: each value must match a narrow shape
 * (host names, numeric ids, paths exactly under the datastores directory), and an error
 * names the bad value. Nothing here is ever handed to a shell.
 *
 * Naming (what the driver stores in the repository VG):
 *   image SOURCE          `<vg>/<lv>`: what a datastore driver's cp prints for an image
 *   VM disk (clone)       `one-<vm>-<disk>`: a COW clone of the image (or a volatile LV)
 *   disk snapshot N       `one-<vm>-<disk>-s<N>`: a committed clone inside the disk's chain
 *   persistent lineage    `<image>-p<K>`: the K-th sync-back of persistent image `<image>`
 *   (the snapshot and lineage suffixes are core's: src/core/vmDisks.ts)
 */
import { usageError } from '../exec/errors.js';
import { validateHostName, validateLvName, validateVgName } from '../core/validate.js';
import { RESTORED_SUFFIX, snapshotName } from '../core/vmDisks.js';

/** OpenNebula's default DATASTORE_LOCATION on the hosts. */
export const DS_LOCATION = '/var/lib/one/datastores';

export const TM_ACTIONS = [
  'clone',
  'ln',
  'mvds',
  'cpds',
  'mv',
  'delete',
  'mkimage',
  'mkswap',
  'context',
  'resize',
  'premigrate',
  'postmigrate',
  'failmigrate',
  'monitor',
  'snap_create',
  'snap_create_live',
  'snap_delete',
  'snap_revert',
  'activate',
  'prebackup',
  'prebackup_live',
  'postbackup',
  'postbackup_live',
  'restore',
] as const;
export type TmAction = (typeof TM_ACTIONS)[number];

/** `host:/var/lib/one/datastores/<ds>/<vm>/disk.<id>` or the VM directory itself. */
export interface TmPath {
  host: string;
  /** The normalized path (no doubled slashes, no trailing slash). */
  path: string;
  dsId: number;
  vmId: number;
  /** The disk id, or undefined when the path is the VM directory. */
  diskId?: number;
  /** `<DS_LOCATION>/<ds>/<vm>` */
  vmDir: string;
}

export interface TmSource {
  host: string;
  vg: string;
  lv: string;
}

export type TmRequest =
  | { action: 'clone' | 'ln'; src: TmSource; dst: TmPath & { diskId: number }; vmId: number; dsId: number }
  | { action: 'mvds'; src: TmPath & { diskId: number }; dst: TmSource; vmId: number; dsId: number }
  | { action: 'cpds'; src: TmPath & { diskId: number }; dst: TmSource; snapId: number; vmId: number; dsId: number }
  | { action: 'mv'; src: TmPath; dst: TmPath; vmId: number; dsId: number }
  | { action: 'delete'; target: TmPath; vmId: number; dsId: number }
  | { action: 'mkimage'; sizeMb: number; format: string; dst: TmPath & { diskId: number }; vmId: number; dsId: number }
  | { action: 'mkswap'; sizeMb: number; dst: TmPath & { diskId: number }; vmId: number; dsId: number }
  | {
      action: 'context';
      files: Array<{ path: string; name: string }>;
      dst: TmPath & { diskId: number };
      vmId: number;
      dsId: number;
    }
  | { action: 'resize'; target: TmPath & { diskId: number }; sizeMb: number; vmId: number; dsId: number }
  | {
      action: 'premigrate' | 'postmigrate' | 'failmigrate';
      srcHost: string;
      dstHost: string;
      vmDir: string;
      vmId: number;
      dsId: number;
      xml: string;
    }
  | {
      action: 'snap_create' | 'snap_create_live' | 'snap_delete' | 'snap_revert';
      target: TmPath & { diskId: number };
      snapId: number;
      vmId: number;
      dsId: number;
    }
  | { action: 'monitor'; dsId: number; xml: string }
  | {
      action: 'prebackup' | 'prebackup_live' | 'postbackup' | 'postbackup_live';
      host: string;
      vmDir: string;
      diskIds: number[];
      deployId: string;
      /** The backup job's id; undefined for a VM's own backup (oned passes "-"). */
      jobId?: number;
      vmId: number;
      dsId: number;
      xml: string;
    }
  | {
      /** oned's RESTORE (TransferManager::trigger_restore): the VM's disks from backup image imgId. */
      action: 'restore';
      host: string;
      vmDir: string;
      /** The backup image (its datastore's driver lists and downloads the backup). */
      imgId: number;
      /** The increment to restore up to; -1: the backup's whole chain. */
      incId: number;
      /** The disk to restore; -1: every disk of the backup. */
      diskId: number;
      vmId: number;
      dsId: number;
    }
  | { action: 'activate'; host: string };

const bad = (what: string, value: string | undefined, rule: string) =>
  usageError(
    `${what} ${value === undefined ? 'is missing' : `"${value}" is invalid`}: ${rule}`,
    'this is what OpenNebula passes to the TM driver; check the datastore and VM template',
  );

/** Ids are plain decimal numbers; leading zeros, signs and spaces are refused. */
export function parseId(text: string | undefined, what: string, opts: { allowMinusOne?: boolean } = {}): number {
  if (opts.allowMinusOne && text === '-1') return -1;
  if (text === undefined || !/^(0|[1-9][0-9]{0,9})$/.test(text))
    throw bad(what, text, `must be a number${opts.allowMinusOne ? ' (or -1)' : ''}`);
  return Number(text);
}

/** The hypervisor's name of the VM (libvirt's domain, `one-<vm_id>`): never starts with "-". */
export function parseDeployId(text: string | undefined): string {
  if (text === undefined || !/^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$/.test(text))
    throw bad('deploy id', text, 'letters, digits and _ . : - only');
  return text;
}

function parseSizeMb(text: string | undefined, what: string): number {
  const n = parseId(text, what);
  if (n < 1) throw bad(what, text, 'must be at least 1 (MiB)');
  return n;
}

/** Split `host:rest` at the first `:` and validate the host. */
function splitHost(text: string | undefined, what: string): { host: string; rest: string } {
  if (text === undefined || text === '') throw bad(what, undefined, 'expected HOST:PATH');
  const i = text.indexOf(':');
  if (i <= 0) throw bad(what, text, 'expected HOST:PATH (the host, a ":", then the path)');
  const host = text.slice(0, i);
  try {
    validateHostName(host);
  } catch {
    throw bad(`host of ${what}`, host, 'letters, digits, "-", "_" and "." only');
  }
  return { host, rest: text.slice(i + 1) };
}

/**
 * A system-datastore path. oned often doubles slashes (`/var/lib/one//datastores/0/7/disk.0`);
 * those are collapsed. Anything else outside `<DS_LOCATION>/<ds>/<vm>[/disk.<id>]` is refused.
 */
export function parseTmPath(
  text: string | undefined,
  what: string,
  opts: { vmId?: number; dir?: 'allowed' | 'required' | 'no' } = {},
): TmPath {
  const { host, rest } = splitHost(text, what);
  if (!/^[A-Za-z0-9._/-]+$/.test(rest)) throw bad(what, text, 'the path may contain only letters, digits and . _ / -');
  const segments = rest.split('/').filter((s) => s !== '');
  if (!rest.startsWith('/') || segments.some((s) => s === '.' || s === '..'))
    throw bad(what, text, 'the path must be absolute, without "." or ".." parts');
  const path = `/${segments.join('/')}`;
  const base = DS_LOCATION.split('/').filter(Boolean);
  const orDir = opts.dir === 'no' ? '' : ' or the VM directory';
  const outside = () => bad(what, text, `the path must be ${DS_LOCATION}/<ds_id>/<vm_id>/disk.<disk_id>${orDir}`);
  if (segments.length < base.length + 2 || base.some((b, i) => segments[i] !== b)) throw outside();
  const tail = segments.slice(base.length);
  if (tail.length > 3) throw outside();
  const num = (t: string | undefined, which: string) => {
    if (t === undefined || !/^(0|[1-9][0-9]{0,9})$/.test(t))
      throw bad(what, text, `the ${which} id in the path must be a number`);
    return Number(t);
  };
  const dsId = num(tail[0], 'datastore');
  const vmId = num(tail[1], 'VM');
  if (opts.vmId !== undefined && vmId !== opts.vmId)
    throw bad(what, text, `its VM directory is not that of VM ${opts.vmId}`);
  const vmDir = `${DS_LOCATION}/${dsId}/${vmId}`;
  if (tail.length === 2) {
    if (opts.dir === 'no' || opts.dir === undefined)
      throw bad(what, text, `expected a disk path ${vmDir}/disk.<disk_id>`);
    return { host, path, dsId, vmId, vmDir };
  }
  if (opts.dir === 'required') throw bad(what, text, `expected the VM directory ${vmDir}/`);
  const m = /^disk\.(0|[1-9][0-9]{0,5})$/.exec(tail[2]!);
  if (!m) throw bad(what, text, 'the file must be disk.<disk_id>');
  return { host, path, dsId, vmId, vmDir, diskId: Number(m[1]) };
}

const diskPath = (text: string | undefined, what: string, vmId: number): TmPath & { diskId: number } =>
  parseTmPath(text, what, { vmId, dir: 'no' }) as TmPath & { diskId: number };

/** `fe:VG/LV` — the image SOURCE as the datastore driver printed it. */
export function parseSource(text: string | undefined, what = 'SOURCE'): TmSource {
  const { host, rest } = splitHost(text, what);
  const parts = rest.split('/');
  if (parts.length !== 2) throw bad(what, text, 'expected FRONTEND:VG/LV (the image SOURCE cowstack datastores use)');
  try {
    return { host, vg: validateVgName(parts[0]!), lv: validateLvName(parts[1]!, 'image LV') };
  } catch (e) {
    throw bad(what, text, (e as Error).message);
  }
}

/** Context files are `PATH` or `PATH:NAME` on the front-end (NAME = name inside the ISO). */
export function parseContextFile(text: string): { path: string; name: string } {
  const i = text.indexOf(':');
  const path = i < 0 ? text : text.slice(0, i);
  const name = i < 0 ? path.split('/').pop()! : text.slice(i + 1);
  if (!/^\/[A-Za-z0-9._/+-]+$/.test(path) || path.split('/').some((s) => s === '..' || s === '.'))
    throw bad('context file', text, 'must be an absolute path of letters, digits and . _ / + - without ".." parts');
  if (!/^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$/.test(name))
    throw bad('context file name', name, 'letters, digits and . _ + - only');
  return { path, name };
}

/** Base64 XML on stdin (pre/post/failmigrate, monitor): decoded, or refused. Empty is allowed. */
export function decodeXml(stdin: string, what: string): string {
  const text = stdin.replace(/\s+/g, '');
  if (!text) return '';
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 === 1)
    throw usageError(`${what} on stdin is not base64`, 'oned sends the XML base64-encoded');
  const xml = Buffer.from(text, 'base64').toString('utf8');
  if (!xml.trimStart().startsWith('<')) throw usageError(`${what} on stdin is not base64-encoded XML`);
  return xml;
}

/** The VM XML oned's VMM driver gives the backup actions on stdin: plain XML, or base64 (accepted too). */
export function decodeVmXml(stdin: string): string {
  return stdin.trimStart().startsWith('<') ? stdin : decodeXml(stdin, 'the VM XML');
}

/** The text of the first `<TAG>` element (CDATA unwrapped), or undefined. */
export function xmlValue(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>(?:<!\\[CDATA\\[)?([^<\\]]*)(?:\\]\\]>)?</${tag}>`).exec(xml);
  return m ? m[1]!.trim() : undefined;
}

/**
 * The VM's backup configuration (BACKUPS/BACKUP_CONFIG of the VM XML): undefined for a full
 * backup, else the increment this backup is (LAST_INCREMENT_ID + 1; 0 starts a chain).
 */
export function backupIncrement(xml: string): number | undefined {
  const config = /<BACKUP_CONFIG>([\s\S]*?)<\/BACKUP_CONFIG>/.exec(xml)?.[1] ?? '';
  const mode = (xmlValue(config, 'MODE') ?? 'FULL').toUpperCase();
  if (mode === 'FULL') return undefined;
  if (mode !== 'INCREMENT') throw bad('backup MODE', mode, 'FULL or INCREMENT');
  return parseId(xmlValue(config, 'LAST_INCREMENT_ID') ?? '-1', 'LAST_INCREMENT_ID', { allowMinusOne: true }) + 1;
}

function arity(action: string, args: readonly string[], n: number | [number, number], shape: string): void {
  const [min, max] = typeof n === 'number' ? [n, n] : n;
  if (args.length < min || args.length > max)
    throw usageError(
      `tm ${action} takes ${shape}, got ${args.length} argument(s)`,
      `usage: cowstack tm ${action} ${shape}`,
    );
}

const BACKUP_ACTIONS = new Set(['prebackup', 'prebackup_live', 'postbackup', 'postbackup_live']);

/**
 * No OpenNebula TM argument starts with "-" except cpds's snapshot id "-1", the backup
 * actions' job id "-" (a VM's own backup, not a backup job's) and restore's increment and
 * disk ids "-1" (the whole chain, every disk). One that does is
 * an option smuggled in through a VM template (--config=..., --dry-run, --help): refused by
 * position and value before any other check, whatever the action.
 */
function refuseOptionShaped(action: string, args: readonly string[]): void {
  args.forEach((arg, i) => {
    if (!arg.startsWith('-') || (action === 'cpds' && i === 2 && arg === '-1')) return;
    if (BACKUP_ACTIONS.has(action) && args.length === 6 && i === 3 && arg === '-') return;
    if (action === 'restore' && (i === 3 || i === 4) && arg === '-1') return;
    throw usageError(
      `tm ${action}: argument ${i + 1} "${arg}" looks like an option: no OpenNebula TM argument starts with "-"`,
      'this is what OpenNebula passes to the TM driver; check the datastore and VM template',
    );
  });
}

export function parseTmArgs(action: string, args: readonly string[], stdin = ''): TmRequest {
  const a = args;
  refuseOptionShaped(action, a);
  switch (action) {
    case 'clone':
    case 'ln': {
      arity(action, a, 4, 'fe:SOURCE HOST:DISK_PATH VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      return {
        action,
        src: parseSource(a[0]),
        dst: diskPath(a[1], 'destination', vmId),
        vmId,
        dsId: parseId(a[3], 'datastore id'),
      };
    }
    case 'mvds': {
      arity(action, a, 4, 'HOST:DISK_PATH fe:SOURCE VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      return {
        action,
        src: diskPath(a[0], 'disk', vmId),
        dst: parseSource(a[1]),
        vmId,
        dsId: parseId(a[3], 'datastore id'),
      };
    }
    case 'cpds': {
      arity(action, a, 5, 'HOST:DISK_PATH fe:SOURCE SNAP_ID VM_ID DS_ID');
      const vmId = parseId(a[3], 'VM id');
      return {
        action,
        src: diskPath(a[0], 'disk', vmId),
        dst: parseSource(a[1]),
        snapId: parseId(a[2], 'snapshot id', { allowMinusOne: true }),
        vmId,
        dsId: parseId(a[4], 'datastore id'),
      };
    }
    case 'mv': {
      arity(action, a, 4, 'HOST_A:PATH HOST_B:PATH VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      const src = parseTmPath(a[0], 'source', { vmId, dir: 'allowed' });
      const dst = parseTmPath(a[1], 'destination', { vmId, dir: 'allowed' });
      if ((src.diskId === undefined) !== (dst.diskId === undefined) || src.diskId !== dst.diskId)
        throw usageError(`tm mv: source "${a[0]}" and destination "${a[1]}" are not the same disk or directory`);
      return { action, src, dst, vmId, dsId: parseId(a[3], 'datastore id') };
    }
    case 'delete': {
      arity(action, a, 3, 'HOST:PATH VM_ID DS_ID');
      const vmId = parseId(a[1], 'VM id');
      return {
        action,
        target: parseTmPath(a[0], 'path', { vmId, dir: 'allowed' }),
        vmId,
        dsId: parseId(a[2], 'datastore id'),
      };
    }
    case 'mkimage': {
      arity(action, a, 5, 'SIZE_MB FORMAT HOST:DISK_PATH VM_ID DS_ID');
      const vmId = parseId(a[3], 'VM id');
      const format = a[1]!;
      if (!/^(raw|swap|ext[234]|xfs|vfat)$/.test(format))
        throw bad('format', format, 'raw, swap, ext2, ext3, ext4, xfs or vfat');
      return {
        action,
        sizeMb: parseSizeMb(a[0], 'size'),
        format,
        dst: diskPath(a[2], 'destination', vmId),
        vmId,
        dsId: parseId(a[4], 'datastore id'),
      };
    }
    case 'mkswap': {
      arity(action, a, 4, 'SIZE_MB HOST:DISK_PATH VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      return {
        action,
        sizeMb: parseSizeMb(a[0], 'size'),
        dst: diskPath(a[1], 'destination', vmId),
        vmId,
        dsId: parseId(a[3], 'datastore id'),
      };
    }
    case 'context': {
      if (a.length < 4)
        throw usageError(`tm context takes CONTEXT_FILE... HOST:DISK_PATH VM_ID DS_ID, got ${a.length} argument(s)`);
      const vmId = parseId(a.at(-2), 'VM id');
      const files = a.slice(0, -3).map(parseContextFile);
      const names = new Set<string>();
      for (const f of files) {
        if (names.has(f.name)) throw usageError(`context file name "${f.name}" is given twice`);
        names.add(f.name);
      }
      return {
        action,
        files,
        dst: diskPath(a.at(-3), 'destination', vmId),
        vmId,
        dsId: parseId(a.at(-1), 'datastore id'),
      };
    }
    case 'resize': {
      arity(action, a, 4, 'HOST:DISK_PATH SIZE_MB VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      return {
        action,
        target: diskPath(a[0], 'disk', vmId),
        sizeMb: parseSizeMb(a[1], 'size'),
        vmId,
        dsId: parseId(a[3], 'datastore id'),
      };
    }
    case 'premigrate':
    case 'postmigrate':
    case 'failmigrate': {
      arity(action, a, [5, 6], 'SRC_HOST DST_HOST VM_DIR VM_ID DS_ID');
      const vmId = parseId(a[3], 'VM id');
      const host = (h: string | undefined, what: string) => {
        if (h === undefined) throw bad(what, h, 'a host name');
        try {
          return validateHostName(h);
        } catch {
          throw bad(what, h, 'letters, digits, "-", "_" and "." only');
        }
      };
      const srcHost = host(a[0], 'source host');
      const dstHost = host(a[1], 'destination host');
      const dir = parseTmPath(`${dstHost}:${a[2] ?? ''}`, 'VM directory', { vmId, dir: 'required' });
      return {
        action,
        srcHost,
        dstHost,
        vmDir: dir.vmDir,
        vmId,
        dsId: parseId(a[4], 'datastore id'),
        xml: decodeXml(stdin, 'the VM XML'),
      };
    }
    case 'snap_create':
    case 'snap_create_live':
    case 'snap_delete':
    case 'snap_revert': {
      arity(action, a, 4, 'HOST:DISK_PATH SNAP_ID VM_ID DS_ID');
      const vmId = parseId(a[2], 'VM id');
      return {
        action,
        target: diskPath(a[0], 'disk', vmId),
        snapId: parseId(a[1], 'snapshot id'),
        vmId,
        dsId: parseId(a[3], 'datastore id'),
      };
    }
    case 'monitor': {
      arity(action, a, 1, 'DS_ID');
      return { action, dsId: parseId(a[0], 'datastore id'), xml: decodeXml(stdin, 'the datastore XML') };
    }
    case 'prebackup':
    case 'prebackup_live':
    case 'postbackup':
    case 'postbackup_live': {
      arity(action, a, 6, 'HOST:VM_DIR DISK_ID[:DISK_ID...] DEPLOY_ID JOB_ID|- VM_ID DS_ID');
      const vmId = parseId(a[4], 'VM id');
      const dir = parseTmPath(a[0], 'VM directory', { vmId, dir: 'required' });
      const ids = a[1]!.split(':');
      if (!a[1] || new Set(ids).size !== ids.length) throw bad('disk ids', a[1], 'DISK_ID[:DISK_ID...], each once');
      const diskIds = ids.map((d) => parseId(d, 'disk id'));
      return {
        action,
        host: dir.host,
        vmDir: dir.vmDir,
        diskIds,
        deployId: parseDeployId(a[2]),
        ...(a[3] === '-' ? {} : { jobId: parseId(a[3], 'backup job id') }),
        vmId,
        dsId: parseId(a[5], 'datastore id'),
        xml: decodeVmXml(stdin),
      };
    }
    case 'restore': {
      // host:remote_system_ds vm_id img_id inc_id disk_id (src/tm/TransferManager.cc, trigger_restore).
      arity(action, a, 5, 'HOST:VM_DIR VM_ID IMG_ID INC_ID|-1 DISK_ID|-1');
      const vmId = parseId(a[1], 'VM id');
      const dir = parseTmPath(a[0], 'VM directory', { vmId, dir: 'required' });
      return {
        action,
        host: dir.host,
        vmDir: dir.vmDir,
        imgId: parseId(a[2], 'backup image id'),
        incId: parseId(a[3], 'increment id', { allowMinusOne: true }),
        diskId: parseId(a[4], 'disk id', { allowMinusOne: true }),
        vmId,
        dsId: dir.dsId,
      };
    }
    case 'activate': {
      arity(action, a, 1, 'HOST');
      try {
        return { action, host: validateHostName(a[0]!) };
      } catch {
        throw bad('host', a[0], 'letters, digits, "-", "_" and "." only');
      }
    }
    default:
      throw usageError(`unknown TM action "${action}"`, `one of: ${TM_ACTIONS.join(', ')}`);
  }
}

// ---- names in the repository ------------------------------------------------------------------

export const diskLv = (vmId: number, diskId: number): string => `one-${vmId}-${diskId}`;
export const snapLv = (vmId: number, diskId: number, snapId: number): string =>
  snapshotName(diskLv(vmId, diskId), snapId);
/** Every LV of one VM: its disks, their snapshots, backup points and restored images (core/vmDisks.ts names those). */
export const vmLvPattern = (vmId: number): RegExp =>
  new RegExp(
    `^one-${vmId}-(0|[1-9][0-9]*)(-s(0|[1-9][0-9]*)|-b(0|[1-9][0-9]*)(\\.[A-Za-z0-9]{8})?|${RESTORED_SUFFIX})?$`,
  );

/** The VM, disk and (for a snapshot) snapshot ids an LV name of the driver's stands for; undefined for others. */
export function parseVmLv(name: string): { vmId: number; diskId: number; snapId?: number } | undefined {
  const m = /^one-(0|[1-9][0-9]{0,9})-(0|[1-9][0-9]{0,9})(?:-s(0|[1-9][0-9]{0,9}))?$/.exec(name);
  if (!m) return undefined;
  return { vmId: Number(m[1]), diskId: Number(m[2]), ...(m[3] !== undefined ? { snapId: Number(m[3]) } : {}) };
}
