/**
 * Node-local caches on the node's own disk: a local (non-shared) VG, and in it full local
 * replicas of images. A replica is copied with synchronous direct 4 MiB writes in chunks
 * whose progress is recorded in its tags (a re-run continues), verified against the
 * image's recorded sha256, and only then marked complete and made read-only. Clones mapped
 * on the node then stand on the replica (see planStack) and read nothing from the repository.
 * Without a cache VG nothing here runs and everything works uncached.
 */
import { CowstackError, EXIT, notFound, refused, usageError } from '../../exec/errors.js';
import type { Runner } from '../../exec/types.js';
import { holders, realpath } from '../../tools/files.js';
import * as dmsetup from '../../tools/dmsetup.js';
import * as lvm from '../../tools/lvm.js';
import { cacheLvFrom, cacheLvPath, cacheTag, replicaLvName, type CacheLv, type CacheState } from './meta.js';
import { activateCacheLv } from './replica.js';
import { collectGarbage, runGuarded, type OpContext } from '../clones.js';
import { dmName, lvMapperPath, sameUuid } from '../dmNames.js';
import type { Repo } from '../metadata.js';
import { findImage, observe } from '../observe.js';
import { runPlan, type Step } from '../plan.js';
import { activateStep, lvRef } from '../stack.js';
import { EXTENT, formatSize, validateDevicePath, validateVgName } from '../validate.js';

export const DEFAULT_CACHE_VG = 'cowstack_cache';
/** Bytes copied between two progress records: small enough to lose little on a crash. */
export const COPY_CHUNK = 64 * 2 ** 20;

const cacheVgOf = (ctx: OpContext): string => validateVgName(ctx.cacheVg ?? DEFAULT_CACHE_VG);

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

// ---- cache init ------------------------------------------------------------------------------

export interface CacheInitResult {
  vg: string;
  device: string;
  action: 'created' | 'none';
  sizeBytes?: number;
}

/** Create the node's local cache VG on DEVICE; a re-run on the same device is a no-op. */
export async function initCache(ctx: OpContext, device: string): Promise<CacheInitResult> {
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
  const sig = await ctx.runner.run({
    argv: ['blkid', '-p', '-o', 'export', real],
    kind: 'read',
    root: true,
    allowFailure: true,
  });
  if (sig.exitCode === 0 && sig.stdout.trim()) {
    throw refused(
      `${device} is not empty: ${sig.stdout.trim().split('\n').join(', ')}`,
      "it may hold someone's data: wipe it yourself (wipefs -a) if it really is free",
    );
  }
  // A local VG (no --shared): the cache is this node's alone, and needs no lock manager.
  await runPlan(
    ctx.runner,
    [
      {
        title: `create local cache VG ${vg} on ${device}`,
        req: lvm.lvmRequest('vgcreate', ['--setautoactivation', 'n', vg, real], 'write'),
        undo: [lvm.lvmRequest('vgremove', ['-y', vg], 'write')],
      },
    ],
    ctx.observer,
  );
  const [info] = ctx.dryRun ? [] : await lvm.vgs(ctx.runner, vg);
  return { vg, device, action: 'created', sizeBytes: info?.sizeBytes };
}

// ---- replicate ---------------------------------------------------------------------------------

export interface ReplicateOptions {
  /** Copy rate limit in MiB/s (paced between chunks). */
  rateMiBps?: number;
  onProgress?: (bytes: number, total: number) => void;
  /** Bytes per recorded progress step (tests). */
  chunkBytes?: number;
}

