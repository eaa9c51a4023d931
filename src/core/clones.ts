/**
 * Clone lifecycle: create (an "initializing" COW LV, first chunk zeroed, then "live"),
 * map/unmap on a node, commit (sync-back: the clone becomes a read-only parent), discard,
 * rm and grow. Each operation observes, plans, journals and runs; each is idempotent.
 */
import { CommandError, CowstackError, EXIT, notFound, refused, usageError } from '../exec/errors.js';
import type { CacheKind } from './cache/kind.js';
import { CACHE_KINDS, type CacheMapResult } from './cache/kinds.js';
import { wbHostOf } from './cache/meta.js';
import { refuseForeignWriteback, releaseWriteback, writebackLv } from './cache/writeback.js';
import type { CacheMapMode } from './config.js';
import * as blockData from '../tools/blockData.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { dmName, lvMapperName, lvMapperPath } from './dmNames.js';
import { lookAgainAfterUdev, whoHolds } from './holders.js';
import { beginStep, endStep } from './journal.js';
import { chunkTag, isFrozen, parentTag, roleTag, stateTag, type CloneObj, type CowObj, type Repo } from './metadata.js';
import { leaseSpaceRefusal, refuseIfNoRoom } from './capacity.js';
import { plainMapping, type PlainMapping } from './deviceGraph.js';
import { findClone, findObj, withLv, type NodeState, observeNode } from './observe.js';
import { runPlan, type Step } from './plan.js';
import {
  activateStep,
  deactivateStep,
  liveTop,
  lvRef,
  planStack,
  stillLiveStep,
  bottomTables,
  ANCESTORS_NOT_RELEASED,
  foldRelease,
  mergeDeactivations,
  teardownParts,
  teardownPlan,
  verifyExisting,
} from './stack.js';
import { formatSize, parseSize, validateLvName, EXTENT, roundUp } from './validate.js';
import { collectGarbage } from './nodeGc.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { refuseUntrusted } from './catalog/gate.js';

// Moved out to break an import cycle with src/core/cache (which needs them); still exported here.
export { collectGarbage };

// ---- create ------------------------------------------------------------------------------

export interface CreateCloneOptions {
  name: string;
  from: string;
  cowSize?: string;
  chunk?: string;
  /** Default COW size as a percentage of the parent's virtual size. */
  defaultPercent?: number;
  /**
   * Leave the new COW active exclusively here (the caller maps it next: TM clone): it is
   * then created, zeroed and marked live without being deactivated in between.
   */
  keepActive?: boolean;
  /** Clone a catalogue image that is not endorsed and approved (logged on the node). */
  force?: boolean;
}

export interface CloneResult extends CacheMapResult {
  name: string;
  vg: string;
  uuid?: string;
  parent?: string;
  action: 'created' | 'completed' | 'none' | 'mapped' | 'unmapped' | 'committed' | 'discarded' | 'removed' | 'grown';
  device?: string;
  mode?: 'rw' | 'ro';
  cowBytes?: number;
  chunkSectors?: number;
  /** Blocks written back from the write-back cache before the COW was released. */
  flushedBlocks?: number;
  flushSeconds?: number;
  /** The operation succeeded; something after it (releasing unused ancestors) did not. */
  warnings?: string[];
}

export function chunkSectorsOf(text: string): number {
  const bytes = parseSize(text, 'chunk size');
  const sectors = bytes / 512;
  if (sectors < 8 || sectors > 2048 || (sectors & (sectors - 1)) !== 0) {
    throw usageError(
      `chunk size "${text}" must be a power of two from 4K to 1M`,
      'dm-snapshot splits I/O at the chunk size: 4K suits random VM writes, 64K sequential ones',
    );
  }
  return sectors;
}

/**
 * With `seen`, the caller's observation of this node (taken under the node lock) is used
 * instead of a new one.
 */
export async function createClone(ctx: NodeSession, opts: CreateCloneOptions, seen?: NodeState): Promise<CloneResult> {
  return (await createCloneLv(ctx, opts, seen)).result;
}

