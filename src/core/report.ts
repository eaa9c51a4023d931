/**
 * Read-only reports: `tree` (the lineage with where each clone is mapped and how full its
 * COW is) and `status` (every device cowstack made on this node, its table and usage).
 */
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { cacheVgOf } from './cache/vg.js';
import { compactUuid, dmIdentity, dmName, type DmRole } from './dmNames.js';
import { readJournal, type JournalEntry } from './journal.js';
import { leaseOwners } from './locks.js';
import type { CowObj } from './metadata.js';
import type { NodeSession } from './node.js';
import { findObj, observe, type NodeState } from './observe.js';

export interface CowUsage {
  state: dmsetup.SnapshotStatus['state'];
  usedPercent?: number;
  allocatedBytes?: number;
  totalBytes?: number;
  warning?: string;
}

export interface TreeNode {
  name: string;
  kind: 'image' | 'clone';
  state: string;
  uuid: string;
  /** Virtual size for images, COW size for clones. */
  sizeBytes: number;
  chunkSectors?: number;
  sha256?: string;
  mappedHere?: 'rw' | 'ro';
  activeOn?: string;
  usage?: CowUsage;
  /** Something wrong with this node's mapping here (a writable device over a committed clone). */
  problem?: string;
  children: TreeNode[];
}

/**
 * A writable snapshot over a clone that is no longer live (committed, or made LVM read-only):
 * writes through it would change a parent other clones stand on. cowstack never builds one
 * (the COW is re-read under its lock), but an older version or a hand-made device could.
 */
export function writableOverFrozen(o: CowObj | undefined, role: DmRole): string | undefined {
  if (role !== 'rw' || o?.kind !== 'clone' || (o.state === 'live' && !o.lv.readOnly)) return undefined;
  return (
    `writable mapping over ${o.state}${o.lv.readOnly ? ', read-only' : ''} clone ${o.vg}/${o.name}: ` +
    'writes would change a parent after commit (cowstack recover removes it when unopened)'
  );
}

export function usageOf(line: dmsetup.DmLine | undefined, warnPercent: number): CowUsage | undefined {
  if (!line || line.target !== 'snapshot') return undefined;
  const s = dmsetup.parseSnapshotStatus(line.args);
  if (s.state !== 'active') {
    return {
      state: s.state,
      warning:
        s.state === 'overflow'
          ? 'COW full: writes fail, reads still work; grow or discard it'
          : `snapshot is ${s.state}: its data cannot be trusted`,
    };
  }
  return {
    state: 'active',
    usedPercent: s.usedPercent,
    allocatedBytes: s.allocatedSectors * 512,
    totalBytes: s.totalSectors * 512,
    warning:
      s.usedPercent >= warnPercent
        ? `COW ${s.usedPercent}% full (warning at ${warnPercent}%): grow it with cowstack clone grow`
        : undefined,
  };
}

export async function tree(ctx: NodeSession, opts: { name?: string; warnPercent?: number } = {}): Promise<TreeNode[]> {
  const { runner, vg, scope } = ctx;
  const state = await observe(runner, vg, scope);
  const statuses = await dmsetup.statusAll(runner);
  const vgInfo = (await lvm.vgs(runner, vg, scope))[0];
  // Only live clones are held exclusively by one host: read just their leases.
  const live = [...state.repo.byName.values()].filter((o) => o.kind === 'clone' && o.state === 'live').map((o) => o.lv);
  const owners = await leaseOwners(runner, vg, live, vgInfo?.tags ?? []);
  const build = (o: CowObj): TreeNode => {
    const rw = o.kind === 'clone' && state.devices.has(dmName('rw', o.uuid));
    const ro = o.kind === 'clone' && state.devices.has(dmName('ro', o.uuid));
    const holder = owners.get(compactUuid(o.uuid));
    return {
      name: o.name,
      kind: o.kind,
      state: o.state,
      uuid: o.uuid,
      sizeBytes: o.sizeBytes,
      ...(o.kind === 'clone' ? { chunkSectors: o.chunkSectors } : { sha256: o.sha256 }),
      ...(rw ? { mappedHere: 'rw' as const } : ro ? { mappedHere: 'ro' as const } : {}),
      ...(holder ? { activeOn: holder.host ?? `host_id ${holder.hostId}` } : {}),
      ...(rw || ro
        ? { usage: usageOf(statuses.get(dmName(rw ? 'rw' : 'ro', o.uuid))?.[0], opts.warnPercent ?? 80) }
        : {}),
      ...(rw && writableOverFrozen(o, 'rw') ? { problem: writableOverFrozen(o, 'rw') } : {}),
      children: state.repo.childrenOf(o).map(build),
    };
  };
  if (opts.name) return [build(findObj(state, opts.name))];
  return [...state.repo.byName.values()]
    .filter((o) => o.kind === 'image' || !state.repo.byUuid.has(o.parentUuid))
    .map(build);
}

