/**
 * Hand-written repository fixtures for the copy-on-write core tests: LV rows in the layout of
 * lvm2 2.03 `lvs --reportformat json --units b --nosuffix --binary`, `dmsetup info -c`
 * lines, and the two observation reads every core operation starts with. SYNTHETIC: the
 * uuids, sizes and device numbers are made up but have the shapes LVM and the kernel print.
 */
import { Repo } from '../../src/core/metadata.js';
import { nodeSession, type NodeSession, type NodeSessionOptions } from '../../src/core/node.js';
import type { NodeState } from '../../src/core/observe.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import type { Runner } from '../../src/exec/types.js';
import { parseInfoColumns } from '../../src/tools/dmsetup.js';
import { parseLvs } from '../../src/tools/lvm.js';
import { lvsArgv, lvsJson, PV_COLUMNS, REPORT, vgsArgv, vgsJson } from './support.js';

export const VG = 'vg';

/** The node session every core test drives: the recording runner on repository VG `vg`. */
export const ctxOf = (r: Runner, extra: Partial<NodeSessionOptions> = {}): NodeSession =>
  nodeSession({ runner: r, vg: VG, ...extra });
export const MiB = 1024 * 1024;

/** LV uuids as LVM prints them (6-4-4-4-4-4-6) and compacted the way dm names use them. */
export const U = {
  image: 'Ab3dEf-ghIJ-klmn-opQR-stuv-wxYZ-0123ab',
  c1: 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q',
  c2: 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M',
  c3: 'Zk8Lm2-Pq4R-s5Tu-V6wX-y7Z8-a9B0-c1D2e3',
  s2: 'Mn0Op1-Qr2S-t3Uv-W4xY-z5A6-b7C8-d9E0f1',
  d1: 'Gh7Ij8-Kl9M-n0Op-Q1rS-t2Uv-W3xY-z4A5b6',
  n1: 'Wq2Er3-Ty4U-i5Op-A6sD-f7Gh-J8kL-z9X0c1',
  img2: 'Pl0Ok9-Ij8U-h7Yg-T6fR-d5Es-W4aQ-z3X2c1',
} as const;
export const compact = (uuid: string) => uuid.replace(/-/g, '');
export const ro = (uuid: string) => `cowstack-ro-${compact(uuid)}`;
export const rw = (uuid: string) => `cowstack-rw-${compact(uuid)}`;
export const VG_UUID = 'e1Xq0L7yP2aB3cDd4EfG5hIj6KlM7nOp';

export type Activation = 'shared' | 'exclusive' | undefined;

export interface LvOpts {
  name: string;
  uuid: string;
  size: number;
  tags: string[];
  active?: Activation;
  readOnly?: boolean;
  open?: boolean;
  minor?: number;
  vg?: string;
}

/** One row of `lvs` json output. */
export function lvRow(o: LvOpts): Record<string, unknown> {
  const vg = o.vg ?? VG;
  const active = Boolean(o.active);
  return {
    lv_name: o.name,
    vg_name: vg,
    lv_uuid: o.uuid,
    lv_size: o.size,
    lv_attr: `-${o.readOnly ? 'r' : 'w'}i-${active ? 'a' : '-'}${o.open ? 'o' : '-'}----`,
    lv_tags: o.tags,
    lv_active_locally: active ? 1 : 0,
    lv_active_exclusively: o.active === 'exclusive' ? 1 : 0,
    lv_permissions: o.readOnly ? 'read-only' : 'writeable',
    lv_device_open: o.open ? 1 : 0,
    lv_dm_path: `/dev/mapper/${vg.replace(/-/g, '--')}-${o.name.replace(/-/g, '--')}`,
    lv_lockargs: `1.0.0:${70254592 + (o.minor ?? 0) * 1048576}`,
    lv_time: '2026-01-12 10:25:44 +0000',
    lv_kernel_major: active ? 253 : -1,
    lv_kernel_minor: active ? (o.minor ?? 0) : -1,
  };
}

