/**
 * Every cache kind, for `clone map` (clones.ts): the same kinds as layers.ts, with what each
 * does for its `--cache` mode before the stack is planned, in this order (a replica made
 * first means no lazy cache is needed; the write-back cache goes under the clone last).
 */
import type { CacheKind } from './kind.js';
import { lazyKind, type LazyMapResult } from './lazy.js';
import { replicaKind, type ReplicaMapResult } from './replicate.js';
import { writebackKind, type WritebackMapResult } from './writeback.js';

export const CACHE_KINDS: readonly CacheKind[] = [replicaKind, lazyKind, writebackKind];

/** What `clone map` reports about caches: every kind's part. */
export type CacheMapResult = ReplicaMapResult & LazyMapResult & WritebackMapResult;
