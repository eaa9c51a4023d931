/**
 * One metrics collection (core/metrics.ts) as Prometheus families: names, HELP texts, types
 * and labels in one place, so what a site alerts on changes only here. Every sample carries
 * the repository VG (a node may serve several).
 */
import type { CapacityReport } from './capacity.js';
import type { CacheMetric, CowMetric, NodeMetrics, ReplicaMetric } from './metrics.js';
import type { MetricFamily, Sample } from './promText.js';

const gauge = (name: string, help: string, samples: Sample[]): MetricFamily => ({
  name: `cowstack_${name}`,
  help,
  type: 'gauge',
  samples,
});
const counter = (name: string, help: string, samples: Sample[]): MetricFamily => ({
  name: `cowstack_${name}`,
  help,
  type: 'counter',
  samples,
});

const SNAPSHOT_BROKEN = new Set(['invalid', 'merge-failed', 'unknown']);
const REPLICA_STATES = ['complete', 'copying', 'stale'] as const;

/** The Prometheus families of one collection; every sample carries the repository VG. */
export function metricFamilies(m: NodeMetrics): MetricFamily[] {
  const vg = { vg: m.vg };
  const cow = (c: CowMetric) => ({ ...vg, clone: c.clone, mode: c.mode });
  const counted = m.cows.filter((c) => c.allocatedBytes !== undefined);
  const cache = (c: CacheMetric) => ({ ...vg, kind: c.kind, lv: c.lv });
  const replica = (r: ReplicaMetric) => ({ ...vg, image: r.image ?? '', origin_uuid: r.originUuid });
  const cap = m.capacity;
  const fromCap = (f: (c: CapacityReport) => number | undefined): Sample[] => {
    const v = cap ? f(cap) : undefined;
    return v === undefined ? [] : [{ labels: vg, value: v }];
  };
  const bool = (b: boolean) => (b ? 1 : 0);
  return [
    gauge('metrics_collected_time_seconds', 'When these metrics were collected (Unix time).', [
      { labels: vg, value: m.collectedAt },
    ]),
    gauge(
      'cow_allocated_bytes',
      'Bytes of a mapped COW in use (data chunks and snapshot metadata), from the dm snapshot status.',
      counted.map((c) => ({ labels: cow(c), value: c.allocatedBytes! })),
    ),
    gauge(
      'cow_size_bytes',
      'Size of a mapped COW (the snapshot exception store).',
      counted.map((c) => ({ labels: cow(c), value: c.sizeBytes! })),
    ),
    gauge(
      'cow_used_ratio',
      'Share of a mapped COW in use (1 = full: writes to the disk then fail).',
      counted.map((c) => ({ labels: cow(c), value: c.sizeBytes ? c.allocatedBytes! / c.sizeBytes : 0 })),
    ),
    gauge(
      'cow_overflow',
      '1 when a mapped COW overflowed (writes fail, reads still work).',
      m.cows.map((c) => ({ labels: cow(c), value: bool(c.state === 'overflow') })),
    ),
    gauge(
      'cow_invalid',
      '1 when the kernel reports a snapshot invalid, merge failed or unknown: its data cannot be trusted.',
      m.cows.map((c) => ({ labels: cow(c), value: bool(SNAPSHOT_BROKEN.has(c.state)) })),
    ),
    gauge(
      'cow_chain_levels',
      'COWs a mapped device reads through down to its image, its own included (each backup point adds one).',
      m.cows.filter((c) => c.levels !== undefined).map((c) => ({ labels: cow(c), value: c.levels! })),
    ),
    gauge(
      'cache_blocks',
      'Blocks of a write-back or lazy read cache attached on this node.',
      m.caches.map((c) => ({ labels: cache(c), value: c.blocks })),
    ),
    gauge(
      'cache_dirty_blocks',
      'Blocks of a cache not yet written back to its origin (a write-back cache must reach 0 before release).',
      m.caches.map((c) => ({ labels: cache(c), value: c.dirtyBlocks })),
    ),
    counter(
      'cache_hits_total',
      'Reads and writes served by a cache since it was attached.',
      m.caches.map((c) => ({ labels: cache(c), value: c.hits })),
    ),
    counter(
      'cache_misses_total',
      'Reads (and, for dm-cache, writes) a cache did not hold, since it was attached.',
      m.caches.map((c) => ({ labels: cache(c), value: c.misses })),
    ),
    gauge(
      'cache_failed',
      '1 when the kernel reports an I/O error, a failure or needs_check for a cache.',
      m.caches.map((c) => ({ labels: cache(c), value: bool(c.failed) })),
    ),
    gauge(
      'replica_state',
      "A replica's state on this node: 1 for the state it is in (stale: its image's LV is gone).",
      m.replicas.flatMap((r) =>
        REPLICA_STATES.map((s) => ({ labels: { ...replica(r), state: s }, value: bool(r.state === s) })),
      ),
    ),
    gauge(
      'replica_copied_bytes',
      'Bytes of the image copied into its replica so far.',
      m.replicas.map((r) => ({ labels: replica(r), value: r.copiedBytes })),
    ),
    gauge(
      'replica_size_bytes',
      'Size of a replica (the image it copies).',
      m.replicas.map((r) => ({ labels: replica(r), value: r.sizeBytes })),
    ),
    gauge(
      'lv_lock_held',
      'An LV this node holds active, with the lvmlockd lock mode (ex: only this node may use it).',
      m.locks.map((l) => ({ labels: { ...vg, lv: l.lv, kind: l.kind, state: l.state, mode: l.mode }, value: 1 })),
    ),
    gauge(
      'lv_open',
      '1 when an LV this node holds is open (a device or VM uses it).',
      m.locks.map((l) => ({ labels: { ...vg, lv: l.lv }, value: bool(l.open) })),
    ),
    gauge(
      'vg_size_bytes',
      'Size of the repository VG.',
      fromCap((c) => c.extents.total * c.extents.extentBytes),
    ),
    gauge(
      'vg_free_bytes',
      'Free space of the repository VG.',
      fromCap((c) => c.extents.freeBytes),
    ),
    gauge(
      'vg_extents',
      'Physical extents of the repository VG.',
      fromCap((c) => c.extents.total),
    ),
    gauge(
      'vg_free_extents',
      'Free physical extents of the repository VG.',
      fromCap((c) => c.extents.free),
    ),
    gauge(
      'vg_lvs',
      'LVs in the repository VG.',
      fromCap((c) => c.lvCount),
    ),
    gauge(
      'vg_metadata_usable_bytes',
      'Part of the VG metadata area LVM can fill (half: it keeps the previous copy).',
      fromCap((c) => c.metadata.usableBytes),
    ),
    gauge(
      'vg_metadata_free_bytes',
      'Free bytes of the VG metadata area (LVM cannot grow it).',
      fromCap((c) => c.metadata.freeBytes),
    ),
    gauge(
      'vg_metadata_lvs_left',
      'About how many more LVs the VG metadata area holds.',
      fromCap((c) => c.metadata.lvsLeft),
    ),
    gauge(
      'vg_lease_slots',
      'LV lease slots in the lvmlock LV (sanlock).',
      fromCap((c) => c.leases?.slots),
    ),
    gauge(
      'vg_leases_used',
      'LV leases in use in the lvmlock LV.',
      fromCap((c) => c.leases?.inUse),
    ),
    gauge(
      'vg_lease_space_can_grow',
      '1 when the VG has the free extents for the next lvmlock extension.',
      fromCap((c) => (c.leases ? bool(c.leases.canGrow) : undefined)),
    ),
    gauge('interrupted_operations', 'Operations the node journal shows interrupted: run cowstack recover.', [
      { labels: vg, value: m.interrupted.length },
    ]),
    gauge(
      'interrupted_operation_started_time_seconds',
      'When an interrupted operation began (Unix time).',
      m.interrupted.map((j) => ({
        labels: { ...vg, op: j.op, name: j.name },
        value: Math.floor(Date.parse(j.started) / 1000),
      })),
    ),
  ];
}

/**
 * The families of several collections (one per repository VG of the node) as one list: the
 * text format allows each family once, so same-named families are joined, their samples told
 * apart by the vg label every sample carries.
 */
export function familiesOf(collections: readonly NodeMetrics[]): MetricFamily[] {
  const byName = new Map<string, MetricFamily>();
  for (const f of collections.flatMap(metricFamilies)) {
    const seen = byName.get(f.name);
    if (seen) seen.samples.push(...f.samples);
    else byName.set(f.name, { ...f, samples: [...f.samples] });
  }
  return [...byName.values()];
}
