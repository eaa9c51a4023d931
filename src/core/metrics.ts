/**
 * `cowstack metrics`: what status, the cache VG, lvmlockd and the capacity report say about
 * this node, as numbers for a time series. Collected from one status observation (repository,
 * devices, cache VG, every dm status, the journal), one capacity report and lvmlockd's lock
 * list; nothing else is asked. metricFamilies.ts turns it into Prometheus families.
 */
import * as sanlock from '../tools/sanlock.js';
import { staleCaches } from './cache/eviction.js';
import { repoCapacity, type CapacityReport } from './capacity.js';
import { isFrozen } from './metadata.js';
import type { NodeSession } from './node.js';
import { observeStatus, type DeviceStatus } from './report.js';

export interface CowMetric {
  clone: string;
  /** rw: a live clone's writable snapshot (a VM disk); ro: a committed clone under it. */
  mode: 'rw' | 'ro';
  state: string;
  /**
   * The COWs this device reads through down to its image, its own included: a disk that every
   * incremental backup deepens by one (backup points are chain levels) shows it here.
   */
  levels?: number;
  allocatedBytes?: number;
  sizeBytes?: number;
}

export interface CacheMetric {
  kind: 'writeback' | 'lazy';
  /** The clone (write-back) or image (lazy) it caches. */
  lv: string;
  device: string;
  blocks: number;
  dirtyBlocks: number;
  hits: number;
  misses: number;
  /** The kernel reports an error, a failure or needs_check. */
  failed: boolean;
}

export interface ReplicaMetric {
  /** The image's current name; absent when its LV is gone (stale). */
  image?: string;
  originUuid: string;
  state: 'complete' | 'copying' | 'stale';
  sizeBytes: number;
  copiedBytes: number;
}

export interface LockMetric {
  lv: string;
  kind: string;
  state: string;
  mode: 'ex' | 'sh';
  open: boolean;
}

export interface NodeMetrics {
  vg: string;
  host: string;
  /** Unix seconds. */
  collectedAt: number;
  cows: CowMetric[];
  caches: CacheMetric[];
  replicas: ReplicaMetric[];
  locks: LockMetric[];
  capacity?: CapacityReport;
  interrupted: Array<{ op: string; name: string; started: string }>;
}

function cacheOf(d: DeviceStatus): CacheMetric | undefined {
  if (d.role !== 'wb' && d.role !== 'lc') return undefined;
  const base = {
    kind: d.role === 'wb' ? ('writeback' as const) : ('lazy' as const),
    lv: d.clone ?? '',
    device: d.name,
  };
  if (d.writeback) {
    const w = d.writeback;
    return {
      ...base,
      blocks: w.totalBlocks,
      dirtyBlocks: w.dirtyBlocks,
      hits: (w.readHits ?? 0) + (w.writeHits ?? 0),
      misses: w.readBlocks !== undefined ? w.readBlocks - (w.readHits ?? 0) : 0,
      failed: w.error !== 0,
    };
  }
  // dm-cache: the lazy read cache, or a write-back cache made with dm-cache writeback.
  const c = d.lazy;
  if (!c) return undefined;
  return {
    ...base,
    blocks: c.cacheTotal,
    dirtyBlocks: c.dirty,
    hits: c.readHits + c.writeHits,
    misses: c.readMisses + c.writeMisses,
    failed: Boolean(c.failed) || c.needsCheck,
  };
}

export async function collectMetrics(
  ctx: NodeSession,
  opts: { warnPercent?: number; capacityWarnPercent?: number; now?: () => number } = {},
): Promise<NodeMetrics> {
  const { status, state } = await observeStatus(ctx, { warnPercent: opts.warnPercent, caches: true });
  const capacity = await repoCapacity(ctx.runner, ctx.vg, { warnPercent: opts.capacityWarnPercent, scope: ctx.scope });
  const active = [...state.repo.byName.values()].filter((o) => o.lv.activeLocally);
  // lvs cannot tell a shared activation from an exclusive one in a lockd VG; lvmlockd can.
  // Asked only when something is active here: otherwise this node holds no LV lock.
  const modes = active.length ? await sanlock.lvLockModes(ctx.runner) : new Map<string, 'ex' | 'sh'>();
  const cows = status.devices
    .filter((d) => (d.role === 'rw' || d.role === 'ro') && d.usage)
    .map((d) => {
      const o = d.clone === undefined ? undefined : state.repo.byName.get(d.clone);
      const levels = o && state.repo.levels(o);
      return {
        clone: d.clone ?? d.name,
        mode: d.role as 'rw' | 'ro',
        state: d.usage!.state,
        ...(levels === undefined ? {} : { levels }),
        ...(d.usage!.allocatedBytes !== undefined
          ? { allocatedBytes: d.usage!.allocatedBytes, sizeBytes: d.usage!.totalBytes }
          : {}),
      };
    });
  // The node's one cache VG holds the replicas of every repository's images: one whose image
  // is in another repository VG is that collection's, one whose image is in none is stale.
  const replicaLvs = (state.cache?.lvs ?? []).filter((c) => c.kind === 'replica');
  const stale = new Set((await staleCaches(ctx, replicaLvs, state.repo)).map((c) => c.name));
  const replicas = replicaLvs
    .filter((c) => state.repo.byUuid.has(c.originUuid) || stale.has(c.name))
    .map((c) => {
      const origin = state.repo.byUuid.get(c.originUuid);
      return {
        ...(origin ? { image: origin.name } : {}),
        originUuid: c.originUuid,
        state: origin ? c.state : ('stale' as const),
        sizeBytes: c.sizeBytes,
        copiedBytes: c.copiedBytes,
      };
    });
  const locks = active.map((o) => ({
    lv: o.name,
    kind: o.kind,
    state: o.state,
    // Without lvmlockd's answer: cowstack activates a frozen LV only shared, a writable one exclusively.
    mode: modes.get(o.uuid) ?? (isFrozen(o) ? ('sh' as const) : ('ex' as const)),
    open: o.lv.open,
  }));
  return {
    vg: ctx.vg,
    host: ctx.runner.target,
    collectedAt: Math.floor((opts.now ?? Date.now)() / 1000),
    cows,
    caches: status.devices.map(cacheOf).filter((c): c is CacheMetric => c !== undefined),
    replicas,
    locks,
    ...(capacity ? { capacity } : {}),
    interrupted: status.inFlight.map((j) => ({ op: j.op, name: j.name, started: j.started })),
  };
}

/**
 * The collections of a node's several repositories, each replica reported once. Each collection
 * reports the replicas of its own images, and a stale one (its image in no VG) like every other
 * collection does: the first collection keeps it.
 */
export function acrossRepositories(collections: readonly NodeMetrics[]): NodeMetrics[] {
  const seen = new Set<string>();
  return collections.map((m) => ({
    ...m,
    replicas: m.replicas.filter((r) => {
      if (r.image !== undefined) return true;
      if (seen.has(r.originUuid)) return false;
      seen.add(r.originUuid);
      return true;
    }),
  }));
}