/** createClone, also giving the new COW's LV as read back (its uuid), for a caller that maps it next. */
export async function createCloneLv(
  ctx: NodeSession,
  opts: CreateCloneOptions,
  seen?: NodeState,
): Promise<{ result: CloneResult; lv?: lvm.LvInfo }> {
  validateLvName(opts.name, 'clone name');
  const chunkSectors = chunkSectorsOf(opts.chunk ?? '4K');
  // Only names, tags and sizes matter here: the repository, not the node's devices.
  const state = seen ?? (await observeNode(ctx, { repoOnly: true }));
  const parent = findObj(state, opts.from);
  if (!isFrozen(parent)) {
    throw refused(
      `${opts.from} is ${parent.state}: a clone's parent must be a sealed image or a committed clone`,
      parent.kind === 'image'
        ? `seal it first: cowstack image seal ${opts.from}`
        : `commit it first: cowstack clone commit ${opts.from}`,
    );
  }
  const chunkBytes = chunkSectors * 512;
  // The virtual size is the image's: a committed clone's own LV is only its COW.
  const root = state.repo.chain(parent).at(-1)!;
  const virtualBytes = root.sizeBytes;
  const requested = opts.cowSize
    ? parseSize(opts.cowSize, 'COW size')
    : Math.max(roundUp((virtualBytes * (opts.defaultPercent ?? 25)) / 100, EXTENT), 2 * EXTENT);
  if (requested < chunkBytes)
    throw usageError(
      `COW size ${formatSize(requested)} is smaller than the chunk size ${formatSize(chunkBytes)}`,
      'give --cow-size at least a few chunks; LVM rounds it up to whole extents',
    );
  if (requested < 3 * chunkBytes)
    throw usageError(
      `COW size ${formatSize(requested)} cannot hold the snapshot header, ` +
        `one metadata chunk and data (needs at least 3 chunks of ${formatSize(chunkBytes)})`,
    );
  const cowBytes = roundUp(requested, EXTENT);

  const existing = state.repo.byName.get(opts.name);
  const base = { name: opts.name, vg: ctx.vg, parent: parent.name, cowBytes, chunkSectors };
  if (existing || state.repo.foreign.some((l) => l.name === opts.name)) {
    if (existing?.kind === 'clone' && existing.parentUuid === parent.uuid) {
      if (existing.state !== 'initializing')
        return {
          result: {
            ...base,
            uuid: existing.uuid,
            cowBytes: existing.sizeBytes,
            chunkSectors: existing.chunkSectors,
            action: 'none',
          },
        };
      try {
        await runGuarded(ctx, finishCreateSteps(ctx, existing, existing.chunkSectors), existing);
      } catch (e) {
        // Its COW is locked elsewhere: another node is creating this very clone right now.
        if (e instanceof CowstackError && e.exitCode === EXIT.LOCK_CONFLICT) {
          throw refused(
            `${ctx.vg}/${opts.name} already exists: another operation is creating it right now (${e.message})`,
            'run the command again once that one finished: the clone is then reported as is',
            { vg: ctx.vg, lv: opts.name },
          );
        }
        throw e;
      }
      return {
        result: {
          ...base,
          uuid: existing.uuid,
          cowBytes: existing.sizeBytes,
          chunkSectors: existing.chunkSectors,
          action: 'completed',
        },
      };
    }
    const other = existing?.kind === 'clone' ? 'a clone of another parent' : 'an image';
    throw refused(
      `${ctx.vg}/${opts.name} already exists${existing ? ` (${other})` : ' and is not managed by cowstack'}`,
      'pick another name',
    );
  }

  refuseIfNoRoom(ctx.vg, state.repo.lvs, cowBytes, `the COW of ${opts.name}`);
  // A catalogue image runs only while endorsed and approved; an existing clone (above) is not judged again.
  const forced = root.kind === 'image' ? await refuseUntrusted(ctx, root, opts.name, { force: opts.force }) : undefined;
  const ref = `${ctx.vg}/${opts.name}`;
  // One lvcreate makes the COW, activates it exclusively and zeroes its first 4 KiB (-Zy), which
  // holds the snapshot header's magic: dm-snapshot then starts an empty exception store. The
  // initializing tag stays until the header is known to be zero, so no node ever maps a COW
  // whose creation a crash cut short (recover finishes or removes it).
  const tags = [roleTag('clone'), stateTag('initializing'), parentTag(parent.uuid), chunkTag(chunkSectors)];
  const create: Step = {
    title: `create COW ${ref} (${formatSize(cowBytes)}, chunk ${formatSize(chunkBytes)}) on ${parent.name}`,
    req: lvm.createLvReq(
      {
        vg: ctx.vg,
        name: opts.name,
        bytes: cowBytes,
        activate: 'ey',
        zero: true,
        tags,
      },
      ctx.scope,
    ),
    undo: [lvm.removeLvReq(ref, ctx.scope)],
  };
  const journal = { op: 'create-clone' as const, vg: ctx.vg, name: opts.name };
  const placeholder = { vg: ctx.vg, name: opts.name } as CowObj;
  try {
    await runGuarded(ctx, [beginStep(journal), create]);
  } catch (e) {
    // Another node (or process) created the same name since the observation: its LV, not ours
    // (the failed lvcreate has no undo, so nothing of it was removed).
    if (e instanceof CommandError && e.argv.includes('lvcreate') && /already exists/i.test(e.stderr)) {
      throw refused(
        `${ref} already exists: another operation created it at the same time`,
        'pick another name, or run the command again once that one finished ' +
          '(a clone of the same parent is then reported as is)',
        { vg: ctx.vg, lv: opts.name, cause: e.stderr.trim() },
      );
    }
    throw leaseSpaceRefusal(ctx.vg, e) ?? e;
  }
  // The mark's own command log names the new LV's uuid: no read after it on the way to a
  // mapped disk. A failed mark undoes the creation.
  const mark = markLiveStep(ctx, placeholder, { keepActive: opts.keepActive, reportUuid: true });
  const marked = await runGuarded(ctx, [mark, endStep(journal)]).catch(async (e: unknown) => {
    await runPlan(ctx.runner, [{ title: `remove ${ref}`, req: create.undo![0]! }, endStep(journal)]).catch(
      () => undefined,
    );
    throw e;
  });
  const log = marked.results[0]!;
  let uuid = log.skipped ? undefined : lvm.parseCommandLogLvs(log.stdout).find((l) => l.name === opts.name)?.uuid;
  // An LVM whose log does not name the LV (not seen with 2.03.16): read it back instead.
  if (!uuid && !log.skipped) uuid = (await lvm.findLv(ctx.runner, ctx.vg, opts.name, ctx.scope))?.uuid;
  const lv = uuid ? createdLv(ctx, { name: opts.name, uuid, cowBytes, tags }, opts.keepActive) : undefined;
  const result: CloneResult = { ...base, uuid, action: 'created', ...(forced ? { warnings: [forced] } : {}) };
  return { result, ...(lv ? { lv } : {}) };
}