export interface ImageOpts {
  state?: 'initializing' | 'writable' | 'sealed';
  size?: number;
  active?: Activation;
  open?: boolean;
  sha?: string;
  /** cowstack_srcsha256: the imported file's checksum. */
  srcSha?: string;
  /** More tags (a catalogue image's origin, sha512, endorsement). */
  tags?: string[];
  minor?: number;
  vg?: string;
}

export const imageRow = (name: string, uuid: string, o: ImageOpts = {}) => {
  const state = o.state ?? 'sealed';
  return lvRow({
    name,
    uuid,
    size: o.size ?? 64 * MiB,
    tags: [
      'cowstack_role:image',
      `cowstack_state:${state}`,
      ...(o.sha ? [`cowstack_sha256:${o.sha}`] : []),
      ...(o.srcSha ? [`cowstack_srcsha256:${o.srcSha}`] : []),
      ...(o.tags ?? []),
    ],
    active: o.active,
    open: o.open,
    readOnly: state === 'sealed',
    minor: o.minor,
    vg: o.vg,
  });
};

export interface CloneOpts {
  state?: 'initializing' | 'live' | 'committed';
  size?: number;
  chunk?: number;
  active?: Activation;
  open?: boolean;
  minor?: number;
  vg?: string;
}

export const cloneRow = (name: string, uuid: string, parent: string, o: CloneOpts = {}) => {
  const state = o.state ?? 'live';
  return lvRow({
    name,
    uuid,
    size: o.size ?? 16 * MiB,
    tags: [
      'cowstack_role:clone',
      `cowstack_state:${state}`,
      `cowstack_parent:${parent}`,
      `cowstack_chunk:${o.chunk ?? 8}`,
    ],
    active: o.active,
    open: o.open,
    readOnly: state === 'committed',
    minor: o.minor,
    vg: o.vg,
  });
};

/** An LV cowstack did not create (no role tag). */
export const foreignRow = (name: string, uuid = 'Fo1Re2-ig3N-lv4X-y5Z6-a7B8-c9D0-e1F2g3') =>
  lvRow({ name, uuid, size: 8 * MiB, tags: [] });

export interface Dev {
  name: string;
  uuid: string;
  open: number;
  minor: number;
  readOnly?: boolean;
  /** devs_used: the devices this one stands on (empty when not given). */
  uses?: string[];
  /** dmsetup's attr (LIsw: live table, inactive table, suspended, mode); a live table by default. */
  attr?: string;
}

/** An LVM-owned dm device (uuid "LVM-" + VG uuid + LV uuid). */
export const lvDev = (lvName: string, lvUuid: string, minor: number, open: number, readOnly = false, vg = VG): Dev => ({
  name: `${vg.replace(/-/g, '--')}-${lvName.replace(/-/g, '--')}`,
  uuid: `LVM-${VG_UUID}${compact(lvUuid)}`,
  open,
  minor,
  readOnly,
});
export const roDev = (lvUuid: string, minor: number, open: number): Dev => ({
  name: ro(lvUuid),
  uuid: `COWSTACK-ro-${compact(lvUuid)}`,
  open,
  minor,
  readOnly: true,
});
export const rwDev = (lvUuid: string, minor: number, open: number): Dev => ({
  name: rw(lvUuid),
  uuid: `COWSTACK-rw-${compact(lvUuid)}`,
  open,
  minor,
});

/** `dmsetup info -c --noheadings --separator '|' -o name,uuid,open,major,minor,attr,devs_used`. */
export function dmInfo(devs: Dev[]): string {
  if (!devs.length) return 'No devices found\n';
  const attr = (d: Dev) => d.attr ?? `L--${d.readOnly ? 'r' : 'w'}`;
  const line = (d: Dev) => `${d.name}|${d.uuid}|${d.open}|253|${d.minor}|${attr(d)}|${(d.uses ?? []).join(',')}`;
  return devs.map(line).join('\n') + '\n';
}

