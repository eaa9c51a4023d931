/**
 * The node's cache VG: a local (non-shared) VG on the node's own disk that holds every cache
 * kind's LVs. Observed with two local reports; created once by `cowstack cache init`.
 * Without a cache VG nothing in src/core/cache runs and everything works uncached.
 */
import { notFound, refused, usageError } from '../../exec/errors.js';
import type { Runner } from '../../exec/types.js';
import * as blockData from '../../tools/blockData.js';
import { holders, realpath } from '../../tools/files.js';
import * as lvm from '../../tools/lvm.js';
import type { NodeSession } from '../node.js';
import { runGuarded } from '../executor.js';
import type { Step } from '../plan.js';
import { EXTENT, validateDevicePath, validateVgName } from '../validate.js';
import { cacheLvFrom, type CacheLv, type CacheState } from './meta.js';

export const DEFAULT_CACHE_VG = 'cowstack_cache';
export const cacheVgOf = (ctx: NodeSession): string => validateVgName(ctx.cacheVg ?? DEFAULT_CACHE_VG);

/** The cache VG and its LVs; `exists: false` when the node has none. Local VG: no device filter. */
export async function observeCache(runner: Runner, vg: string): Promise<CacheState> {
  // Both reports at once (a missing VG is an empty answer to each): one round trip, not two.
  const [[vgInfo], all] = await Promise.all([lvm.vgs(runner, vg), lvm.lvs(runner, vg)]);
  if (!vgInfo) return { vg, exists: false, freeBytes: 0, sizeBytes: 0, extentBytes: EXTENT, lvs: [] };
  const lvs = all.map(cacheLvFrom).filter((c): c is CacheLv => Boolean(c));
  return {
    vg,
    exists: true,
    freeBytes: vgInfo.freeBytes,
    sizeBytes: vgInfo.sizeBytes,
    extentBytes: vgInfo.extentBytes,
    lvs,
  };
}

export interface CacheInitResult {
  vg: string;
  device: string;
  action: 'created' | 'none';
  sizeBytes?: number;
}

/** Create the node's local cache VG on DEVICE; a re-run on the same device is a no-op. */
export async function initCache(ctx: NodeSession, device: string): Promise<CacheInitResult> {
  validateDevicePath(device);
  const vg = cacheVgOf(ctx);
  if (vg === ctx.vg)
    throw usageError(
      `the cache VG cannot be the repository VG ${vg}`,
      'set cache.vg in the config to a name of its own',
    );
  const real = await realpath(ctx.runner, device);
  if (!real)
    throw notFound(
      `device ${device} does not exist on ${ctx.runner.target}`,
      "give the node's local disk, e.g. /dev/vdb or /dev/nvme0n1",
    );
  let pvVg: string | undefined;
  const vgPvs: string[] = [];
  for (const p of await lvm.pvs(ctx.runner)) {
    const pr = await realpath(ctx.runner, p.name);
    if (pr === real) pvVg = p.vg;
    if (p.vg === vg) vgPvs.push(pr ?? p.name);
  }
  if (pvVg === vg) {
    const [info] = await lvm.vgs(ctx.runner, vg);
    return { vg, device, action: 'none', sizeBytes: info?.sizeBytes };
  }
  if (pvVg)
    throw refused(
      `${device} already belongs to VG ${pvVg}`,
      "give an unused local disk; cowstack never takes over another VG's PV",
    );
  if (vgPvs.length)
    throw refused(
      `the cache VG ${vg} already exists on ${vgPvs.join(', ')}`,
      `use that device, or set cache.vg in the config to another name`,
    );
  const users = await holders(ctx.runner, real);
  if (users.length)
    throw refused(`${device} is in use by ${users.map((h) => h.name).join(', ')}`, 'give an unused local disk');
  const sig = await ctx.runner.run(blockData.signaturesReq(real));
  if (sig.exitCode === 0 && sig.stdout.trim()) {
    throw refused(
      `${device} is not empty: ${sig.stdout.trim().split('\n').join(', ')}`,
      "it may hold someone's data: wipe it yourself (wipefs -a) if it really is free",
    );
  }
  // A local VG (no --shared): the cache is this node's alone, and needs no lock manager.
  await runGuarded(ctx, [
    {
      title: `create local cache VG ${vg} on ${device}`,
      req: lvm.createVgReq(vg, real),
      undo: [lvm.removeVgReq(vg)],
    },
  ]);
  const [info] = ctx.dryRun ? [] : await lvm.vgs(ctx.runner, vg);
  return { vg, device, action: 'created', sizeBytes: info?.sizeBytes };
}

/** Activate one LV of the cache VG on this node (replicas, write-back caches). */
export const activateCacheLv = (c: Pick<CacheLv, 'vg' | 'name'>): Step => ({
  title: `activate cache LV ${c.vg}/${c.name}`,
  // A local VG: -aey is plain local activation (no lvmlockd lock is involved).
  req: lvm.activateReq(`${c.vg}/${c.name}`, 'exclusive'),
  undo: [lvm.deactivateReq(`${c.vg}/${c.name}`)],
});