/**
 * The LV as this operation's own lvcreate and mark left it (tags, size, activation): what an
 * lvs right after them would report, without running it. Only the size may differ, upwards,
 * when the VG's extents are larger than 4 MiB; nothing on the way to the map depends on it.
 */
function createdLv(
  ctx: NodeSession,
  { name, uuid, cowBytes, tags }: { name: string; uuid: string; cowBytes: number; tags: string[] },
  active = false,
): lvm.LvInfo {
  return {
    name,
    vg: ctx.vg,
    uuid,
    sizeBytes: cowBytes,
    attr: active ? '-wi-a-----' : '-wi-------',
    tags: [...tags.filter((t) => t !== stateTag('initializing')), stateTag('live')],
    activeLocally: active,
    activeExclusively: active,
    readOnly: false,
    open: false,
    dmPath: active ? lvMapperPath(ctx.vg, name) : '',
    lockArgs: '',
    created: '',
    major: -1,
    minor: -1,
  };
}

/** Mark the zeroed COW live; deactivate it in the same command unless the caller maps it next. */
function markLiveStep(
  ctx: NodeSession,
  o: Pick<CowObj, 'vg' | 'name'>,
  { keepActive = false, reportUuid = false } = {},
): Step {
  const ref = `${o.vg}/${o.name}`;
  return {
    title: `mark ${ref} live${keepActive ? '' : ' and release it'}`,
    req: lvm.changeLvReq(
      ref,
      {
        ...(keepActive ? {} : { activate: 'n' as const }),
        tags: { del: [stateTag('initializing')], add: [stateTag('live')] },
        ...(reportUuid ? { reportUuids: true } : {}),
      },
      ctx.scope,
    ),
  };
}

/**
 * Finish a creation a crash cut short: zero the first chunk (a stale "SnAp" header would
 * attach garbage; the lvcreate may have died before its own zeroing), then mark it live.
 */
function finishCreateSteps(ctx: NodeSession, o: Pick<CowObj, 'vg' | 'name'>, chunkSectors: number): Step[] {
  const ref = `${o.vg}/${o.name}`;
  const j = { op: 'create-clone' as const, vg: o.vg, name: o.name };
  const steps: Step[] = [
    activateStep(o as CowObj, 'exclusive', ctx.scope),
    {
      title: `zero the first chunk of ${ref}`,
      req: blockData.zeroHeaderReq(lvMapperPath(o.vg, o.name), chunkSectors * 512),
    },
    markLiveStep(ctx, o),
  ];
  return [beginStep(j), ...steps, endStep(j)];
}

// ---- create and map in one operation ----------------------------------------------------------

export interface CreateAndMapResult {
  created: CloneResult;
  mapped: CloneResult;
}

/**
 * clone create + clone map as one operation (TM clone, `clone create --map`): one observation;
 * the COW stays held exclusively from its lvcreate on, so map needs neither a refresh nor a
 * re-read of it; the image is activated (shared) while the COW is being created. `reuseLive`:
 * a live clone of that name is mapped as it is, whatever its parent (a VM disk with snapshots).
 */
