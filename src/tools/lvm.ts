/**
 * LVM adapter: argv builders and json report parsers. Every LVM call runs with
 * LC_ALL=C (set by the runner), may carry a per-command device filter so it scans only
 * the shared LUN (faster, and blind to VGs inside VM disks), and never autoactivates.
 */
import { commandFailed } from '../exec/errors.js';
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { sbin, SETUP } from './program.js';

export interface LvmScope {
  /** Accept only these device path regexes (e.g. the repository LUN's by-path link). */
  devices?: string[];
}

/** `--config devices{...}` that accepts the listed paths and rejects everything else. */
export function deviceFilterConfig(devices: string[]): string {
  const accept = devices.map((d) => `"a|^${d.replace(/[|"\\]/g, '')}$|"`);
  return `devices { filter = [ ${[...accept, '"r|.*|"'].join(', ')} ] }`;
}

/**
 * LVM's command log as a json report (log/report_command_log): a row per object the command
 * processed, with its uuid. lvcreate logs against the VG, but an lvchange logs against each LV:
 * the change that marks a new LV live tells its uuid, with no lvs after it. Fixed text, which
 * sudoers allows exactly (a free --config would let the caller run programs as root).
 */
export const COMMAND_LOG_CONFIG =
  'log { report_command_log = 1 command_log_selection = "all" ' +
  'command_log_cols = "log_object_type,log_object_name,log_object_group,log_object_id" }';

export function lvmArgv(
  command: string,
  args: readonly string[],
  scope: LvmScope = {},
  o: { commandLog?: boolean } = {},
): string[] {
  const parts = [
    ...(scope.devices?.length ? [deviceFilterConfig(scope.devices)] : []),
    ...(o.commandLog ? [COMMAND_LOG_CONFIG] : []),
  ];
  const config = parts.length ? ['--config', parts.join(' ')] : [];
  const report = o.commandLog ? ['--reportformat', 'json'] : [];
  return [command, ...config, ...report, ...args];
}

/**
 * The LVs a command's log report names (COMMAND_LOG_CONFIG), with their uuids. Parsed row by
 * row: an lvchange that changes activation and metadata prints one json document per pass, and
 * a selection that drops the last row leaves a trailing comma, so the output is not one document.
 */
export function parseCommandLogLvs(stdout: string): Array<{ vg: string; name: string; uuid: string }> {
  const found = new Map<string, { vg: string; name: string; uuid: string }>();
  for (const line of stdout.split('\n')) {
    const text = line.trim().replace(/,$/, '');
    if (!text.startsWith('{"log_')) continue;
    const row = JSON.parse(text) as Record<string, unknown>;
    if (row.log_object_type !== 'lv' || !str(row.log_object_id)) continue;
    const lv = { vg: str(row.log_object_group), name: str(row.log_object_name), uuid: str(row.log_object_id) };
    found.set(`${lv.vg}/${lv.name}`, lv);
  }
  return [...found.values()];
}

export function lvmRequest(
  command: string,
  args: readonly string[],
  kind: RunRequest['kind'],
  scope: LvmScope = {},
  extra: Partial<RunRequest> = {},
): RunRequest {
  return {
    argv: lvmArgv(command, args, scope),
    kind,
    root: true,
    timeout: kind === 'read' ? 'query' : 'change',
    ...extra,
  };
}

const REPORT = ['--reportformat', 'json', '--units', 'b', '--nosuffix', '--binary'];

export const LV_FIELDS = [
  'lv_name',
  'vg_name',
  'lv_uuid',
  'lv_size',
  'lv_attr',
  'lv_tags',
  'lv_active_locally',
  'lv_active_exclusively',
  'lv_permissions',
  'lv_device_open',
  'lv_dm_path',
  'lv_lock_args',
  'lv_time',
  'lv_kernel_major',
  'lv_kernel_minor',
  // The VG's free space on every row: an operation that adds an LV checks it from the same report.
  'vg_free',
  'vg_mda_free',
] as const;
export const VG_FIELDS = [
  'vg_name',
  'vg_uuid',
  'vg_size',
  'vg_free',
  'vg_extent_size',
  'vg_lock_type',
  'vg_lock_args',
  'vg_shared',
  'vg_tags',
  'pv_count',
  'lv_count',
] as const;
export const PV_FIELDS = ['pv_name', 'vg_name', 'pv_uuid', 'pv_size', 'dev_size'] as const;