export const DM_INFO = [
  'dmsetup',
  'info',
  '-c',
  '--noheadings',
  '--separator',
  '|',
  '-o',
  'name,uuid,open,major,minor,attr,devs_used',
];
/** lvcreate of an LV made inactive, unzeroed and tagged: images, copies and cache LVs alike. */
export const lvcreateInactive = (name: string, bytes: number, tags: readonly string[], vg: string) => [
  'lvcreate',
  '-an',
  '-Zn',
  '-Wn',
  '--setautoactivation',
  'n',
  '-L',
  `${bytes}b`,
  '-n',
  name,
  ...tags.flatMap((t) => ['--addtag', t]),
  vg,
];
/** lvcreate of a new image LV (image create, image import, catalog sync). */
export const newImageLv = (name: string, bytes: number, vg = VG) =>
  lvcreateInactive(name, bytes, ['cowstack_role:image', 'cowstack_state:initializing'], vg);

/** Every dm device's status in one call (`dmsetup status`), and its answer: `NAME: START LEN TARGET ARGS` lines. */
export const DM_STATUS = ['dmsetup', 'status'];
/** Every dm device's table in one call, answered in the same `NAME: TABLE` shape (dmStatus). */
export const DM_TABLE = ['dmsetup', 'table'];
export const dmStatus = (lines: Record<string, string>): string =>
  Object.entries(lines)
    .map(([name, line]) => `${name}: ${line}\n`)
    .join('');
export const JOURNAL = '/var/lib/cowstack/journal';
/** The journal directory's listing (readJournal's first read). */
export const JOURNAL_LS = ['ls', '-1', '-A', '--', JOURNAL];
/** `ls` of the journal directory and `cat` of each .json file in it. */
export function expectJournalRead(r: RecordingRunner, files: Record<string, string>): RecordingRunner {
  const names = Object.keys(files);
  r.expect(JOURNAL_LS, { kind: 'read', stdout: names.map((n) => `${n}\n`).join('') });
  for (const n of names.filter((f) => f.endsWith('.json')))
    r.expect(['cat', '--', `${JOURNAL}/${n}`], { kind: 'read', stdout: files[n] });
  return r;
}
export const journalFile = (name: string, op: string, vg = VG) => `${JOURNAL}/${vg}.${name}.${op}.json`;
export const journalBegin = (name: string, op: string, vg = VG) => [
  'install',
  '-D',
  '-m',
  '0600',
  '/proc/self/fd/0',
  journalFile(name, op, vg),
];
export const journalEnd = (name: string, op: string, vg = VG) => ['rm', '-f', '--', journalFile(name, op, vg)];

/** The observation every operation starts with: lvs of the VG and dmsetup info, in the order observe() issues them. */
/** lvmlockd's list of this host's locks. */
export const LOCK_INFO = ['lvmlockctl', '--info'];

/** `lvmlockctl --info` as lvmlockd prints it for the rows' active LVs (format of the real capture). */
export function lockInfo(rows: Array<Record<string, unknown>>, vg = VG): string {
  const lks = rows
    .filter((r) => String(r.lv_active_locally) === '1')
    .map((r) => `LK LV ${String(r.lv_active_exclusively) === '1' ? 'ex' : 'sh'} ${r.lv_uuid}`);
  return [
    `VG ${vg} lock_type=sanlock SUyCZP-8s9G-lpCM-9TMd-ZNNq-u64o-3oSj0f`,
    `LS sanlock lvm_${vg}`,
    'LK VG un ver 9',
    ...lks,
    '',
  ].join('\n');
}