export async function createAndMapClone(
  ctx: NodeSession,
  opts: CreateCloneOptions,
  mapOpts: Omit<MapOptions, 'seen' | 'createdHere'> & { reuseLive?: boolean } = {},
): Promise<CreateAndMapResult> {
  // Without a cache VG, a new clone of a sealed image plans from the repository alone: the
  // node's devices are read only for anything else (an existing name, a committed parent).
  const plain = !ctx.cacheVg && !(mapOpts.cache ?? ctx.cacheMap ?? []).length;
  let state = plain
    ? await observeNode(ctx, { needsDevices: (repo) => !newCloneOfImage(repo, opts) })
    : await observeForMap(ctx, mapOpts);
  const existing = state.repo.byName.get(opts.name);
  if (mapOpts.reuseLive && existing?.kind === 'clone' && existing.state === 'live') {
    const created: CloneResult = { name: opts.name, vg: ctx.vg, uuid: existing.uuid, action: 'none' };
    return { created, mapped: await mapClone(ctx, opts.name, { ...mapOpts, seen: state }) };
  }
  const parent = state.repo.byName.get(opts.from);
  const image = parent && state.repo.chain(parent).at(-1);
  // Only a sealed image under a frozen parent, for a name not taken: what create will accept.
  const fresh = !existing && !state.repo.foreign.some((l) => l.name === opts.name);
  const warm =
    image?.kind === 'image' && image.state === 'sealed' && parent && isFrozen(parent) && fresh && !ctx.dryRun
      ? image
      : undefined;
  const warming: Promise<boolean> =
    warm && !warm.lv.activeLocally
      ? runGuarded(ctx, [activateStep(warm, 'shared', ctx.scope)], warm).then(
          () => true,
          // Not fatal here: map activates the image itself and reports a refusal properly.
          () => false,
        )
      : Promise.resolve(false);
  let made: Awaited<ReturnType<typeof createCloneLv>>;
  try {
    made = await createCloneLv(ctx, { ...opts, keepActive: true }, state);
  } catch (e) {
    // The activation may still be running: let it finish, then take it back.
    if (warm && (await warming)) await runGuarded(ctx, [deactivateStep(warm, ctx.scope)]).catch(() => undefined);
    throw e;
  }
  const warmed = await warming;
  if (warm && warmed) state = withLv(state, { ...warm.lv, activeLocally: true, activeExclusively: false });
  if (ctx.dryRun && made.result.action === 'created') {
    // Nothing was created, so there is no COW to plan the map on: its device is named after the
    // new LV's uuid, which only the lvcreate makes. The plan shows the creation.
    const note = 'dry run: the map is planned once the COW exists (its device is named after its LV uuid)';
    return { created: made.result, mapped: withWarnings({ name: opts.name, vg: ctx.vg, action: 'none' }, [note]) };
  }
  const createdHere = made.result.action === 'created' && made.lv ? made.lv.uuid : undefined;
  if (createdHere) state = withLv(state, made.lv!);
  else state = await observeForMap(ctx, mapOpts);
  try {
    const mapped = await mapClone(ctx, opts.name, { ...mapOpts, seen: state, ...(createdHere ? { createdHere } : {}) });
    return { created: made.result, mapped };
  } catch (e) {
    // The COW this operation created is still held exclusively here: let it go, so that a
    // re-run (or a deploy on another node) can take it; and the image it activated for it.
    const held = createdHere ? state.repo.byUuid.get(createdHere) : undefined;
    const release = [held, warmed ? warm : undefined]
      .filter((o): o is CowObj => Boolean(o))
      .map((o) => deactivateStep(o, ctx.scope));
    if (release.length) await runGuarded(ctx, mergeDeactivations(release, ctx.scope)).catch(() => undefined);
    throw e;
  }
}

/** Nothing named `name` yet, and the parent is a sealed image. */
function newCloneOfImage(repo: Repo, opts: Pick<CreateCloneOptions, 'name' | 'from'>): boolean {
  const parent = repo.byName.get(opts.from);
  const taken = repo.byName.has(opts.name) || repo.foreign.some((l) => l.name === opts.name);
  return !taken && parent?.kind === 'image' && parent.state === 'sealed';
}

// ---- map / unmap -------------------------------------------------------------------------

export interface MapOptions {
  /**
   * replica: make the image's verified local replica first if the node has none (needs a
   * cache VG); none: ignore caches. Default: ctx.cacheMap; a complete replica is used anyway.
   */
  cache?: CacheMapMode[];
  /** Data size of the lazy cache if one is created (default: ctx.cacheLazySize, else a quarter of the image). */
  lazySize?: string;
  /** The caller's observation (observeForMap, under the node lock), with the clone in it. */
  seen?: NodeState;
  /** The uuid of the clone when the caller just created it here, kept active (createClone keepActive). */
  createdHere?: string;
}

/**
 * What map observes: the node, and its cache VG when the map's cache modes need it. The cache
 * VG is looked at even with --cache none: a write-back cache left there for this clone holds
 * its newest blocks and must be re-attached, never mapped around.
 */
