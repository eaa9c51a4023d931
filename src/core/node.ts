/**
 * The node session: how every operation in core is called. One per invocation (a CLI command,
 * a TM action on one host), built by nodeSession() and passed down; it names the node (the
 * runner's target), the repository VG with its device filter, the node's cache VG, dry-run,
 * progress, and the lock-error policy the executor (core/executor.ts) runs plans with.
 * (Its own module, importing almost nothing, so that every core module can take it without a cycle.)
 */
import type { Runner } from '../exec/types.js';
import type * as lvm from '../tools/lvm.js';
import type { CacheMapMode } from './config.js';
import { defaultLockPolicy, type LockPolicy, type PlanObserver } from './plan.js';

/** What every session has, also one that acts on no VG (the iSCSI target side). */
export interface SessionBase {
  runner: Runner;
  /** The node's name as the runner targets it ("local" or the ssh host). */
  node: string;
  observer?: PlanObserver;
  dryRun?: boolean;
  /** Which lock manager errors the executor tries again, how often, how far apart. */
  lockPolicy: LockPolicy;
}

export interface NodeSession extends SessionBase {
  /** The repository VG. */
  vg: string;
  /** The repository's device filter (config repository.devices). */
  scope?: lvm.LvmScope;
  /** The node-local cache VG (config cache.vg); unset: caches are not looked at. */
  cacheVg?: string;
  /** What `clone map` does with caches when the caller does not say (config cache.map). */
  cacheMap?: CacheMapMode[];
  /** Copy rate limit for replicas made on map (config cache.rateMiBps). */
  cacheRateMiBps?: number;
  /** Data size of a new lazy cache (config cache.lazySize); default: see lazyDataBytes. */
  cacheLazySize?: string;
}

type Options<S extends SessionBase> = Omit<S, 'node' | 'lockPolicy'> & { lockPolicy?: LockPolicy };
export type NodeSessionOptions = Options<NodeSession>;

/**
 * The one way a session is made (CLI, TM, tests): the node is the runner's target, the lock
 * policy the default unless a test shortens it. `session` makes one for operations on no VG
 * (the iSCSI target side extends it with its backend); `nodeSession` one on the repository.
 */
export function session<S extends SessionBase = SessionBase>(o: Options<S>): S {
  return { ...o, node: o.runner.target, lockPolicy: o.lockPolicy ?? defaultLockPolicy } as S;
}

export const nodeSession = (o: NodeSessionOptions): NodeSession => session<NodeSession>(o);