export function expectObserve(
  r: RecordingRunner,
  rows: Array<Record<string, unknown>>,
  devs: Dev[] = [],
  vg = VG,
): RecordingRunner {
  r.expect(lvsArgv(vg), { kind: 'read', stdout: lvsJson(rows) }).expect(DM_INFO, {
    kind: 'read',
    stdout: dmInfo(devs),
  });
  return needsLockModes(rows, devs) ? r.expect(LOCK_INFO, { kind: 'read', stdout: lockInfo(rows, vg) }) : r;
}

/** unmap's observation: the devices first (a plain mapping needs nothing else), then lvs and lock modes. */
export function expectObserveDevicesFirst(
  r: RecordingRunner,
  rows: Array<Record<string, unknown>>,
  devs: Dev[] = [],
  vg = VG,
): RecordingRunner {
  r.expect(DM_INFO, { kind: 'read', stdout: dmInfo(devs) }).expect(lvsArgv(vg), {
    kind: 'read',
    stdout: lvsJson(rows),
  });
  return needsLockModes(rows, devs) ? r.expect(LOCK_INFO, { kind: 'read', stdout: lockInfo(rows, vg) }) : r;
}

/** observeRepo (clone create): the repository's lvs alone, lock modes only when needed. */
export function expectObserveRepo(r: RecordingRunner, rows: Array<Record<string, unknown>>, vg = VG): RecordingRunner {
  r.expect(lvsArgv(vg), { kind: 'read', stdout: lvsJson(rows) });
  return needsLockModes(rows) ? r.expect(LOCK_INFO, { kind: 'read', stdout: lockInfo(rows, vg) }) : r;
}

/**
 * observe asks lvmlockd for lock modes only when a writable LV (not sealed, not committed) is
 * active here without a cowstack writable snapshot over it (observeRepo sees no devices).
 */
export const needsLockModes = (rows: Array<Record<string, unknown>>, devs?: Dev[]): boolean =>
  parseLvs(lvsJson(rows)).some(
    (l) =>
      l.activeLocally &&
      l.tags.some((t) => t.startsWith('cowstack_role:')) &&
      !l.tags.some((t) => t === 'cowstack_state:sealed' || t === 'cowstack_state:committed') &&
      !(devs ?? []).some((d) => d.name === rw(l.uuid)),
  );

/** The same observation as a NodeState, through the real parsers, for the pure planners. */
export function stateOf(rows: Array<Record<string, unknown>>, devs: Dev[] = [], vg = VG): NodeState {
  const devices = parseInfoColumns(dmInfo(devs));
  return { vg, repo: new Repo(vg, parseLvs(lvsJson(rows))), devices: new Map(devices.map((d) => [d.name, d])) };
}

// ---- the depth-3 chain used throughout: image -> c1 (committed) -> c2 (committed) -> c3 (live)

export const IMAGE_SECTORS = (64 * MiB) / 512;

/** The chain's LV rows; `mapped` makes every layer active the way a mapped stack leaves it. */
export function chainRows(o: { mapped?: boolean; c3?: CloneOpts } = {}) {
  const a = (mode: 'shared' | 'exclusive'): Activation => (o.mapped ? mode : undefined);
  return [
    imageRow('image', U.image, { active: a('shared'), open: o.mapped, minor: 3 }),
    cloneRow('c1', U.c1, U.image, { state: 'committed', active: a('shared'), open: o.mapped, minor: 4 }),
    cloneRow('c2', U.c2, U.c1, { state: 'committed', chunk: 16, active: a('shared'), open: o.mapped, minor: 6 }),
    cloneRow('c3', U.c3, U.c2, { chunk: 128, active: a('exclusive'), open: o.mapped, minor: 8, ...o.c3 }),
  ];
}

/** dm devices of the fully mapped chain; `top` is the open count of the VM's disk (rw c3). */
export function chainDevs(top = 0): Dev[] {
  return [
    lvDev('image', U.image, 3, 1, true),
    lvDev('c1', U.c1, 4, 1, true),
    roDev(U.c1, 5, 1),
    lvDev('c2', U.c2, 6, 1, true),
    roDev(U.c2, 7, 1),
    lvDev('c3', U.c3, 8, 1),
    rwDev(U.c3, 9, top),
  ];
}