export interface LvInfo {
  name: string;
  vg: string;
  uuid: string;
  sizeBytes: number;
  attr: string;
  tags: string[];
  activeLocally: boolean;
  activeExclusively: boolean;
  /** From lv_permissions: 'read-only' or 'writeable'. */
  readOnly: boolean;
  open: boolean;
  dmPath: string;
  lockArgs: string;
  created: string;
  /** Kernel device numbers while active locally (-1 otherwise): dm tables name devices by them. */
  major: number;
  minor: number;
  /** The VG's free bytes and free metadata area bytes, when the report has them. */
  vgFreeBytes?: number;
  vgMdaFreeBytes?: number;
}

export interface VgInfo {
  name: string;
  uuid: string;
  sizeBytes: number;
  freeBytes: number;
  extentBytes: number;
  lockType: string;
  lockArgs: string;
  shared: boolean;
  tags: string[];
  pvCount: number;
  lvCount: number;
}

export interface PvInfo {
  name: string;
  vg: string;
  uuid: string;
  sizeBytes: number;
  devSizeBytes: number;
}

type Row = Record<string, unknown>;

/** json: `{"report":[{"lv":[{...}]}]}`; several reports may be concatenated in one output. */
export function parseReport(stdout: string, key: 'lv' | 'vg' | 'pv'): Row[] {
  const text = stdout.trim();
  if (!text) return [];
  let doc: { report?: Array<Record<string, Row[]>> };
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`cannot parse LVM json report: ${(e as Error).message}: ${text.slice(0, 200)}`);
  }
  return (doc.report ?? []).flatMap((r) => r[key] ?? []);
}

const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const num = (v: unknown): number => {
  const n = Number(v === '' || v === null || v === undefined ? NaN : v);
  return Number.isFinite(n) ? n : 0;
};
const bool = (v: unknown): boolean => v === 1 || v === '1' || v === true;
const tags = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : str(v) ? str(v).split(',') : []);

export function parseLvs(stdout: string): LvInfo[] {
  return parseReport(stdout, 'lv').map((r) => ({
    name: str(r.lv_name),
    vg: str(r.vg_name),
    uuid: str(r.lv_uuid),
    sizeBytes: num(r.lv_size),
    attr: str(r.lv_attr),
    tags: tags(r.lv_tags),
    activeLocally: bool(r.lv_active_locally),
    activeExclusively: bool(r.lv_active_exclusively),
    readOnly: str(r.lv_permissions).startsWith('read-only') || str(r.lv_attr)[1] === 'r',
    open: bool(r.lv_device_open),
    dmPath: str(r.lv_dm_path),
    lockArgs: str(r.lv_lockargs ?? r.lv_lock_args), // the report key drops the underscore
    created: str(r.lv_time),
    major: r.lv_kernel_major === undefined || r.lv_kernel_major === '' ? -1 : num(r.lv_kernel_major),
    minor: r.lv_kernel_minor === undefined || r.lv_kernel_minor === '' ? -1 : num(r.lv_kernel_minor),
    ...(r.vg_free === undefined || r.vg_free === '' ? {} : { vgFreeBytes: num(r.vg_free) }),
    ...(r.vg_mda_free === undefined || r.vg_mda_free === '' ? {} : { vgMdaFreeBytes: num(r.vg_mda_free) }),
  }));
}

export function parseVgs(stdout: string): VgInfo[] {
  return parseReport(stdout, 'vg').map((r) => ({
    name: str(r.vg_name),
    uuid: str(r.vg_uuid),
    sizeBytes: num(r.vg_size),
    freeBytes: num(r.vg_free),
    extentBytes: num(r.vg_extent_size),
    lockType: str(r.vg_lock_type),
    lockArgs: str(r.vg_lockargs ?? r.vg_lock_args),
    shared: bool(r.vg_shared),
    tags: tags(r.vg_tags),
    pvCount: num(r.pv_count),
    lvCount: num(r.lv_count),
  }));
}

