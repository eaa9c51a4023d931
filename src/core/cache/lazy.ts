/**
 * The lazy read cache of an image on one node: dm-cache (smq, writethrough) over the shared
 * image LV, device `cowstack-lc-<image uuid>`, made of two LVs in the node's cache VG,
 * `lm_<uuid>` (metadata) and `lc_<uuid>` (data). Every clone of the image mapped on the node
 * stands on it (planStack), like on a replica; it serves the hot blocks it has promoted.
 *
 * The table is loaded read-only (`dmsetup create --readonly`): the image LV is LVM read-only
 * and nothing above the cache ever writes to it (snapshots write to their COW). Its blocks
 * are therefore never dirty, and a read cache over an immutable origin can always be thrown
 * away: whenever its metadata cannot be trusted it is *reset* (first 4 KiB of the metadata
 * LV zeroed: dm-cache then formats it afresh), never repaired.
 *
 * Persistence: a clean `dmsetup remove` writes the metadata with its clean-shutdown flag, so
 * the next attach re-uses the mappings (promoted blocks hit at once). State tag on both LVs:
 *   new       created, metadata not zeroed yet: reset at the next attach
 *   attached  set BEFORE `dmsetup create`, cleared after a clean remove; found on a cold
 *             attach it means a crash (unclean shutdown: dm-cache would count every cached
 *             block dirty and try to write it to the read-only origin): reset
 *   ready     cleanly detached: `cache_check -q` on the metadata, reset if it fails
 * A created device that reports `needs_check` is reset too. Bound to the origin LV's UUID
 * (names and tags): an image re-created under the same name never sees the old cache.
 */
import { CowstackError, EXIT } from '../../exec/errors.js';
import * as blockData from '../../tools/blockData.js';
import * as cacheCheck from '../../tools/cacheCheck.js';
import * as dmsetup from '../../tools/dmsetup.js';
import * as lvm from '../../tools/lvm.js';
import {
  cacheLvPath,
  cacheTag,
  lazyDataLvName,
  lazyMetaLvName,
  type CacheLv,
  type CacheState,
  type LazyState,
} from './meta.js';
import { makeRoom, removeCacheLv } from './eviction.js';
import type { NodeSession } from '../node.js';
import { dmName, dmPath, dmUuid, lvMapperPath, sameUuid } from '../dmNames.js';
import type { ImageObj } from '../metadata.js';
import type { NodeState } from '../observe.js';
import { runGuarded } from '../executor.js';
import type { Step } from '../plan.js';
import { activateStep, lvRef } from '../lvSteps.js';
import { formatSize, parseSize, roundUp } from '../validate.js';
import type { CacheKind, CacheLayer, MapCacheOptions } from './kind.js';
import { usableReplica } from './replica.js';

/** 64 KiB cache blocks. */
export const LAZY_BLOCK_SECTORS = 128;
export const LAZY_MIN_BYTES = 32 * 2 ** 20;
export const LAZY_MAX_BYTES = 4 * 2 ** 30;
export const LAZY_META_MIN_BYTES = 8 * 2 ** 20;

/**
 * Data LV size: `requested`, else a quarter of the image, rounded up to extents, within
 * [32 MiB, 4 GiB], never above the image (rounded up to extents).
 */
export function lazyDataBytes(imageBytes: number, extentBytes: number, requested?: number): number {
  const cap = roundUp(imageBytes, extentBytes);
  const want = requested ?? Math.min(LAZY_MAX_BYTES, Math.max(LAZY_MIN_BYTES, imageBytes / 4));
  return Math.max(extentBytes, Math.min(cap, roundUp(want, extentBytes)));
}

/** Metadata LV: 4 MiB + 44 bytes per cache block (dm-cache's rule of thumb), at least 8 MiB. */
export const lazyMetaBytes = (dataBytes: number, extentBytes: number): number =>
  Math.max(LAZY_META_MIN_BYTES, roundUp(4 * 2 ** 20 + 44 * (dataBytes / (LAZY_BLOCK_SECTORS * 512)), extentBytes));

export interface LazyPair {
  data?: CacheLv;
  meta?: CacheLv;
}

export function lazyPair(cache: CacheState | undefined, image: Pick<ImageObj, 'uuid'>): LazyPair {
  const of = (kind: CacheLv['kind']) => cache?.lvs.find((c) => c.kind === kind && sameUuid(c.originUuid, image.uuid));
  return { data: of('lazy'), meta: of('lazymeta') };
}