/** The lockless re-read of a live COW right after this node took its lock (stack.ts stillLiveStep): still live. */
export const stillLive = (
  name: string,
  uuid: string,
  parent: string = U.image,
  vg = VG,
): [string[], { kind: 'read'; stdout: string }] => [
  lvsArgv(`${vg}/${name}`),
  { kind: 'read', stdout: lvsJson([cloneRow(name, uuid, parent, { active: 'exclusive', vg })]) },
];

/** How the recording runner expects a command to be tagged. */
export const W = { kind: 'write' } as const;
export const R = { kind: 'read' } as const;

/** A dm snapshot table over the whole fixture image, as the stack planner writes it. */
export const snapTable = (origin: string, cow: string, mode: string, chunk: number) =>
  `0 ${IMAGE_SECTORS} snapshot ${origin} ${cow} ${mode} ${chunk}`;

/** `dmsetup create` of a clone's read-only (ro) or writable (rw) snapshot device. */
export const createRo = (uuid: string, table: string) => [
  'dmsetup',
  'create',
  ro(uuid),
  '--uuid',
  `COWSTACK-ro-${compact(uuid)}`,
  '--readonly',
  '--table',
  table,
];
export const createRw = (uuid: string, table: string) => [
  'dmsetup',
  'create',
  rw(uuid),
  '--uuid',
  `COWSTACK-rw-${compact(uuid)}`,
  '--table',
  table,
];
export const dmRemove = (name: string) => ['dmsetup', 'remove', '--retry', name];

/** The chain's read-only ancestors released once nothing uses them: c2's snapshot and LV, then c1's with the image. */
export const expectAncestorsReleased = (r: RecordingRunner): RecordingRunner =>
  r
    .expect(dmRemove(ro(U.c2)), W)
    .expect(['lvchange', '-an', 'vg/c2'], W)
    .expect(dmRemove(ro(U.c1)), W)
    .expect(['lvchange', '-an', 'vg/c1', 'vg/image'], W);

/** lvcreate of a clone's COW: created, active exclusively and its first 4 KiB zeroed in one command. */
export const lvcreateArgv = (name: string, parentUuid: string, bytes: number, chunk: number, vg = VG) => [
  'lvcreate',
  '-aey',
  '-Zy',
  '-Wn',
  '--setautoactivation',
  'n',
  '-L',
  `${bytes}b`,
  '-n',
  name,
  '--addtag',
  'cowstack_role:clone',
  '--addtag',
  'cowstack_state:initializing',
  '--addtag',
  `cowstack_parent:${parentUuid}`,
  '--addtag',
  `cowstack_chunk:${chunk}`,
  vg,
];

/**
 * The lvchange that marks a new clone live (release: and deactivates it), with LVM's command
 * log as json, which names the LV's uuid.
 */
export const markLiveArgv = (ref: string, release = true) => [
  'lvchange',
  '--config',
  'log { report_command_log = 1 command_log_selection = "all" ' +
    'command_log_cols = "log_object_type,log_object_name,log_object_group,log_object_id" }',
  '--reportformat',
  'json',
  ...(release ? ['-an'] : []),
  '--deltag',
  'cowstack_state:initializing',
  '--addtag',
  'cowstack_state:live',
  ref,
];

/**
 * Its stdout, in the shape lvm2 2.03.16 prints (REAL, captured on the testbed with -an and tag
 * changes: one document per pass, the LV row in each; names and uuids replaced).
 */