export function parsePvs(stdout: string): PvInfo[] {
  return parseReport(stdout, 'pv').map((r) => ({
    name: str(r.pv_name),
    vg: str(r.vg_name),
    uuid: str(r.pv_uuid),
    sizeBytes: num(r.pv_size),
    devSizeBytes: num(r.dev_size),
  }));
}

// LVM says "not found" in several ways depending on the command and version. Only these: a
// bare /not found/ would also match lvmlockd's warning "Skipping global lock: lockspace not
// found or started", and "Cannot process volume group X" follows *every* VG read error
// (damaged metadata, missing PVs), which must not turn into "does not exist".
const NOT_FOUND = /Failed to find logical volume|Volume group "[^"]*" not found|logical volume\(s\) not found/i;
export const isLvmNotFound = (stderr: string): boolean => NOT_FOUND.test(stderr);

/** The request of `lvs` (see lvs below); for a plan step that reads an LV (exit status left to the caller). */
export const lvsRequest = (target: string, scope: LvmScope = {}): RunRequest =>
  lvmRequest('lvs', ['--nolocking', ...REPORT, '-o', LV_FIELDS.join(','), target], 'read', scope, {
    allowFailure: true,
  });

/**
 * lvs for one LV (undefined if it does not exist) or all LVs of a VG.
 *
 * Every lvs report runs with `--nolocking`: read the VG metadata without taking the VG lock. In a shared
 * VG every locked read is a sanlock lease acquisition on the LUN, and two nodes reading at
 * once collide (measured in the testbed: 5% of VG lock requests waited 2 to 18 s). A report
 * needs no lock to be consistent: LVM commits metadata by writing the new copy beside the
 * old one and then one header sector, and checks a checksum on read, so a reader sees one
 * committed version or the other. A lock would not make the answer any fresher once the
 * command returned either; every change cowstack makes is a locking LVM command that LVM
 * itself re-validates. (oVirt's VDSM reads shared VGs the same way on non-SPM hosts.)
 */
export async function lvs(runner: Runner, target: string, scope: LvmScope = {}): Promise<LvInfo[]> {
  const r = await runner.run(lvsRequest(target, scope));
  if (r.exitCode !== 0) {
    if (isLvmNotFound(r.stderr)) return [];
    throw commandFailed(runner.target, r);
  }
  return parseLvs(r.stdout);
}

export async function findLv(
  runner: Runner,
  vg: string,
  lv: string,
  scope: LvmScope = {},
): Promise<LvInfo | undefined> {
  return (await lvs(runner, `${vg}/${lv}`, scope))[0];
}

export async function vgs(runner: Runner, vg?: string, scope: LvmScope = {}): Promise<VgInfo[]> {
  const r = await runner.run(
    lvmRequest('vgs', [...REPORT, '-o', VG_FIELDS.join(','), ...(vg ? [vg] : [])], 'read', scope, {
      allowFailure: true,
    }),
  );
  if (r.exitCode !== 0) {
    if (vg && isLvmNotFound(r.stderr)) return [];
    throw commandFailed(runner.target, r);
  }
  return parseVgs(r.stdout);
}

export async function pvs(runner: Runner, scope: LvmScope = {}): Promise<PvInfo[]> {
  const r = await runner.run(lvmRequest('pvs', [...REPORT, '-o', PV_FIELDS.join(',')], 'read', scope));
  return parsePvs(r.stdout);
}

/** `lvmconfig SECTION/KEY` → the value, or undefined when unset. */
export async function lvmconfigValue(runner: Runner, key: string): Promise<string | undefined> {
  const r = await runner.run({
    argv: ['lvmconfig', '--typeconfig', 'full', key],
    kind: 'read',
    root: true,
    allowFailure: true,
  });
  if (r.exitCode !== 0) return undefined;
  return parseLvmconfigValue(r.stdout);
}