export interface DeviceStatus {
  name: string;
  uuid: string;
  role: DmRole;
  clone?: string;
  /** Write-back cache devices: blocks not yet written back to the COW, and the counters. */
  writeback?: dmsetup.WritecacheStatus;
  /** Lazy read cache devices (role lc): the dm-cache status (blocks, hits, promotions). */
  lazy?: dmsetup.CacheStatus;
  open: number;
  readOnly: boolean;
  table: string;
  usage?: CowUsage;
  problem?: string;
}

export interface NodeStatus {
  vg: string;
  devices: DeviceStatus[];
  activeLvs: Array<{ name: string; kind: string; state: string; exclusive: boolean; open: boolean }>;
  inFlight: JournalEntry[];
  warnings: string[];
}

export async function nodeStatus(ctx: NodeSession, opts: { warnPercent?: number } = {}): Promise<NodeStatus> {
  return (await observeStatus(ctx, opts)).status;
}

/**
 * nodeStatus with the observation it was made from, for callers that report more of it
 * (metrics: replicas from the cache VG, which `caches` adds to the same observation).
 */
export async function observeStatus(
  ctx: NodeSession,
  opts: { warnPercent?: number; caches?: boolean } = {},
): Promise<{ status: NodeStatus; state: NodeState }> {
  const { runner, vg } = ctx;
  const state: NodeState = await observe(
    runner,
    vg,
    ctx.scope,
    opts.caches ? cacheVgOf(ctx) : undefined,
    opts.caches ? 'always' : 'auto',
  );
  // Every table and status in two calls. A device removed by a concurrent operation after the
  // observation has no table here: it is gone, so it is not reported (not an error).
  const [statuses, tables] = await Promise.all([dmsetup.statusAll(runner), dmsetup.tableAll(runner)]);
  const devices: DeviceStatus[] = [];
  const warnings: string[] = [];
  const byCompact = new Map([...state.repo.byUuid.values()].map((o) => [compactUuid(o.uuid), o]));
  const lvOf = (lvUuid: string) => byCompact.get(lvUuid);
  // A device of ours whose LV is not in this VG may be another repository's that stands on
  // none of its LVs' devices (a migration's placeholder, an `error` table, before its COW is
  // active here): asked of every VG once, and only then, so it is not taken for an orphan.
  const unexplained = [...state.devices.values()].some((d) => {
    const id = dmIdentity(d);
    return id && !lvOf(id.lvUuid);
  });
  const elsewhere = unexplained ? await lvm.allLvUuids(runner) : new Set<string>();
  for (const d of state.devices.values()) {
    const parsed = dmIdentity(d);
    if (!parsed) continue;
    const lines = tables.get(d.name);
    if (!lines) continue;
    const lv = lvOf(parsed.lvUuid);
    if (!lv && elsewhere.has(parsed.lvUuid)) continue;
    const table = lines.map((l) => `${l.start} ${l.length} ${l.target} ${l.args.join(' ')}`).join('\n');
    const usage = usageOf(statuses.get(d.name)?.[0], opts.warnPercent ?? 80);
    const problem = !lv
      ? 'no LV in the repository has this uuid (orphan: cowstack recover)'
      : writableOverFrozen(lv, parsed.role);
    const st = statuses.get(d.name)?.[0];
    const writeback = st?.target === 'writecache' ? dmsetup.parseWritecacheStatus(st.args) : undefined;
    const lazy = st?.target === 'cache' ? dmsetup.parseCacheStatus(st.args) : undefined;
    devices.push({
      name: d.name,
      uuid: d.uuid,
      role: parsed.role,
      clone: lv?.name,
      open: d.open,
      readOnly: d.readOnly,
      table,
      usage,
      problem,
      ...(writeback ? { writeback } : {}),
      ...(lazy ? { lazy } : {}),
    });
    if (lazy?.needsCheck || lazy?.failed)
      warnings.push(
        `${d.name}: lazy read cache reports ${lazy.failed ? 'a failure' : 'needs_check'}: unmap its clones here; ` +
          'the next attach resets it',
      );
    if (writeback?.error) warnings.push(`${d.name}: write-back cache reports I/O error ${writeback.error}`);
    if (usage?.warning) warnings.push(`${lv?.name ?? d.name}: ${usage.warning}`);
    if (problem) warnings.push(`${d.name}: ${problem}`);
  }
  const activeLvs = [...state.repo.byName.values()]
    .filter((o) => o.lv.activeLocally)
    .map((o) => ({ name: o.name, kind: o.kind, state: o.state, exclusive: o.lv.activeExclusively, open: o.lv.open }));
  const inFlight = (await readJournal(runner)).filter((j) => j.vg === vg);
  for (const j of inFlight)
    warnings.push(`interrupted ${j.op} of ${j.name} (since ${j.started}): run cowstack recover`);
  return { status: { vg, devices, activeLvs, inFlight, warnings }, state };
}