export function markLiveLog(ref: string, uuid: string, vgUuid = 'FesFAv-hy4g-2egW-xSyx-Z1nQ-auTI-ViJ2c4'): string {
  const [vg, name] = ref.split('/');
  const row = (type: string, n: string, group: string, id: string) =>
    `{"log_object_type":"${type}", "log_object_name":"${n}", "log_object_group":"${group}", "log_object_id":"${id}"}`;
  const lvRow = row('lv', name!, vg!, uuid);
  const vgRow = row('vg', vg!, '', vgUuid);
  const doc = (rows: string[]) =>
    `  {\n      "log": [\n${rows.map((r) => `          ${r}`).join(',\n')}\n      ]\n  }\n`;
  return doc([lvRow, lvRow, vgRow]) + doc([lvRow, vgRow]);
}

/** commit's one lvchange: read-only, live -> committed, and released, for the LV `ref` (vg/lv). */
export const commitMarkArgv = (ref: string) => [
  'lvchange',
  '-an',
  '--permission',
  'r',
  '--deltag',
  'cowstack_state:live',
  '--addtag',
  'cowstack_state:committed',
  ref,
];

// ---- repository capacity (capacity.ts's four reads) ---------------------------------------------------

// The numbers in these rows are the ones the testbed printed (lvm2 2.03.16, 4 GiB tgt LUN with
// 512/4096-byte sectors) after 62 clone LVs: the 62nd lease grew lvmlock from 1 GiB to 1.25 GiB.
// The rows themselves are SYNTHETIC (only the fields capacity reads).
export const SPACE_COLUMNS =
  'vg_name,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,vg_mda_size,vg_mda_free,vg_mda_count,lv_count';
export const spaceRow = (
  o: { free?: number; freeCount?: number; mdaFree?: number; lvCount?: number; vg?: string } = {},
) => ({
  vg_name: o.vg ?? 'repo',
  vg_size: 4290772992,
  vg_free: o.free ?? 2688548864,
  vg_extent_size: 4194304,
  vg_extent_count: 1023,
  vg_free_count: o.freeCount ?? 641,
  vg_mda_size: 1044480,
  vg_mda_free: o.mdaFree ?? 489984,
  vg_mda_count: 1,
  lv_count: o.lvCount ?? 62,
});
export const leaseRows = (n: number, lvmlock = 1342177280) => [
  { lv_name: '[lvmlock]', lv_size: lvmlock, lv_lock_args: '' },
  ...Array.from({ length: n }, (_, i) => ({
    lv_name: `one-${i}-disk-0-cow`,
    lv_size: 4194304,
    lv_lock_args: `1.0.0:${(67 + i) * 8 * MiB}`,
  })),
];

export function expectCapacityReads(
  r: RecordingRunner,
  space: Record<string, unknown>,
  leases: Array<Record<string, unknown>>,
  pbsz = '4096',
  vg = 'repo',
) {
  return r
    .expect(['vgs', '--nolocking', ...REPORT, '-o', SPACE_COLUMNS, vg], { kind: 'read', stdout: vgsJson([space]) })
    .expect(['lvs', '-a', '--nolocking', ...REPORT, '-o', 'lv_name,lv_size,lv_lock_args', vg], {
      kind: 'read',
      stdout: lvsJson(leases),
    })
    .expect(['pvs', ...REPORT, '-o', PV_COLUMNS], {
      kind: 'read',
      stdout:
        `{"report":[{"pv":[{"pv_name":"/dev/sda","vg_name":"${vg}","pv_uuid":"x","pv_size":"4290772992",` +
        '"dev_size":"4294967296"}]}]}',
    })
    .expect(['blockdev', '--getpbsz', '/dev/sda'], { kind: 'read', stdout: `${pbsz}\n` });
}

// ---- the node-local cache VG ---------------------------------------------------------------------------

export const CACHE_VG = 'cowstack_cache';
export const REPLICA_SHA = 'ab'.repeat(32);

