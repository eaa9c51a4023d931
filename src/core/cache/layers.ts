/**
 * Every cache kind's layer, for the stack planner (stack.ts). Order matters: the first kind
 * with a bottom device ready stands in for the image LV (a replica serves every read, so it
 * comes before the lazy cache). kinds.ts lists the same kinds for `clone map`.
 */
import type { CacheLayer } from './kind.js';
import { lazyLayer } from './lazy.js';
import { replicaLayer } from './replica.js';
import { writebackLayer } from './writeback.js';

export const CACHE_LAYERS: readonly CacheLayer[] = [replicaLayer, lazyLayer, writebackLayer];