export function observeForMap(ctx: NodeSession, opts: Pick<MapOptions, 'cache'> = {}): Promise<NodeState> {
  const modes = opts.cache ?? ctx.cacheMap ?? [];
  const cacheWhen = CACHE_KINDS.some((k) => modes.includes(k.mode)) ? 'always' : 'auto';
  return observeNode(ctx, { caches: cacheWhen });
}

export async function mapClone(ctx: NodeSession, name: string, opts: MapOptions = {}): Promise<CloneResult> {
  const modes = opts.cache ?? ctx.cacheMap ?? [];
  const kinds = CACHE_KINDS.filter((k) => modes.includes(k.mode));
  for (const k of CACHE_KINDS) k.checkMapOptions?.(ctx, opts);
  let state = opts.seen ?? (await observeForMap(ctx, opts));
  const found = findObj(state, name);
  if (found.kind === 'image')
    throw usageError(
      `${name} is an image: images are used through clones`,
      `clone it: cowstack clone create NAME --from ${name}`,
    );
  let o: CloneObj = found;
  if (kinds.length && !state.cache?.exists) {
    throw notFound(
      `--cache ${modes.join(',')}: this node (${ctx.runner.target}) has no cache VG ${ctx.cacheVg ?? ''}`.trimEnd(),
      'create it on a local disk: cowstack cache init DEVICE, or map with --cache none',
    );
  }
  if (o.state !== 'live' && liveTop(state, o)) {
    throw refused(
      `${lvRef(o)} is ${o.state} but has a writable mapping on this node`,
      'run cowstack recover: it removes or reports that mapping',
    );
  }
  for (const k of CACHE_KINDS) await k.refuseMap?.(ctx, o);
  // Each cache kind asked for makes its cache ready (in the registry's order), then the
  // stack is planned on what the node has now.
  const prepared = new Map<CacheKind, object | undefined>();
  for (const k of kinds) {
    if (!k.prepareMap) continue;
    const p = await k.prepareMap(ctx, state, o, opts);
    if (p.observeAgain) {
      state = await observeForMap(ctx, opts);
      o = findClone(state, name);
    } else if (p.state) state = p.state;
    prepared.set(k, p.report);
  }
  const plan = planStack(state, o, ctx.scope, {
    caches: !modes.includes('none'),
    ...(opts.createdHere ? { createdHere: opts.createdHere } : {}),
  });
  await verifyExisting(ctx.runner, state, plan);
  const mode = o.state === 'live' ? 'rw' : 'ro';
  const result: CloneResult = {
    name,
    vg: ctx.vg,
    uuid: o.uuid,
    parent: state.repo.byUuid.get(o.parentUuid)?.name,
    device: plan.device,
    mode,
    action: 'none',
  };
  for (const k of CACHE_KINDS) Object.assign(result, k.mapResult?.(state, o, plan, prepared.get(k)));
  if (!plan.steps.length) return result;
  const journal = { op: 'map' as const, vg: ctx.vg, name, uuid: o.uuid };
  // Any layer's activation may be refused by the lock manager: name the one that was.
  await runGuarded(ctx, [beginStep(journal), ...plan.steps, endStep(journal)], plan.layers.map((l) => l.obj).reverse());
  return { ...result, action: 'mapped' };
}

const openDevice = (state: NodeState, o: CowObj) =>
  (['rw', 'ro'] as const)
    .map((role) => ({ role, dev: state.devices.get(dmName(role, o.uuid)) }))
    .find((d) => d.dev && d.dev.open > 0);

/**
 * Refuse when the clone's device is open, after giving udev's probe its chance to go
 * (lookAgainAfterUdev). Returns the state to plan from.
 */
async function refuseIfOpen(
  ctx: NodeSession,
  state: NodeState,
  o: CowObj,
  force: boolean | undefined,
  verb: string,
): Promise<NodeState> {
  if (force) return state;
  state = await lookAgainAfterUdev(
    ctx.runner,
    state,
    (s) => !!openDevice(s, findObj(s, o.name)),
    () => observeNode(ctx, { caches: 'auto' }),
  );
  o = findObj(state, o.name);
  if (!openDevice(state, o)) return state;
  {
    const { role, dev } = openDevice(state, o)!;
    if (dev) {
      const users = await whoHolds(ctx.runner, `/dev/mapper/${dev.name}`);
      const held = users.length ? `: ${users.join(', ')}` : '';
      throw refused(
        `${lvRef(o)} is in use on this node (${dev.name} open ${dev.open} time(s)${held}); refusing to ${verb}`,
        role === 'ro'
          ? 'its children are mapped here: unmap them first'
          : `stop the VM using it, or pass --force (its users will get I/O errors)`,
        { device: dev.name, open: dev.open, holders: users },
      );
    }
  }
  return state;
}