/** A replica LV of the cache VG (the image's unless `origin` is given), tagged as replicate leaves it. */
export interface ReplicaOpts {
  origin?: string;
  state?: 'copying' | 'complete';
  copied?: number;
  sha?: string;
  used?: number;
  active?: boolean;
  open?: boolean;
  size?: number;
  name?: string;
}
export const replicaRow = (o: ReplicaOpts = {}) => {
  const origin = o.origin ?? U.image;
  return lvRow({
    vg: CACHE_VG,
    name: o.name ?? `rp_${compact(origin)}`,
    uuid: 'Rp0000-aaaa-bbbb-cccc-dddd-eeee-ffffff',
    size: o.size ?? 64 * MiB,
    readOnly: (o.state ?? 'complete') === 'complete',
    active: o.active ? 'exclusive' : undefined,
    open: o.open,
    minor: 20,
    tags: [
      `cowstack_cache:replica`,
      `cowstack_origin:${origin}`,
      `cowstack_cstate:${o.state ?? 'complete'}`,
      `cowstack_copied:${o.copied ?? 64 * MiB}`,
      `cowstack_sha256:${o.sha ?? REPLICA_SHA}`,
      ...(o.used ? [`cowstack_used:${o.used}`] : []),
    ],
  });
};
/** The lvcreate with which replicate starts a replica of `origin` (copying, nothing copied yet). */
export const newReplicaLv = (bytes: number, origin = U.image, sha = REPLICA_SHA) =>
  lvcreateInactive(
    `rp_${compact(origin)}`,
    bytes,
    [
      'cowstack_cache:replica',
      `cowstack_origin:${origin}`,
      'cowstack_cstate:copying',
      'cowstack_copied:0',
      `cowstack_sha256:${sha}`,
    ],
    CACHE_VG,
  );
export const cacheVgRow = (free: number, size = 2048 * MiB) => ({
  vg_name: CACHE_VG,
  vg_uuid: 'cAcHe0-0000-0000-0000-0000-0000-000000',
  vg_size: size,
  vg_free: free,
  vg_extent_size: 4 * MiB,
  vg_lock_type: '',
  vg_lock_args: '',
  vg_shared: '',
  vg_tags: '',
  pv_count: 1,
  lv_count: 1,
});
/** observeCache: the cache VG's vgs and lvs (free bytes of the VG as given). */
export const expectCache = (r: RecordingRunner, rows: Array<Record<string, unknown>>, free = 1024 * MiB) =>
  r
    .expect(vgsArgv(CACHE_VG), { kind: 'read', stdout: vgsJson([cacheVgRow(free)]) })
    .expect(lvsArgv(CACHE_VG), { kind: 'read', stdout: lvsJson(rows) });

/** The uuids of every LV of every VG (a cache whose origin is in none of them is stale). */
export const expectAllLvUuids = (r: RecordingRunner, uuids: readonly string[]) =>
  r.expect(['lvs', '--nolocking', ...REPORT, '-o', 'lv_uuid'], {
    kind: 'read',
    stdout: lvsJson(uuids.map((lv_uuid) => ({ lv_uuid }))),
  });

/** The lvchange that seals an image: read-only, state `from` -> sealed, its sha256 and any further tags. */
export const sealArgv = (ref: string, from: string, sha: string, tags: readonly string[] = []) => [
  'lvchange',
  '--permission',
  'r',
  '--deltag',
  `cowstack_state:${from}`,
  '--addtag',
  'cowstack_state:sealed',
  ...(sha ? ['--addtag', `cowstack_sha256:${sha}`] : []), // none under --dry-run: nothing was read
  ...tags.flatMap((t) => ['--addtag', t]),
  ref,
];

/** start-stop-daemon stopping what a pid file names (a BitTorrent client or tracker of a staging run). */
export const daemonStopArgv = (pid: string) => [
  'start-stop-daemon',
  '--stop',
  '--pidfile',
  pid,
  '--remove-pidfile',
  '--retry',
  'TERM/10/KILL/5',
  '--oknodo',
];
