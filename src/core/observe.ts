/** One observation of a node: the repository's tags (one lvs) and every dm device (one dmsetup info). */
import { notFound, usageError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import { observeCache } from './cache/vg.js';
import { compactUuid, dmIdentity, dmName, lvmDeviceLvUuid, lvMapperName } from './dmNames.js';
import { WB_HOST_TAG, type CacheState } from './cache/meta.js';
import { fromLv, isFrozen, Repo, type CloneObj, type CowObj, type ImageObj } from './metadata.js';
import type { NodeSession } from './node.js';
import { validateLvName, validateVgName } from './validate.js';

const vgMissing = (runner: Runner, vg: string) =>
  notFound(
    `repository VG ${vg} is not visible on ${runner.target}`,
    'log in to the LUN and join the cluster: cowstack initiator login …, cowstack cluster join',
  );

/**
 * `lvs --nolocking` reports every local activation as exclusive; lvmlockd knows the real
 * mode. It matters only for a writable cowstack LV (a live clone, a writable image) active here: a
 * frozen LV is only ever read. Asked only then, which spares the command in most operations.
 */
async function lockModesIfNeeded(runner: Runner, reported: lvm.LvInfo[]): Promise<Map<string, 'ex' | 'sh'>> {
  // An LV without a role tag (fromLv: undefined) is not cowstack's: it never decides anything.
  const writable = (l: lvm.LvInfo) => {
    const o = fromLv(l);
    return o !== undefined && !isFrozen(o);
  };
  return reported.some((l) => l.activeLocally && writable(l)) ? sanlock.lvLockModes(runner) : new Map();
}

export interface NodeState {
  vg: string;
  repo: Repo;
  /** Every dm device on the node by name (LVM's own and cowstack's). */
  devices: Map<string, dmsetup.DmDevice>;
  /** The node-local cache VG, when the caller asked for it (clone map). */
  cache?: CacheState;
}

/**
 * With `cacheVg`, the node's cache VG is observed too (two more local LVM reports, a second
 * or more each under emulation). `cacheWhen: 'auto'` skips them when nothing can need them:
 * no LV of the cache VG is active here (a replica or write-back cache in use is active) and
 * no clone in the repository carries a write-back marker (a cache left by a crash, whose
 * LV may be inactive after the reboot, must be found and re-attached). 'always': recover,
 * and maps that asked for a cache.
 */
export async function observe(
  runner: Runner,
  vg: string,
  scope: lvm.LvmScope = {},
  cacheVg?: string,
  cacheWhen: 'auto' | 'always' = 'auto',
): Promise<NodeState> {
  validateVgName(vg);
  if (cacheVg) validateVgName(cacheVg);
  const [early, reported, devices] = await Promise.all([
    cacheVg && cacheWhen === 'always' ? observeCache(runner, cacheVg) : undefined,
    lvm.lvs(runner, vg, scope),
    dmsetup.listDevices(runner),
  ]);
  return withDevices(runner, vg, scope, reported, devices, cacheVg, early);
}

/**
 * The node's devices less those cowstack built for another VG's LVs. A node can serve several
 * repositories (config repositories); the devices of another VG's clones are that VG's: left
 * in, this VG's status would call them orphans and its recover would remove the unopened
 * ones. An LV uuid that is not this VG's but that one of LVM's own devices carries is another
 * VG's LV (cowstack's devices stand on active LVs). A cowstack device whose LV has no device
 * at all stays in: that is an orphan.
 */
function withoutForeign(devices: dmsetup.DmDevice[], reported: lvm.LvInfo[]): dmsetup.DmDevice[] {
  const ours = new Set(reported.map((l) => compactUuid(l.uuid)));
  const lvmLvs = new Set(devices.map((d) => lvmDeviceLvUuid(d.uuid)).filter((u) => u !== undefined));
  return devices.filter((d) => {
    const id = dmIdentity(d);
    return !id || ours.has(id.lvUuid) || !lvmLvs.has(id.lvUuid);
  });
}

/** The observation from the two reports: lock modes and the cache VG where they can matter. */
async function withDevices(
  runner: Runner,
  vg: string,
  scope: lvm.LvmScope,
  reported: lvm.LvInfo[],
  devices: dmsetup.DmDevice[],
  cacheVg?: string,
  early?: CacheState,
): Promise<NodeState> {
  const byName = new Map(withoutForeign(devices, reported).map((d) => [d.name, d]));
  // An LV under a writable snapshot cowstack built here was activated exclusively for it.
  const unmapped = reported.filter((l) => !byName.has(dmName('rw', l.uuid)));
  const lvs = sanlock.withLockModes(reported, await lockModesIfNeeded(runner, unmapped));
  if (!lvs.length && !(await lvm.vgs(runner, vg, scope)).length) {
    throw vgMissing(runner, vg);
  }
  let cache = early;
  if (cacheVg && !cache) {
    const prefix = lvMapperName(cacheVg, 'x').slice(0, -1);
    const needed =
      devices.some((d) => d.name.startsWith(prefix)) || lvs.some((l) => l.tags.some((t) => t.startsWith(WB_HOST_TAG)));
    if (needed) cache = await observeCache(runner, cacheVg);
  }
  return {
    vg,
    repo: new Repo(vg, lvs),
    devices: byName,
    ...(cache ? { cache } : {}),
  };
}

/** observe, with the node's devices already read by the caller (one dmsetup info, not two). */
async function observeGiven(
  runner: Runner,
  vg: string,
  scope: lvm.LvmScope = {},
  cacheVg: string | undefined,
  devices: dmsetup.DmDevice[],
): Promise<NodeState> {
  validateVgName(vg);
  if (cacheVg) validateVgName(cacheVg);
  return withDevices(runner, vg, scope, await lvm.lvs(runner, vg, scope), devices, cacheVg);
}

/**
 * The repository first, and the node's devices (and the lock modes, judged from them) only
 * when `needsDevices` says the plan can depend on them. For a node without a cache VG: a new
 * clone of a sealed image stands on the image LV and on a COW nobody else has, so nothing
 * the devices say changes its plan; its only LVs are that image (frozen: read, never
 * written) and the new COW, so no lock mode matters either. One command less than observe.
 */
async function observeStaged(
  runner: Runner,
  vg: string,
  scope: lvm.LvmScope = {},
  needsDevices: (repo: Repo) => boolean = () => true,
): Promise<NodeState> {
  validateVgName(vg);
  const reported = await lvm.lvs(runner, vg, scope);
  const repo = new Repo(vg, reported);
  if (reported.length && !needsDevices(repo)) return { vg, repo, devices: new Map() };
  return withDevices(runner, vg, scope, reported, await dmsetup.listDevices(runner));
}

/**
 * The repository alone (one lvs, and lvmlockd's lock modes only when a writable LV is active
 * here): for operations that decide from names, tags and sizes, never from the node's
 * devices (clone create). `devices` is empty.
 */
async function observeRepo(runner: Runner, vg: string, scope: lvm.LvmScope = {}): Promise<NodeState> {
  validateVgName(vg);
  const reported = await lvm.lvs(runner, vg, scope);
  if (!reported.length && !(await lvm.vgs(runner, vg, scope)).length) throw vgMissing(runner, vg);
  const lvs = sanlock.withLockModes(reported, await lockModesIfNeeded(runner, reported));
  return { vg, repo: new Repo(vg, lvs), devices: new Map() };
}

/** The state with one more LV (one this operation created and read back). */
export const withLv = (state: NodeState, lv: lvm.LvInfo): NodeState => ({
  ...state,
  repo: new Repo(state.vg, [...state.repo.lvs.filter((l) => l.name !== lv.name), lv]),
});

export function findObj(state: NodeState, name: string): CowObj {
  validateLvName(name, 'name');
  const o = state.repo.byName.get(name);
  if (!o) {
    const foreign = state.repo.foreign.some((l) => l.name === name);
    throw notFound(
      foreign
        ? `${state.vg}/${name} exists but is not managed by cowstack`
        : `no image or clone named ${name} in ${state.vg}`,
      foreign ? 'cowstack never touches LVs it did not create' : `list them with: cowstack tree --vg ${state.vg}`,
      { vg: state.vg, name },
    );
  }
  return o;
}

export function findClone(state: NodeState, name: string): CloneObj {
  const o = findObj(state, name);
  if (o.kind !== 'clone')
    throw usageError(`${name} is an image, not a clone`, 'use the cowstack image commands for images');
  return o;
}

export function findImage(state: NodeState, name: string): ImageObj {
  const o = findObj(state, name);
  if (o.kind !== 'image')
    throw usageError(`${name} is a clone, not an image`, 'use the cowstack clone commands for clones');
  return o;
}

/** What an operation needs to see of its node; every field is optional (all: the full observation). */
export interface ObserveOptions {
  /** The node's cache VG too (see observe's cacheWhen); without it the cache VG is not read. */
  caches?: 'auto' | 'always';
  /** The node's devices, already read by the caller (one dmsetup info, not two). */
  devices?: dmsetup.DmDevice[];
  /** Read the devices only when the repository says the plan can depend on them (observeStaged). */
  needsDevices?: (repo: Repo) => boolean;
  /** The repository alone, no devices (clone create decides from names, tags and sizes). */
  repoOnly?: boolean;
}

/**
 * The one observation of a node session (what core, cli and tm call): its VG and device
 * filter, and with `caches` its cache VG too. The options choose the cheapest read that
 * still shows the operation everything its plan depends on.
 */
export function observeNode(ctx: NodeSession, o: ObserveOptions = {}): Promise<NodeState> {
  const cacheVg = o.caches ? ctx.cacheVg : undefined;
  if (o.repoOnly) return observeRepo(ctx.runner, ctx.vg, ctx.scope);
  if (o.devices) return observeGiven(ctx.runner, ctx.vg, ctx.scope, cacheVg, o.devices);
  if (o.needsDevices) return observeStaged(ctx.runner, ctx.vg, ctx.scope, o.needsDevices);
  return observe(ctx.runner, ctx.vg, ctx.scope, cacheVg, o.caches);
}