export const lazyDeviceName = (image: Pick<ImageObj, 'uuid'>): string => dmName('lc', image.uuid);
export const lazyDevicePath = (image: Pick<ImageObj, 'uuid'>): string => dmPath('lc', image.uuid);

export function lazyTable(image: ImageObj, cacheVg: string): string {
  const meta = cacheLvPath({ vg: cacheVg, name: lazyMetaLvName(image.uuid) });
  const data = cacheLvPath({ vg: cacheVg, name: lazyDataLvName(image.uuid) });
  return dmsetup.cacheTable(
    image.sizeBytes / 512,
    meta,
    data,
    lvMapperPath(image.vg, image.name),
    LAZY_BLOCK_SECTORS,
    'writethrough',
    'smq',
  );
}

const pairRefs = (cacheVg: string, image: Pick<ImageObj, 'uuid'>): [string, string] => [
  `${cacheVg}/${lazyMetaLvName(image.uuid)}`,
  `${cacheVg}/${lazyDataLvName(image.uuid)}`,
];

/** Zero the first 4 KiB of the metadata LV: dm-cache then formats it afresh (nothing cached). */
export const zeroMetaStep = (cacheVg: string, image: Pick<ImageObj, 'uuid'>, why: string): Step => ({
  title: `zero the metadata of ${cacheVg}/${lazyMetaLvName(image.uuid)} (${why})`,
  req: blockData.zeroHeaderReq(cacheLvPath({ vg: cacheVg, name: lazyMetaLvName(image.uuid) }), 4096),
});

const createDeviceStep = (cacheVg: string, image: ImageObj): Step => ({
  title: `attach lazy cache ${lazyDeviceName(image)} (${image.name})`,
  req: dmsetup.createReq(lazyDeviceName(image), dmUuid('lc', image.uuid), lazyTable(image, cacheVg), {
    readOnly: true,
  }),
  undo: [dmsetup.removeReq(lazyDeviceName(image))],
});

/**
 * Steps that detach an unused lazy cache cleanly (the remove writes its metadata), mark it
 * ready and deactivate both LVs. The image LV is released by the caller (teardownPlan).
 */
export function detachLazySteps(
  cache: CacheState | undefined,
  image: ImageObj,
  now = Math.floor(Date.now() / 1000),
): Step[] {
  const name = lazyDeviceName(image);
  const { data } = lazyPair(cache, image);
  const vg = data?.vg ?? cache?.vg;
  const steps: Step[] = [{ title: `detach lazy cache ${name} (${image.name})`, req: dmsetup.removeReq(name) }];
  if (!vg) return steps; // the LVs are not known here (cannot happen while the device exists)
  const from = data?.lazyState ?? 'attached';
  const used = data?.usedAt;
  // One LVM command: ready (the remove wrote the metadata cleanly), last used now, deactivated.
  const tags: lvm.TagChange[] = [
    ...(from !== 'ready' ? [{ del: [cacheTag.state(from)], add: [cacheTag.state('ready')] }] : []),
    ...(used !== now ? [{ del: used ? [cacheTag.used(used)] : [], add: [cacheTag.used(now)] }] : []),
  ];
  steps.push({
    title: `mark the lazy cache of ${image.name} ready and deactivate its LVs`,
    req: lvm.changeLvReq(pairRefs(vg, image), { activate: 'n', tags }),
  });
  return steps;
}

export interface LazyResult {
  /** The dm device clones of the image stand on. */
  device: string;
  /** The data LV in the cache VG. */
  lv: string;
  /** created: new LVs; attached: existing LVs re-attached (their mappings re-used unless reset); in-use: already up. */
  action: 'created' | 'attached' | 'in-use';
  /** The metadata was zeroed on this attach: nothing cached survives (why: resetReason). */
  reset?: boolean;
  resetReason?: string;
  dataBytes?: number;
  evicted?: string[];
}

/**
 * Make the image's lazy cache device exist on this node: create the pair (making room by
 * evicting unused caches), or re-attach it, resetting it when it cannot be trusted.
 */