export function parseLvmconfigValue(stdout: string): string | undefined {
  const m = /^\s*[\w]+\s*=\s*(.*)$/m.exec(stdout);
  if (!m) return undefined;
  return m[1]!.trim().replace(/^"(.*)"$/, '$1');
}

// ---- verbs (requests only: plans decide when they run) ---------------------------------

/** `vg/lv`, or several: LVM acts on each in one command (one VG lock round). */
type Targets = string | readonly string[];
const list = (t: Targets): string[] => (typeof t === 'string' ? [t] : [...t]);

/** -an: inactive; -aey: active exclusively (the cluster lock names one writer); -asy: shared. */
export type Activation = 'n' | 'ey' | 'sy';
const activationFlag = (a: Activation): string => `-a${a}`;

/**
 * A tag change that LVM applies in the same metadata commit: dels are written before adds,
 * so `{ del: [old], add: [new] }` swaps a state tag. Several changes keep their order.
 */
export interface TagChange {
  del?: readonly string[];
  add?: readonly string[];
}
export type TagChanges = TagChange | readonly TagChange[];

export function tagArgs(changes: TagChanges | undefined): string[] {
  if (!changes) return [];
  const all: readonly TagChange[] = Array.isArray(changes) ? changes : [changes as TagChange];
  return all.flatMap((c) => [
    ...(c.del ?? []).flatMap((t) => ['--deltag', t]),
    ...(c.add ?? []).flatMap((t) => ['--addtag', t]),
  ]);
}

export interface CreateLv {
  vg: string;
  name: string;
  bytes: number;
  tags?: readonly string[];
  /** 'n' (the default) creates it inactive; 'ey' also activates it exclusively in the same command. */
  activate?: Activation;
  /**
   * Zero the first 4 KiB (-Zy): needs the LV active, so only with activate 'ey'. Off by
   * default: callers that zero write the exact header they need (a chunk, a superblock).
   */
  zero?: boolean;
}

/**
 * lvcreate of a plain linear LV that never autoactivates (-Wn: no wipe-signature prompt,
 * which would hang without a terminal). For the repository VG pass its scope; a node-local
 * VG (the cache VG) has none.
 */
export function createLvReq(o: CreateLv, scope: LvmScope = {}): RunRequest {
  const activate = o.activate ?? 'n';
  if (o.zero && activate !== 'ey') throw new Error(`lvcreate -Zy needs the LV active (-aey), not -a${activate}`);
  return lvmRequest(
    'lvcreate',
    [
      activationFlag(activate),
      o.zero ? '-Zy' : '-Zn',
      '-Wn',
      '--setautoactivation',
      'n',
      '-L',
      `${o.bytes}b`,
      '-n',
      o.name,
      ...tagArgs({ add: o.tags ?? [] }),
      o.vg,
    ],
    'write',
    scope,
  );
}

export interface LvChange {
  activate?: Activation;
  /** --refresh: reload the kernel table from the metadata (after another node grew the LV). */
  refresh?: boolean;
  /** --permission r. */
  readOnly?: boolean;
  tags?: TagChanges;
  /** Print the command log as json, which names each changed LV's uuid (parseCommandLogLvs). */
  reportUuids?: boolean;
}

/** One lvchange: activation, refresh, permission and tag changes ride in the same command. */
export function changeLvReq(targets: Targets, change: LvChange, scope: LvmScope = {}): RunRequest {
  const args = [
    ...(change.activate ? [activationFlag(change.activate)] : []),
    ...(change.refresh ? ['--refresh'] : []),
    ...(change.readOnly ? ['--permission', 'r'] : []),
    ...tagArgs(change.tags),
  ];
  if (!args.length) throw new Error('lvchange with nothing to change');
  const req = lvmRequest('lvchange', [...args, ...list(targets)], 'write', scope);
  return change.reportUuids
    ? { ...req, argv: lvmArgv('lvchange', [...args, ...list(targets)], scope, { commandLog: true }) }
    : req;
}