export async function unmapClone(ctx: NodeSession, name: string, opts: { force?: boolean } = {}): Promise<CloneResult> {
  validateLvName(name, 'name');
  // The plainest mapping (the clone's writable snapshot right on its image LV, no cache, not
  // open) is taken down from the node's devices alone; anything else is observed as usual.
  const devices = await dmsetup.listDevices(ctx.runner);
  const plain = plainMapping(ctx.vg, name, new Map(devices.map((d) => [d.name, d])));
  if (plain && plain.rw.open === 0) return unmapPlain(ctx, name, plain);
  const seen = await observeNode(ctx, { caches: 'auto', devices });
  let state = await refuseIfOpen(ctx, seen, findClone(seen, name), opts.force, 'unmap it');
  let o = findClone(state, name);
  const journal = { op: 'unmap' as const, vg: ctx.vg, name, uuid: o.uuid };
  // Everything in a write-back cache goes to the COW before the COW can be released.
  const wb = await withJournal(ctx, journal, state, o, () =>
    releaseWriteback(ctx, state, o, { flush: true, force: opts.force }),
  );
  if (wb.released && !ctx.dryRun) {
    state = await observeNode(ctx, { caches: 'auto' });
    o = findClone(state, name);
  }
  const { own, ancestors } = teardownParts(state, o, {
    removeTop: true,
    forceTop: opts.force,
    scope: ctx.scope,
    tables: await bottomTables(ctx.runner, state),
  });
  const flushed =
    wb.flushedBlocks !== undefined ? { flushedBlocks: wb.flushedBlocks, flushSeconds: wb.flushSeconds } : {};
  const result: CloneResult = {
    name,
    vg: ctx.vg,
    uuid: o.uuid,
    action: own.length || ancestors.length || wb.released ? 'unmapped' : 'none',
    ...flushed,
  };
  if (!own.length && !ancestors.length) {
    if (wb.released) await runPlan(ctx.runner, [endStep(journal)], ctx.observer);
    return result;
  }
  const folded: string[] = [];
  const merged = foldRelease(own, ancestors, folded, ctx.scope);
  if (merged) {
    await runGuarded(ctx, [beginStep(journal), ...merged, endStep(journal)]);
    return withWarnings(result, folded);
  }
  await runGuarded(ctx, [beginStep(journal), ...own]);
  return withWarnings(result, await releaseAncestors(ctx, ancestors, journal));
}

/**
 * Unmap a plain mapping (deviceGraph.ts): remove the writable snapshot, then deactivate the
 * COW and, when that snapshot was the only thing holding it open, the image, in one lvchange.
 */
async function unmapPlain(ctx: NodeSession, name: string, plain: PlainMapping): Promise<CloneResult> {
  const journal = { op: 'unmap' as const, vg: ctx.vg, name, uuid: plain.uuid };
  const lv = (lvName: string) => ({ vg: ctx.vg, name: lvName }) as CowObj;
  const own: Step[] = [
    { title: `unmap ${plain.rw.name} (${name})`, req: dmsetup.removeReq(plain.rw.name) },
    deactivateStep(lv(name), ctx.scope),
  ];
  const ancestors = plain.origin.open === 1 ? [deactivateStep(lv(plain.originLv), ctx.scope)] : [];
  const folded: string[] = [];
  const steps = foldRelease(own, ancestors, folded, ctx.scope) ?? own;
  await runGuarded(ctx, [beginStep(journal), ...steps, endStep(journal)]);
  return withWarnings({ name, vg: ctx.vg, uuid: plain.uuid, action: 'unmapped' }, folded);
}

/**
 * Release the ancestors an operation left unused, inside its journal entry (a kill on the way
 * leaves the entry, and recover finishes the release), then close the entry. Best-effort: the
 * operation's own steps are done, so a failure here (another operation on this node started
 * using an ancestor meanwhile) is a warning, not a failure of the operation; whatever is left
 * unused is released by the next operation's garbage collection or by recover.
 */
async function releaseAncestors(
  ctx: NodeSession,
  steps: Step[],
  journal?: Parameters<typeof endStep>[0],
): Promise<string[]> {
  const warnings: string[] = [];
  try {
    if (steps.length) await runGuarded(ctx, mergeDeactivations(steps, ctx.scope));
  } catch (e) {
    warnings.push(`${ANCESTORS_NOT_RELEASED}: ${(e as Error).message}`);
  }
  if (journal) await runGuarded(ctx, [endStep(journal)]);
  return warnings;
}

const withWarnings = (r: CloneResult, warnings: string[]): CloneResult => (warnings.length ? { ...r, warnings } : r);

/**
 * Run a write-back release inside the operation's journal entry: a crash while writing back
 * leaves the entry, and recover finishes the operation (re-attaching the cache if needed).
 * The entry stays open for the rest of the operation, whose own plan closes it.
 */
