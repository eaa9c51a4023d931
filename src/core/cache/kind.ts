/**
 * One interface for a kind of node-local cache (replica, lazy, write-back), so that the stack
 * planner (stack.ts) and `clone map` (clones.ts) know no kind by name: they ask every kind in
 * the registry. Where a kind's device goes in a clone's stack, bottom to top:
 *   image LV, or a bottom cache standing in for it (the first kind that has one ready wins)
 *   -> ro snapshots -> rw snapshot over the live clone's COW, or over a COW cache in front of it.
 *
 * CacheLayer is what the planner asks: pure, from one observation. CacheKind adds what
 * `clone map --cache MODE` does before planning (observes, runs commands). They are two
 * registries (layers.ts, kinds.ts) because making a cache uses the planner (a replica's copy
 * releases the image through the teardown), and the planner must not import that back.
 */
import type { CacheMapMode } from '../config.js';
import type { DmRole } from '../dmNames.js';
import type { CloneObj, CowObj, ImageObj } from '../metadata.js';
import type { NodeState } from '../observe.js';
import type { NodeSession } from '../node.js';
import type { Step } from '../plan.js';

/** What a stack reports about the cache it stands on (copied into the plan and its bottom layer). */
export interface BottomCacheNames {
  /** The local replica (cache VG LV name) standing in for the image LV. */
  replica?: string;
  /** The lazy cache device (dm name) standing in for the image LV. */
  lazy?: string;
}

/** A device of a cache kind that holds the image's bytes and stands in for the image LV. */
export interface BottomCache {
  /** Its path: the origin of the bottom snapshot. */
  device: string;
  names: BottomCacheNames;
  /** Steps that make it ready, put first in the plan; `building`: the plan creates something. */
  steps(building: boolean): Step[];
}

/** A device put between a live clone's rw snapshot and its COW. */
export interface CowCache {
  /** Its path: the COW device of the rw snapshot. */
  device: string;
  /** Steps that attach it (none when it is up already). */
  steps: Step[];
}

/** A device a cache kind keeps over the image LV (holding it open), and how to take it down. */
export interface ImageHolder {
  /** dm name. */
  device: string;
  detach(): Step[];
}

/** What the stack planner knows of a cache kind. Every method is optional and pure. */
export interface CacheLayer {
  readonly name: string;
  /** Its device standing in for `image` at the bottom of a stack, when one is ready on this node. */
  bottom?(state: NodeState, image: ImageObj): BottomCache | undefined;
  /** Devices of this kind an existing bottom snapshot may stand on instead of the chosen origin (same bytes). */
  sameBytes?(state: NodeState, image: ImageObj): string[];
  /** Its device under a live clone's rw snapshot; `snapshotMapped`: that snapshot exists already. */
  cow?(state: NodeState, clone: CloneObj, snapshotMapped: boolean): CowCache | undefined;
  /**
   * Teardown without the tables: its device is up and a bottom snapshot may stand on it rather
   * than on the image LV, so the image LV must be assumed still in use.
   */
  ambiguousBottom?(state: NodeState, image: ImageObj): boolean;
  /** Teardown: its device over the image LV, when up on this node. */
  overImage?(state: NodeState, image: ImageObj): ImageHolder | undefined;
  /** The dm role of its bottom device: while one is up, teardown reads every table (bottomTables). */
  readonly tableRole?: DmRole;
}

/** The options of `clone map` that cache kinds read. */
export interface MapCacheOptions {
  /** Data size of a lazy cache if one is created (default: ctx.cacheLazySize). */
  lazySize?: string;
}

/** What a kind did before the map was planned. */
export interface MapPrepared<R> {
  /** It changed the node: observe again before planning. */
  observeAgain?: boolean;
  /** Dry run: the state to plan from, as if the cache had been made (nothing was). */
  state?: NodeState;
  /** Kept for mapResult. */
  report?: R;
}

/** The part of a stack plan that mapResult reads. */
export interface PlannedStack extends BottomCacheNames {
  steps: Step[];
  layers: ReadonlyArray<{ obj: CowObj }>;
}

/** A cache kind as `clone map` sees it: its layer, and what the map does for its `--cache` mode. */
export interface CacheKind<R extends object = object> extends CacheLayer {
  /** The `--cache` mode (config cache.map) that asks for it. */
  readonly mode: CacheMapMode;
  /** Refuse bad options before anything runs (whatever the modes). */
  checkMapOptions?(ctx: NodeSession, opts: MapCacheOptions): void;
  /** Refuse to map the clone at all (whatever the modes), before any cache is made. */
  refuseMap?(ctx: NodeSession, clone: CloneObj): Promise<void>;
  /** Its mode was asked and the node has a cache VG: make the cache ready for the plan. */
  prepareMap?(ctx: NodeSession, state: NodeState, clone: CloneObj, opts: MapCacheOptions): Promise<MapPrepared<R>>;
  /** What the map reports about this kind, from the plan (and what prepareMap kept). */
  mapResult?(state: NodeState, clone: CloneObj, plan: PlannedStack, prepared: R | undefined): R;
}