export const activateReq = (targets: Targets, mode: 'exclusive' | 'shared', scope: LvmScope = {}): RunRequest =>
  changeLvReq(targets, { activate: mode === 'shared' ? 'sy' : 'ey' }, scope);
export const deactivateReq = (targets: Targets, scope: LvmScope = {}): RunRequest =>
  changeLvReq(targets, { activate: 'n' }, scope);
export const refreshReq = (targets: Targets, scope: LvmScope = {}): RunRequest =>
  changeLvReq(targets, { refresh: true }, scope);
export const tagLvReq = (targets: Targets, tags: TagChanges, scope: LvmScope = {}): RunRequest =>
  changeLvReq(targets, { tags }, scope);

export const removeLvReq = (targets: Targets, scope: LvmScope = {}): RunRequest =>
  lvmRequest('lvremove', ['-y', ...list(targets)], 'write', scope);
export const renameLvReq = (vg: string, from: string, to: string, scope: LvmScope = {}): RunRequest =>
  lvmRequest('lvrename', [vg, from, to], 'write', scope);
/** Grow to an absolute size in bytes (never shrinks: lvextend refuses a smaller size). */
export const extendLvReq = (target: string, bytes: number, scope: LvmScope = {}): RunRequest =>
  lvmRequest('lvextend', ['-L', `${bytes}b`, target], 'write', scope);

// ---- volume groups ---------------------------------------------------------------------

/**
 * vgcreate on one device, never autoactivated. With a lock type the VG is shared
 * (lvmlockd), and creating it initializes the lockspace on the LUN: the long timeout.
 */
export function createVgReq(
  vg: string,
  device: string,
  o: { lockType?: string; metadataMiB?: number } = {},
): RunRequest {
  const shared = o.lockType ? ['--shared', '--lock-type', o.lockType] : [];
  // LVM's default area is 1 MiB: too small for a repository of thousands of tagged LVs, and
  // it cannot be grown on an existing PV, so the size is chosen once, here (core/capacity.ts).
  const mda = o.metadataMiB ? ['--metadatasize', `${o.metadataMiB}m`] : [];
  return lvmRequest(
    'vgcreate',
    [...shared, ...mda, '--setautoactivation', 'n', vg, device],
    'write',
    {},
    o.lockType ? { timeout: 'lockspace' } : {},
  );
}
/** What fills up in a VG: extents, the metadata area, LV count (see core/capacity.ts). */
export interface VgSpace {
  name: string;
  sizeBytes: number;
  freeBytes: number;
  extentBytes: number;
  extentCount: number;
  freeExtents: number;
  /** Size of the smallest metadata area and its free bytes as LVM reports them. */
  mdaBytes: number;
  mdaFreeBytes: number;
  mdaCount: number;
  lvCount: number;
}

const VG_SPACE_FIELDS = [
  'vg_name',
  'vg_size',
  'vg_free',
  'vg_extent_size',
  'vg_extent_count',
  'vg_free_count',
  'vg_mda_size',
  'vg_mda_free',
  'vg_mda_count',
  'lv_count',
] as const;

export function parseVgSpace(stdout: string): VgSpace[] {
  return parseReport(stdout, 'vg').map((r) => ({
    name: str(r.vg_name),
    sizeBytes: num(r.vg_size),
    freeBytes: num(r.vg_free),
    extentBytes: num(r.vg_extent_size),
    extentCount: num(r.vg_extent_count),
    freeExtents: num(r.vg_free_count),
    mdaBytes: num(r.vg_mda_size),
    mdaFreeBytes: num(r.vg_mda_free),
    mdaCount: num(r.vg_mda_count),
    lvCount: num(r.lv_count),
  }));
}

/** Space report of one VG (undefined if it does not exist); unlocked like every report (see lvs). */
export async function vgSpace(runner: Runner, vg: string, scope: LvmScope = {}): Promise<VgSpace | undefined> {
  const r = await runner.run(
    lvmRequest('vgs', ['--nolocking', ...REPORT, '-o', VG_SPACE_FIELDS.join(','), vg], 'read', scope, {
      allowFailure: true,
    }),
  );
  if (r.exitCode !== 0) {
    if (isLvmNotFound(r.stderr)) return undefined;
    throw commandFailed(runner.target, r);
  }
  return parseVgSpace(r.stdout)[0];
}