async function withJournal<T extends { released: boolean }>(
  ctx: NodeSession,
  journal: Parameters<typeof beginStep>[0],
  state: NodeState,
  o: CloneObj,
  fn: () => Promise<T>,
): Promise<T> {
  const has = state.devices.has(dmName('wb', o.uuid)) || Boolean(writebackLv(state.cache, o)) || Boolean(wbHostOf(o));
  if (!has) return { released: false } as T;
  await runGuarded(ctx, [beginStep(journal)]);
  const res = await fn();
  // Nothing was ours to release (another node's marker): close the entry again.
  if (!res.released) await runGuarded(ctx, [endStep(journal)]);
  return res;
}

// ---- commit (sync-back) --------------------------------------------------------------------

export async function commitClone(
  ctx: NodeSession,
  name: string,
  opts: { force?: boolean } = {},
): Promise<CloneResult> {
  let state = await observeNode(ctx, { caches: 'auto' });
  let o = findClone(state, name);
  const base: CloneResult = {
    name,
    vg: ctx.vg,
    uuid: o.uuid,
    parent: state.repo.byUuid.get(o.parentUuid)?.name,
    action: 'none',
  };
  if (o.state === 'committed') {
    if (liveTop(state, o))
      throw new CowstackError(EXIT.FAILED, `${lvRef(o)} is committed but still has a writable mapping on this node`, {
        hint: 'run cowstack recover',
      });
    // A commit interrupted after the state change leaves the COW active exclusively here, holding
    // its lock and its ancestors' mappings: release them (a committed clone is otherwise only
    // ever active shared). Recover finishes an interrupted commit through this path.
    const lvDev = state.devices.get(lvMapperName(o.vg, o.name));
    if (o.lv.activeLocally && o.lv.activeExclusively && !(lvDev && lvDev.open > 0)) {
      await runGuarded(ctx, [deactivateStep(o, ctx.scope)], o);
      const warnings: string[] = [];
      if (!ctx.dryRun)
        await collectGarbage(ctx, name).catch((e) =>
          warnings.push(`releasing unused ancestors failed: ${(e as Error).message}`),
        );
      return withWarnings({ ...base, action: 'committed' }, warnings);
    }
    // A commit killed while releasing the ancestors: finish that (only what nothing uses).
    const parent = state.repo.byUuid.get(o.parentUuid);
    if (parent && !o.lv.activeLocally && !state.devices.has(dmName('ro', o.uuid))) {
      const gc = teardownPlan(state, parent, {
        removeTop: false,
        scope: ctx.scope,
        tables: await bottomTables(ctx.runner, state),
      });
      return withWarnings(base, await releaseAncestors(ctx, gc));
    }
    return base;
  }
  if (o.state !== 'live')
    throw refused(
      `${lvRef(o)} is ${o.state}; only a live clone can be committed`,
      'its creation did not finish: run cowstack recover',
    );
  await refuseForeignWriteback(ctx, o, 'commit');
  state = await refuseIfOpen(ctx, state, o, opts.force, 'commit it');
  o = findClone(state, name);
  const wbJournal = { op: 'commit' as const, vg: ctx.vg, name, uuid: o.uuid };
  const held = o;
  const wb = await withJournal(ctx, wbJournal, state, o, () =>
    releaseWriteback(ctx, state, held, { flush: true, force: opts.force }),
  );
  if (wb.released && !ctx.dryRun) {
    state = await observeNode(ctx, { caches: 'auto' });
    o = findClone(state, name);
  }
  if (wb.flushedBlocks !== undefined)
    Object.assign(base, { flushedBlocks: wb.flushedBlocks, flushSeconds: wb.flushSeconds });
  const top = liveTop(state, o);
  const ref = lvRef(o);
  const steps: Step[] = [];
  if (top)
    steps.push({
      title: `unmap ${top.name} (${name})`,
      req: dmsetup.removeReq(top.name, Boolean(opts.force && top.open > 0)),
    });
  // The state change happens while this node holds the COW exclusively: no other node can
  // be writing it, and none can grab it between "unmapped" and "committed".
  if (!o.lv.activeLocally)
    steps.push(activateStep(o, 'exclusive', ctx.scope), stillLiveStep(o, 'commit it', ctx.scope));
  else if (!o.lv.activeExclusively)
    throw refused(`${ref} is active shared on this node; a live COW must be exclusive`, `cowstack deactivate ${ref}`);
  // One lvchange: LVM writes the permission and tags first, while this node still holds the
  // COW exclusively, and deactivates it after (checked with lvchange -vvvv on lvm2 2.03.16).
  steps.push({
    title: `mark ${ref} committed and read-only, and release it`,
    req: lvm.changeLvReq(
      ref,
      { activate: 'n', readOnly: true, tags: { del: [stateTag('live')], add: [stateTag('committed')] } },
      ctx.scope,
    ),
  });
  // The ancestors this commit leaves unused are released inside its journal entry, from the
  // same observation: a kill after the state change leaves the entry, and recover finishes.
  const { ancestors } = teardownParts(state, o, {
    removeTop: true,
    forceTop: opts.force,
    scope: ctx.scope,
    tables: await bottomTables(ctx.runner, state),
  });
  const journal = { op: 'commit' as const, vg: ctx.vg, name, uuid: o.uuid };
  await runGuarded(ctx, [beginStep(journal), ...steps], o);
  return withWarnings({ ...base, action: 'committed' }, await releaseAncestors(ctx, ancestors, journal));
}

