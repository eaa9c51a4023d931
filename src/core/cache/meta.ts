/**
 * The node-local cache VG's vocabulary. Its LVs are named and tagged by the LV UUID of the
 * repository LV they stand for (never by its name): an image removed and re-created under
 * the same name has a new UUID, so it can never be served by the old one's cache.
 *   rp_<uuid32>                    replica: a full local copy of an image
 *   wb_<uuid32>                    write-back cache of a live clone (dm-writecache over its COW)
 *   lc_<uuid32>, lm_<uuid32>       lazy read cache of an image: dm-cache data and metadata LVs
 *   cowstack_cache:replica|writeback|lazy|lazymeta  what the LV is
 *   cowstack_origin:<LV uuid>      the repository LV it copies (or caches)
 *   cowstack_cstate:copying|complete   replicas
 *   cowstack_cstate:new|ready|attached lazy caches (on both LVs of the pair): new = created,
 *                                  metadata not yet zeroed; attached = its dm-cache device
 *                                  was created and not yet removed cleanly (after a crash:
 *                                  reset, i.e. metadata zeroed again); ready = cleanly detached
 *   cowstack_copied:<bytes>        copy progress (a re-run continues from here)
 *   cowstack_sha256:<hex>          the origin's checksum the copy was verified against
 *   cowstack_used:<epoch seconds>  last map that used it (least recently used is evicted first)
 * The cache VG is local (not shared, no lvmlockd locks): it lives on the node's own disk.
 */
import type { LvInfo } from '../../tools/lvm.js';
import { compactUuid, lvMapperPath } from '../dmNames.js';
import type { CloneObj } from '../metadata.js';

export const CTAG = {
  kind: 'cowstack_cache:',
  origin: 'cowstack_origin:',
  state: 'cowstack_cstate:',
  copied: 'cowstack_copied:',
  sha256: 'cowstack_sha256:',
  used: 'cowstack_used:',
} as const;

export type CacheKind = 'replica' | 'writeback' | 'lazy' | 'lazymeta';
export type ReplicaState = 'copying' | 'complete';
export type LazyState = 'new' | 'ready' | 'attached';

export interface CacheLv {
  kind: CacheKind;
  name: string;
  vg: string;
  uuid: string;
  /** The repository LV's uuid (with dashes, as LVM prints it). */
  originUuid: string;
  state: ReplicaState;
  /** Lazy caches (both LVs of the pair carry it). */
  lazyState?: LazyState;
  copiedBytes: number;
  sha256?: string;
  usedAt: number;
  sizeBytes: number;
  lv: LvInfo;
}

export interface CacheState {
  vg: string;
  /** False when the node has no cache VG: everything runs uncached. */
  exists: boolean;
  freeBytes: number;
  sizeBytes: number;
  extentBytes: number;
  lvs: CacheLv[];
}

export const replicaLvName = (originUuid: string): string => `rp_${compactUuid(originUuid)}`;
export const writebackLvName = (cloneUuid: string): string => `wb_${compactUuid(cloneUuid)}`;
export const lazyDataLvName = (originUuid: string): string => `lc_${compactUuid(originUuid)}`;
export const lazyMetaLvName = (originUuid: string): string => `lm_${compactUuid(originUuid)}`;
const LV_NAME: Record<CacheKind, (originUuid: string) => string> = {
  replica: replicaLvName,
  writeback: writebackLvName,
  lazy: lazyDataLvName,
  lazymeta: lazyMetaLvName,
};
const KINDS = Object.keys(LV_NAME) as CacheKind[];
export const cacheLvPath = (c: Pick<CacheLv, 'vg' | 'name'>): string => lvMapperPath(c.vg, c.name);

const tagValue = (tags: string[], prefix: string): string | undefined =>
  tags.find((t) => t.startsWith(prefix))?.slice(prefix.length);

export function cacheLvFrom(lv: LvInfo): CacheLv | undefined {
  const kind = tagValue(lv.tags, CTAG.kind);
  const originUuid = tagValue(lv.tags, CTAG.origin);
  if (!KINDS.includes(kind as CacheKind) || !originUuid) return undefined;
  // The name must be the one derived from the origin tag: a renamed or hand-made LV is not ours.
  if (lv.name !== LV_NAME[kind as CacheKind](originUuid)) return undefined;
  const st = tagValue(lv.tags, CTAG.state);
  return {
    kind: kind as CacheKind,
    name: lv.name,
    vg: lv.vg,
    uuid: lv.uuid,
    originUuid,
    state: st === 'complete' ? 'complete' : 'copying',
    ...(kind === 'lazy' || kind === 'lazymeta' ? { lazyState: st === 'ready' || st === 'attached' ? st : 'new' } : {}),
    // A complete replica is all copied, also when it lost its progress tag (cowstack <= 0.1
    // deleted it when marking the replica complete).
    copiedBytes:
      kind === 'replica' && st === 'complete' ? lv.sizeBytes : Number(tagValue(lv.tags, CTAG.copied) ?? 0) || 0,
    sha256: tagValue(lv.tags, CTAG.sha256),
    usedAt: Number(tagValue(lv.tags, CTAG.used) ?? 0) || 0,
    sizeBytes: lv.sizeBytes,
    lv,
  };
}

export const cacheTag = {
  kind: (k: CacheKind) => `${CTAG.kind}${k}`,
  origin: (uuid: string) => `${CTAG.origin}${uuid}`,
  state: (s: ReplicaState | LazyState) => `${CTAG.state}${s}`,
  copied: (bytes: number) => `${CTAG.copied}${bytes}`,
  sha256: (hex: string) => `${CTAG.sha256}${hex}`,
  used: (epochSeconds: number) => `${CTAG.used}${epochSeconds}`,
};

/**
 * Cluster-wide marker on the clone's LV while a node's write-back cache may hold its newest
 * blocks: `cowstack_wbhost:<node>`. Every node sees it, so after that node crashes (its
 * lease expires, the COW could be activated elsewhere) no other node maps or commits the
 * clone without those blocks: the owner's recover writes them back and removes the marker.
 */
export const WB_HOST_TAG = 'cowstack_wbhost:';
export const wbHostOf = (clone: CloneObj): string | undefined =>
  clone.tags.find((t) => t.startsWith(WB_HOST_TAG))?.slice(WB_HOST_TAG.length);