export async function attachLazy(
  ctx: NodeSession,
  state: NodeState,
  image: ImageObj,
  opts: { dataBytes?: number } = {},
): Promise<LazyResult> {
  const cache = state.cache;
  const device = lazyDevicePath(image);
  if (!cache?.exists)
    throw new CowstackError(EXIT.NOT_FOUND, `this node (${ctx.runner.target}) has no cache VG`, {
      hint: 'create it on a local disk: cowstack cache init DEVICE',
    });
  const vg = cache.vg;
  const lv = lazyDataLvName(image.uuid);
  if (state.devices.has(lazyDeviceName(image))) return { device, lv, action: 'in-use' };
  const now = Math.floor(Date.now() / 1000);
  let { data, meta } = lazyPair(cache, image);
  const evicted: string[] = [];
  // Half a pair (a crash between the two lvcreates): nothing in it can be used.
  if (data && !meta) await removeCacheLv(ctx, data, cache);
  if (meta && !data) await removeCacheLv(ctx, meta, cache);
  if (!data || !meta) data = meta = undefined;
  const [metaRef, dataRef] = pairRefs(vg, image);
  const from: LazyState | undefined = data?.lazyState;
  const steps: Step[] = [];
  if (!image.lv.activeLocally) steps.push(activateStep(image, 'shared', ctx.scope));
  let dataBytes = data?.sizeBytes;
  if (!data) {
    dataBytes = lazyDataBytes(image.sizeBytes, cache.extentBytes, opts.dataBytes);
    const metaBytes = lazyMetaBytes(dataBytes, cache.extentBytes);
    evicted.push(...(await makeRoom(ctx, cache, dataBytes + metaBytes, state.repo)));
    // Created "attached": until its device has been removed cleanly, an attach resets it
    // (a crash before the metadata was zeroed included). One LVM command fewer than new -> ready.
    const tags = (kind: 'lazy' | 'lazymeta') => [
      cacheTag.kind(kind),
      cacheTag.origin(image.uuid),
      cacheTag.state('attached'),
      cacheTag.used(now),
    ];
    for (const [kind, name, bytes, ref] of [
      ['lazymeta', lazyMetaLvName(image.uuid), metaBytes, metaRef],
      ['lazy', lv, dataBytes, dataRef],
    ] as const) {
      steps.push({
        title:
          `create lazy cache ${kind === 'lazy' ? 'data' : 'metadata'} LV ${ref} (${formatSize(bytes)}) ` +
          `for ${lvRef(image)}`,
        req: lvm.createLvReq({ vg, name, bytes, tags: tags(kind) }),
        undo: [lvm.removeLvReq(ref)],
      });
    }
  }
  // One LVM command activates the pair and records "attached" BEFORE the device exists: a
  // crash from here on means "reset at the next attach" (LVM warns that combining
  // activation with a metadata change is not advised; either half failing is safe here).
  const needsActivation = !data?.lv.activeLocally || !meta?.lv.activeLocally;
  const retag = data && (from !== 'attached' || data.usedAt !== now);
  if (needsActivation || retag) {
    const tags: lvm.TagChange[] = [
      ...(data && from !== 'attached' ? [{ del: [cacheTag.state(from!)], add: [cacheTag.state('attached')] }] : []),
      ...(data && data.usedAt !== now
        ? [{ del: data.usedAt ? [cacheTag.used(data.usedAt)] : [], add: [cacheTag.used(now)] }]
        : []),
    ];
    steps.push({
      title: `${needsActivation ? 'activate' : 'mark'} the lazy cache LVs of ${image.name}${data ? ' (attached)' : ''}`,
      req: lvm.changeLvReq([metaRef, dataRef], { ...(needsActivation ? { activate: 'ey' as const } : {}), tags }),
      ...(needsActivation ? { undo: [lvm.deactivateReq([metaRef, dataRef])] } : {}),
    });
  }
  await runGuarded(ctx, steps);

  let resetReason: string | undefined;
  if (data && from === 'new') resetReason = 'its creation was interrupted before the metadata was zeroed';
  if (data && from === 'attached')
    resetReason =
      'it was left attached by a crash or an interrupted creation (unclean: dm-cache would count every block dirty)';
  if (from === 'ready' && !ctx.dryRun) {
    const chk = await ctx.runner.run(cacheCheck.checkReq(cacheLvPath({ vg, name: lazyMetaLvName(image.uuid) })));
    if (chk.exitCode !== 0)
      resetReason =
        'cache_check failed ' +
        `(exit ${chk.exitCode}${chk.stderr.trim() ? `: ${chk.stderr.trim().split('\n')[0]}` : ''})`;
  }
  const second: Step[] = [];
  if (!data || resetReason) second.push(zeroMetaStep(vg, image, data ? 'reset' : 'new cache'));
  second.push(createDeviceStep(vg, image));
  await runGuarded(ctx, second);

  if (!ctx.dryRun) {
    const [line] = await dmsetup.status(ctx.runner, lazyDeviceName(image));
    const st = line?.target === 'cache' ? dmsetup.parseCacheStatus(line.args) : undefined;
    if (!st || st.needsCheck || st.failed) {
      resetReason = `the device reported ${st?.needsCheck ? 'needs_check' : 'a failure'} after attach`;
      await runGuarded(ctx, [
        { title: `detach ${lazyDeviceName(image)}`, req: dmsetup.removeReq(lazyDeviceName(image)) },
        zeroMetaStep(vg, image, 'reset'),
        createDeviceStep(vg, image),
      ]);
    }
  }
  return {
    device,
    lv,
    action: data ? 'attached' : 'created',
    ...(resetReason ? { reset: true, resetReason } : {}),
    dataBytes,
    ...(evicted.length ? { evicted } : {}),
  };
}