export interface LeaseLv {
  name: string;
  sizeBytes: number;
  /** lv_lock_args: "1.0.0:OFFSET" for an LV's sanlock lease, empty for LVs without one. */
  lockArgs: string;
}

/**
 * Every LV of the VG including hidden ones (-a): the internal `lvmlock` LV that holds the
 * sanlock leases is hidden, and its size is the lease space.
 */
export async function leaseLvs(runner: Runner, vg: string, scope: LvmScope = {}): Promise<LeaseLv[]> {
  const r = await runner.run(
    lvmRequest('lvs', ['-a', '--nolocking', ...REPORT, '-o', 'lv_name,lv_size,lv_lock_args', vg], 'read', scope),
  );
  return parseReport(r.stdout, 'lv').map((row) => ({
    name: str(row.lv_name).replace(/^\[|\]$/g, ''),
    sizeBytes: num(row.lv_size),
    lockArgs: str(row.lv_lockargs ?? row.lv_lock_args),
  }));
}

/**
 * The uuids (compact) of every LV of every VG the node sees: a cache whose origin is in none
 * of them is stale. Without the session's device filter, which names one repository's LUN:
 * another repository's LVs must count too.
 */
export async function allLvUuids(runner: Runner): Promise<Set<string>> {
  const r = await runner.run(lvmRequest('lvs', ['--nolocking', ...REPORT, '-o', 'lv_uuid'], 'read', {}));
  if (r.exitCode !== 0) throw commandFailed(runner.target, r);
  return new Set(parseReport(r.stdout, 'lv').map((row) => str(row.lv_uuid).replace(/-/g, '')));
}

/** The byte offset of an LV's lease in lvmlock, from lock args "1.0.0:562036736". */
export function leaseOffset(lockArgs: string): number | undefined {
  const m = /^\d+\.\d+\.\d+:(\d+)$/.exec(lockArgs.trim());
  return m ? Number(m[1]) : undefined;
}

export const removeVgReq = (vg: string): RunRequest => lvmRequest('vgremove', ['-y', vg], 'write');
/** Join the VG's lockspace on this node (a sanlock lease acquisition: tens of seconds). */
export const lockStartReq = (vg: string): RunRequest =>
  lvmRequest('vgchange', ['--lockstart', vg], 'write', {}, { timeout: 'lockspace' });
export const tagVgReq = (vg: string, tags: TagChanges, scope: LvmScope = {}): RunRequest =>
  lvmRequest('vgchange', [...tagArgs(tags), vg], 'write', scope);

/** doctor's probe: prints "LVM version: ...". */
export const versionReq = (): RunRequest => ({
  argv: ['lvm', 'version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** The LVM commands these builders spell (lvmRequest's first argument). */
export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('lvs', 'lvm2', 'report LVs (json)'),
  sbin('vgs', 'lvm2', 'report VGs (json)'),
  sbin('pvs', 'lvm2', 'report PVs (json)'),
  sbin('lvcreate', 'lvm2', 'create image and COW LVs'),
  sbin('lvchange', 'lvm2', 'activate/deactivate/refresh LVs, tags, read-only'),
  sbin('lvremove', 'lvm2', 'remove image and COW LVs'),
  sbin('lvrename', 'lvm2', 'rename images'),
  sbin('lvextend', 'lvm2', 'grow COW LVs'),
  sbin('vgchange', 'lvm2', 'start the lockspace, register host ids as VG tags'),
  sbin('lvmconfig', 'lvm2', 'read one lvm.conf setting (doctor)'),
  sbin('lvm', 'lvm2', 'version probe (doctor)'),
  sbin('vgcreate', 'lvm2', 'create the shared repository VG (cluster init)', SETUP),
  sbin('vgremove', 'lvm2', 'undo a half-made cluster init', SETUP),
];