export interface ReplicateResult {
  name: string;
  vg: string;
  uuid: string;
  cacheVg: string;
  replica: string;
  device: string;
  sizeBytes: number;
  action: 'replicated' | 'resumed' | 'none';
  copiedBytes: number;
  sha256?: string;
  evicted: string[];
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Make (or finish) the verified local replica of an image on this node. Idempotent. */
export async function replicate(ctx: OpContext, name: string, opts: ReplicateOptions = {}): Promise<ReplicateResult> {
  const started = Date.now();
  const cacheVg = cacheVgOf(ctx);
  if (opts.rateMiBps !== undefined && !(opts.rateMiBps > 0))
    throw usageError(`rate limit "${opts.rateMiBps}" must be a positive number of MiB/s`);
  const state = await observe(ctx.runner, ctx.vg, ctx.scope);
  const image = findImage(state, name);
  if (image.state !== 'sealed')
    throw refused(
      `${lvRef(image)} is ${image.state}; only sealed images are replicated`,
      `seal it first: cowstack image seal ${name}`,
    );
  if (!image.sha256)
    throw refused(
      `${lvRef(image)} has no recorded sha256, so a copy could not be verified`,
      'images sealed by cowstack carry one; re-import it',
    );
  let cache = await observeCache(ctx.runner, cacheVg);
  if (!cache.exists)
    throw notFound(
      `this node (${ctx.runner.target}) has no cache VG ${cacheVg}`,
      'create it on a local disk: cowstack cache init DEVICE',
    );
  const lvName = replicaLvName(image.uuid);
  const base = {
    name,
    vg: ctx.vg,
    uuid: image.uuid,
    cacheVg,
    replica: lvName,
    device: cacheLvPath({ vg: cacheVg, name: lvName }),
    sizeBytes: image.sizeBytes,
  };
  const evicted = await dropStale(ctx, cache, state.repo);
  if (evicted.length) cache = await observeCache(ctx.runner, cacheVg);
  let rp = cache.lvs.find((c) => c.name === lvName);
  // A replica of this very LV made against another checksum is not this content's copy.
  if (rp && rp.sha256 !== image.sha256) {
    await removeCacheLv(ctx, rp, cache);
    evicted.push(rp.name);
    rp = undefined;
    cache = await observeCache(ctx.runner, cacheVg);
  }
  if (rp?.state === 'complete') {
    return {
      ...base,
      action: 'none',
      copiedBytes: rp.sizeBytes,
      sha256: rp.sha256,
      evicted,
      seconds: (Date.now() - started) / 1000,
    };
  }
  const ref = `${cacheVg}/${lvName}`;
  const steps: Step[] = [];
  if (!rp) {
    evicted.push(...(await makeRoom(ctx, cache, image.sizeBytes, state.repo)));
    steps.push({
      title: `create replica ${ref} (${formatSize(image.sizeBytes)}) of ${lvRef(image)}`,
      req: lvm.lvmRequest(
        'lvcreate',
        [
          '-an',
          '-Zn',
          '-Wn',
          '--setautoactivation',
          'n',
          '-L',
          `${image.sizeBytes}b`,
          '-n',
          lvName,
          '--addtag',
          cacheTag.kind('replica'),
          '--addtag',
          cacheTag.origin(image.uuid),
          '--addtag',
          cacheTag.state('copying'),
          '--addtag',
          cacheTag.copied(0),
          '--addtag',
          cacheTag.sha256(image.sha256),
          cacheVg,
        ],
        'write',
      ),
      undo: [lvm.lvmRequest('lvremove', ['-y', ref], 'write')],
    });
  }
  if (!rp?.lv.activeLocally) steps.push(activateCacheLv({ vg: cacheVg, name: lvName }));
  const imageWasActive = image.lv.activeLocally;
  if (!imageWasActive) steps.push(activateStep(image, 'shared', ctx.scope));
  await runGuarded(ctx, steps, image);

  let copied = rp?.copiedBytes ?? 0;
  const resumed = copied > 0;
  const chunk = opts.chunkBytes ?? COPY_CHUNK;
  const src = lvMapperPath(ctx.vg, image.name);
  const dst = base.device;
  try {
    while (copied < image.sizeBytes) {
      const t0 = Date.now();
      const blocks = Math.min(chunk, image.sizeBytes - copied) / EXTENT;
      const at = copied / EXTENT;
      const next = copied + blocks * EXTENT;
      await runPlan(
        ctx.runner,
        [
          {
            title: `copy ${formatSize(copied)}..${formatSize(next)} of ${formatSize(image.sizeBytes)} into ${ref}`,
            // One 4 MiB direct request at a time: a bulk read of the shared LUN must not
            // starve sanlock's lease renewals on the same path.
            req: {
              argv: [
                'dd',
                `if=${src}`,
                `of=${dst}`,
                'bs=4M',
                `skip=${at}`,
                `seek=${at}`,
                `count=${blocks}`,
                'iflag=direct',
                'oflag=direct',
                'conv=fsync,notrunc',
                'status=none',
              ],
              kind: 'write',
              root: true,
              timeout: 'data',
            },
          },
          {
            title: `record progress of ${ref}`,
            req: lvm.lvmRequest(
              'lvchange',
              ['--deltag', cacheTag.copied(copied), '--addtag', cacheTag.copied(next), ref],
              'write',
            ),
          },
        ],
        ctx.observer,
      );
      copied = next;
      opts.onProgress?.(copied, image.sizeBytes);
      if (opts.rateMiBps && copied < image.sizeBytes) {
        const wantMs = ((blocks * EXTENT) / (opts.rateMiBps * 2 ** 20)) * 1000;
        const spent = Date.now() - t0;
        if (wantMs > spent) await sleep(wantMs - spent);
      }
    }
    let sha: string | undefined;
    if (!ctx.dryRun) {
      const r = await ctx.runner.run({ argv: ['sha256sum', dst], kind: 'read', root: true, timeout: 'data' });
      sha = r.stdout.split(/\s+/)[0]!;
      if (sha !== image.sha256) {
        // Start over next time rather than keep a copy that is known to be wrong.
        await runPlan(
          ctx.runner,
          [
            {
              title: `restart ${ref} from zero`,
              req: lvm.lvmRequest(
                'lvchange',
                ['--deltag', cacheTag.copied(copied), '--addtag', cacheTag.copied(0), ref],
                'write',
              ),
            },
          ],
          ctx.observer,
        );
        throw new CowstackError(
          EXIT.FAILED,
          `replica ${ref} of ${lvRef(image)} has sha256 ${sha}, the image records ${image.sha256}`,
          {
            hint:
              'the copy is not used; run cowstack cache replicate again (it starts over). If it fails again, ' +
              'check the local disk.',
            data: { replica: ref, sha256: sha, expected: image.sha256 },
          },
        );
      }
    }
    // The last progress step recorded copied = size: deleting and adding that same tag here
    // removed it (lvchange applies --addtag before --deltag), so cache list said 0 copied.
    const copiedTags =
      copied === image.sizeBytes
        ? []
        : ['--deltag', cacheTag.copied(copied), '--addtag', cacheTag.copied(image.sizeBytes)];
    await runPlan(
      ctx.runner,
      [
        {
          title: `mark ${ref} complete and read-only`,
          req: lvm.lvmRequest(
            'lvchange',
            [
              '--permission',
              'r',
              '--deltag',
              cacheTag.state('copying'),
              '--addtag',
              cacheTag.state('complete'),
              ...copiedTags,
              '--addtag',
              cacheTag.used(Math.floor(Date.now() / 1000)),
              ref,
            ],
            'write',
          ),
        },
      ],
      ctx.observer,
    );
    return {
      ...base,
      action: resumed ? 'resumed' : 'replicated',
      copiedBytes: copied,
      sha256: sha,
      evicted,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    if (!imageWasActive && !ctx.dryRun) await collectGarbage(ctx, image.name);
  }
}

/** Caches whose origin LV is gone can never be used again: drop them (if not open). */
async function dropStale(ctx: OpContext, cache: CacheState, repo: Repo): Promise<string[]> {
  const dropped: string[] = [];
  for (const c of units(cache.lvs)) {
    if (repo.byUuid.has(c.originUuid) || c.lv.open) continue;
    await removeCacheLv(ctx, c, cache);
    dropped.push(c.name);
  }
  return dropped;
}

/**
 * The removable units of a cache VG: every LV except the metadata LV of a lazy cache whose
 * data LV is listed too (the pair goes together: removeCacheLv removes both).
 */
const units = (lvs: CacheLv[]): CacheLv[] =>
  lvs.filter(
    (c) => c.kind !== 'lazymeta' || !lvs.some((d) => d.kind === 'lazy' && sameUuid(d.originUuid, c.originUuid)),
  );

/** The bytes a cache unit frees: a lazy cache's data LV with its metadata LV. */
const unitBytes = (c: CacheLv, cache: CacheState): number =>
  c.sizeBytes +
  (c.kind === 'lazy'
    ? cache.lvs
        .filter((m) => m.kind === 'lazymeta' && sameUuid(m.originUuid, c.originUuid))
        .reduce((n, m) => n + m.sizeBytes, 0)
    : 0);

/**
 * Evict unused replicas and lazy caches, least recently used first, until `bytes` fit;
 * refuse if they cannot. An attached lazy cache holds its LVs open: never evicted.
 */
export async function makeRoom(ctx: OpContext, cache: CacheState, bytes: number, repo: Repo): Promise<string[]> {
  let free = cache.freeBytes;
  if (free >= bytes) return [];
  // Write-back caches may hold the only copy of a VM's writes: never evicted.
  const candidates = cache.lvs
    .filter((c) => (c.kind === 'replica' || c.kind === 'lazy') && !c.lv.open)
    .sort((a, b) => a.usedAt - b.usedAt);
  const need = candidates.reduce((n, c) => n + unitBytes(c, cache), free);
  if (need < bytes) {
    throw refused(
      `the cache VG ${cache.vg} has ${formatSize(free)} free and ${formatSize(need - free)} in unused ` +
        `caches; ${formatSize(bytes)} are needed`,
      'drop caches in use elsewhere (unmap their clones) or give the cache VG a larger disk',
    );
  }
  const evicted: string[] = [];
  for (const c of candidates) {
    if (free >= bytes) break;
    await removeCacheLv(ctx, c, cache);
    evicted.push(`${c.name} (${repo.byUuid.get(c.originUuid)?.name ?? 'stale'})`);
    free += unitBytes(c, cache);
  }
  return evicted;
}

/** Remove a cache LV; a lazy cache's data LV goes with its metadata LV (one command each). */
export async function removeCacheLv(ctx: OpContext, c: CacheLv, cache?: CacheState): Promise<void> {
  const group =
    c.kind === 'lazy'
      ? [c, ...(cache?.lvs ?? []).filter((m) => m.kind === 'lazymeta' && sameUuid(m.originUuid, c.originUuid))]
      : [c];
  const refs = (list: CacheLv[]) => list.map((x) => `${x.vg}/${x.name}`);
  const active = group.filter((x) => x.lv.activeLocally);
  const steps: Step[] = [];
  if (active.length)
    steps.push({
      title: `deactivate ${refs(active).join(' ')}`,
      req: lvm.lvmRequest('lvchange', ['-an', ...refs(active)], 'write'),
    });
  steps.push({
    title: `remove cache LV ${refs(group).join(' ')}`,
    req: lvm.lvmRequest('lvremove', ['-y', ...refs(group)], 'write'),
  });
  await runPlan(ctx.runner, steps, ctx.observer);
}

// ---- list / drop -------------------------------------------------------------------------------

export interface CacheEntry {
  kind: CacheLv['kind'];
  name: string;
  /** The cache LV's own uuid (a re-attached cache keeps it; a rebuilt one would not). */
  uuid: string;
  cacheVg: string;
  /**
   * Replicas: complete / copying, or stale when the origin LV no longer exists. Write-back
   * caches: attached (its device is up), or detached (a crash left it: mapping or recovering
   * the clone here re-attaches it and writes it back). Lazy caches: attached (its device
   * is up), ready (cleanly detached: re-attached with its mappings), new (never attached),
   * unclean (left attached by a crash: reset at its next attach).
   */
  state: CacheLv['state'] | 'stale' | 'attached' | 'detached' | 'ready' | 'new' | 'unclean';
  /** Write-back caches: blocks not yet written back to the COW. */
  dirtyBlocks?: number;
  origin: { uuid: string; name?: string };
  sizeBytes: number;
  copiedBytes: number;
  active: boolean;
  open: boolean;
  lastUsed?: string;
  /**
   * Write-back caches (kernel counters: read + write hits, read misses); a replica serves every read.
   * Lazy: read hits / misses.
   */
  hits?: number;
  misses?: number;
  /** Lazy caches while attached (dm-cache status; the kernel's counters restart at each attach). */
  lazy?: {
    metaBytes: number;
    device: string;
    usedBlocks: number;
    totalBlocks: number;
    blockBytes: number;
    readHits: number;
    readMisses: number;
    promotions: number;
    demotions: number;
    hitRatio: number;
    needsCheck: boolean;
  };
}

export interface CacheReport {
  cacheVg: string;
  exists: boolean;
  sizeBytes: number;
  freeBytes: number;
  caches: CacheEntry[];
}

export async function listCaches(ctx: OpContext): Promise<CacheReport> {
  const cacheVg = cacheVgOf(ctx);
  const cache = await observeCache(ctx.runner, cacheVg);
  const repo = cache.exists ? (await observe(ctx.runner, ctx.vg, ctx.scope)).repo : undefined;
  // Write-back caches report their counters through their dm device (one status call for all).
  const statuses = cache.lvs.some((c) => c.kind === 'writeback' || (c.kind === 'lazy' && c.lv.open))
    ? await dmsetup.statusAll(ctx.runner)
    : new Map<string, dmsetup.DmLine[]>();
  return {
    cacheVg,
    exists: cache.exists,
    sizeBytes: cache.sizeBytes,
    freeBytes: cache.freeBytes,
    caches: units(cache.lvs).map((c) => toEntry(c, repo, statuses, cache)),
  };
}

function toEntry(
  c: CacheLv,
  repo: Repo | undefined,
  statuses: Map<string, dmsetup.DmLine[]>,
  cache: CacheState,
): CacheEntry {
  const origin = repo?.byUuid.get(c.originUuid);
  let wb: Partial<CacheEntry> = {};
  if (c.kind === 'writeback') {
    const line = statuses.get(dmName('wb', c.originUuid))?.[0];
    const st = line?.target === 'writecache' ? dmsetup.parseWritecacheStatus(line.args) : undefined;
    wb = st
      ? {
          state: 'attached',
          dirtyBlocks: st.dirtyBlocks,
          ...(st.readBlocks !== undefined
            ? { hits: (st.readHits ?? 0) + (st.writeHits ?? 0), misses: st.readBlocks - (st.readHits ?? 0) }
            : {}),
        }
      : { state: 'detached' };
  }
  if (c.kind === 'lazy') {
    const device = dmName('lc', c.originUuid);
    const line = statuses.get(device)?.[0];
    const st = line?.target === 'cache' ? dmsetup.parseCacheStatus(line.args) : undefined;
    const metaBytes = unitBytes(c, cache) - c.sizeBytes;
    wb = st
      ? {
          state: 'attached',
          hits: st.readHits,
          misses: st.readMisses,
          lazy: {
            metaBytes,
            device,
            usedBlocks: st.cacheUsed,
            totalBlocks: st.cacheTotal,
            blockBytes: st.cacheBlockSectors * 512,
            readHits: st.readHits,
            readMisses: st.readMisses,
            promotions: st.promotions,
            demotions: st.demotions,
            hitRatio: st.readHits + st.readMisses ? st.readHits / (st.readHits + st.readMisses) : 0,
            needsCheck: st.needsCheck,
          },
        }
      : { state: c.lazyState === 'attached' ? 'unclean' : c.lazyState };
  }
  return {
    kind: c.kind,
    name: c.name,
    uuid: c.uuid,
    cacheVg: c.vg,
    state: repo && !origin ? 'stale' : c.state,
    ...wb,
    origin: { uuid: c.originUuid, name: origin?.name },
    sizeBytes: c.sizeBytes,
    copiedBytes: c.copiedBytes,
    active: c.lv.activeLocally,
    open: c.lv.open,
    lastUsed: c.usedAt ? new Date(c.usedAt * 1000).toISOString() : undefined,
    // Whatever else it is, a cache whose origin LV is gone can never be used again.
    ...(repo && !origin ? { state: 'stale' as const } : {}),
  };
}

export interface DropResult {
  cacheVg: string;
  dropped: string[];
  action: 'dropped' | 'none';
}

/** Drop the caches of an image (by its current name) or every stale one; refuses open ones. */
export async function dropCaches(ctx: OpContext, target: { image?: string; stale?: boolean }): Promise<DropResult> {
  const cacheVg = cacheVgOf(ctx);
  if (!target.image && !target.stale) throw usageError('say what to drop: an IMAGE name or --stale');
  const cache = await observeCache(ctx.runner, cacheVg);
  if (!cache.exists) return { cacheVg, dropped: [], action: 'none' };
  const state = await observe(ctx.runner, ctx.vg, ctx.scope);
  let victims: CacheLv[];
  if (target.image) {
    const image = findImage(state, target.image);
    victims = cache.lvs.filter((c) => sameUuid(c.originUuid, image.uuid));
  } else {
    victims = cache.lvs.filter((c) => !state.repo.byUuid.has(c.originUuid));
  }
  const open = victims.filter((c) => c.lv.open);
  if (open.length) {
    throw refused(
      `cache ${open.map((c) => `${c.vg}/${c.name}`).join(', ')} is in use by mapped clones on this node`,
      'unmap the clones of that image on this node first',
    );
  }
  const drop = units(victims);
  for (const c of drop) await removeCacheLv(ctx, c, cache);
  return { cacheVg, dropped: drop.map((c) => c.name), action: drop.length ? 'dropped' : 'none' };
}