/**
 * The lazy cache as a layer: while its device is up on this node, clones of the image stand
 * on it (attached by prepareMap); teardown detaches it cleanly once nothing stands on it.
 */
export const lazyLayer: CacheLayer = {
  name: 'lazy',
  tableRole: 'lc',
  bottom: (state, image) =>
    state.devices.has(lazyDeviceName(image))
      ? { device: lazyDevicePath(image), names: { lazy: lazyDeviceName(image) }, steps: () => [] }
      : undefined,
  sameBytes: (state, image) => (state.devices.has(lazyDeviceName(image)) ? [lazyDevicePath(image)] : []),
  overImage: (state, image) =>
    state.devices.has(lazyDeviceName(image))
      ? { device: lazyDeviceName(image), detach: () => detachLazySteps(state.cache, image) }
      : undefined,
};

export interface LazyMapResult {
  /** The image's lazy read cache the stack stands on (attached, created, reset, or already in use). */
  lazy?: LazyResult;
}

const lazyBytesOf = (ctx: NodeSession, opts: MapCacheOptions): number | undefined => {
  const text = opts.lazySize ?? ctx.cacheLazySize;
  return text !== undefined ? parseSize(text, 'lazy cache size') : undefined;
};

export const lazyKind: CacheKind<LazyMapResult> = {
  ...lazyLayer,
  mode: 'lazy',
  checkMapOptions: (ctx, opts) => void lazyBytesOf(ctx, opts),
  async prepareMap(ctx, state, clone, opts) {
    const chain = state.repo.chain(clone).reverse();
    const image = chain[0]!;
    const bottom = chain[1]!;
    // Only for a stack whose bottom snapshot is not mapped here yet (it keeps its origin),
    // and never under a complete replica (it serves everything).
    const bottomMapped = state.devices.has(dmName('rw', bottom.uuid)) || state.devices.has(dmName('ro', bottom.uuid));
    if (image.kind !== 'image' || image.state !== 'sealed' || usableReplica(state.cache, image) || bottomMapped)
      return {};
    const lazy = await attachLazy(ctx, state, image, { dataBytes: lazyBytesOf(ctx, opts) });
    // 'in-use': already up, nothing changed, nothing to observe again.
    if (lazy.action === 'in-use') return { report: { lazy } };
    if (!ctx.dryRun) return { observeAgain: true, report: { lazy } };
    // Nothing was attached: plan as if it had been, so the dry run shows the whole stack.
    const devices = new Map(state.devices);
    const lc = lazyDeviceName(image);
    devices.set(lc, {
      name: lc,
      uuid: dmUuid('lc', image.uuid),
      open: 0,
      major: 0,
      minor: 0,
      attr: 'L--r',
      readOnly: true,
      suspended: false,
      uses: [],
    });
    return { state: { ...state, devices }, report: { lazy } };
  },
  mapResult: (_state, _clone, plan, prepared) =>
    plan.lazy
      ? {
          lazy: prepared?.lazy ?? {
            device: lazyDevicePath(plan.layers[0]!.obj),
            lv: lazyDataLvName(plan.layers[0]!.obj.uuid),
            action: 'in-use',
          },
        }
      : {},
};