// ---- discard / rm / grow ---------------------------------------------------------------------

function refuseChildren(state: NodeState, o: CowObj): void {
  const kids = state.repo.childrenOf(o);
  if (kids.length) {
    throw refused(
      `${lvRef(o)} has ${kids.length} child clone(s): ${kids.map((k) => k.name).join(', ')}`,
      'remove or flatten the children first; a parent is never removed under them',
      { children: kids.map((k) => k.name) },
    );
  }
}

export async function discardClone(
  ctx: NodeSession,
  name: string,
  opts: { force?: boolean; mustBeUnmapped?: boolean; seen?: NodeState } = {},
): Promise<CloneResult> {
  let state = opts.seen ?? (await observeNode(ctx, { caches: 'auto' }));
  const o = state.repo.byName.get(name);
  if (!o) {
    validateLvName(name, 'clone name');
    return { name, vg: ctx.vg, action: 'none' }; // already gone: idempotent
  }
  if (o.kind !== 'clone') throw usageError(`${name} is an image, not a clone`, `use cowstack image rm ${name}`);
  refuseChildren(state, o);
  if (opts.mustBeUnmapped && (state.devices.has(dmName('rw', o.uuid)) || state.devices.has(dmName('ro', o.uuid)))) {
    throw refused(
      `${lvRef(o)} is mapped on this node`,
      `unmap it first (cowstack clone unmap ${name}) or use cowstack clone discard ${name}`,
    );
  }
  state = await refuseIfOpen(ctx, state, o, opts.force, 'discard it');
  // Nothing goes back on discard: the write-back cache is dropped, not flushed.
  const dropped = await releaseWriteback(ctx, state, o, { flush: false, force: opts.force });
  if (dropped.released && !ctx.dryRun) state = await observeNode(ctx, { caches: 'auto' });
  const own: Step[] = [];
  for (const role of ['rw', 'ro'] as const) {
    const dev = state.devices.get(dmName(role, o.uuid));
    if (dev)
      own.push({
        title: `unmap ${dev.name} (${name})`,
        req: dmsetup.removeReq(dev.name, Boolean(opts.force && dev.open > 0)),
      });
  }
  if (o.lv.activeLocally) own.push(deactivateStep(o, ctx.scope));
  const journal = { op: 'discard' as const, vg: ctx.vg, name, uuid: o.uuid };
  const remove: Step = {
    title: `remove COW ${lvRef(o)}`,
    req: lvm.removeLvReq(lvRef(o), ctx.scope),
  };
  const { ancestors } = teardownParts(state, o, {
    removeTop: true,
    forceTop: opts.force,
    scope: ctx.scope,
    tables: await bottomTables(ctx.runner, state),
  });
  // The COW's own deactivation and the ancestors' ride in one lvchange when they can.
  const folded: string[] = [];
  const merged = foldRelease(own, ancestors, folded, ctx.scope);
  let warnings = folded;
  if (merged) await runGuarded(ctx, [beginStep(journal), ...merged, remove, endStep(journal)], o);
  else {
    await runGuarded(ctx, [beginStep(journal), ...own, remove], o);
    warnings = await releaseAncestors(ctx, ancestors, journal);
  }
  return withWarnings(
    { name, vg: ctx.vg, uuid: o.uuid, action: opts.mustBeUnmapped ? 'removed' : 'discarded' },
    warnings,
  );
}

export async function growClone(ctx: NodeSession, name: string, sizeText: string): Promise<CloneResult> {
  const state = await observeNode(ctx);
  const o = findClone(state, name);
  if (o.state !== 'live') throw refused(`${lvRef(o)} is ${o.state}; only a live clone's COW can grow`);
  const size = roundUp(parseSize(sizeText, 'COW size'), EXTENT);
  if (size <= o.sizeBytes) return { name, vg: ctx.vg, uuid: o.uuid, cowBytes: o.sizeBytes, action: 'none' };
  // dm-snapshot reads the COW device's size at every allocation, so a larger LV is used at once.
  await runGuarded(
    ctx,
    [
      {
        title: `grow COW ${lvRef(o)} to ${formatSize(size)}`,
        req: lvm.extendLvReq(lvRef(o), size, ctx.scope),
      },
    ],
    o,
  );
  return { name, vg: ctx.vg, uuid: o.uuid, cowBytes: size, action: 'grown' };
}

export type { CloneObj };
