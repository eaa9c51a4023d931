/**
 * Building and tearing down the device stack of a clone on one node:
 *   image LV (shared) or its verified local replica -> ro snapshot per committed ancestor (shared by every child on the
 *   node) -> rw snapshot over the live clone's COW (exclusive) = the VM's disk.
 * Plans are computed from one observation; existing devices are verified, never replaced.
 * Caches enter the stack through their layers (src/core/cache/kind.ts): the planner names no kind.
 */
import { CommandError, CowstackError, EXIT, refused } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { dmName, dmPath, dmUuid, lvMapperName, lvMapperPath, parseDmUuid, sameUuid, type DmRole } from './dmNames.js';
import type { BottomCacheNames } from './cache/kind.js';
import { CACHE_LAYERS } from './cache/layers.js';
import { fromLv, isFrozen, type CloneObj, type CowObj } from './metadata.js';
import type { NodeState } from './observe.js';
import type { Step } from './plan.js';
import { activateStep, deactivateStep, lvRef } from './lvSteps.js';

// Moved to lvSteps.ts (src/core/cache needs them, and the planner needs the cache kinds); still exported here.
export { activateStep, deactivateStep, lvRef };

const mapperName = (o: CowObj): string => lvMapperName(o.vg, o.name);

/** Consecutive deactivations of repository LVs become one lvchange -an (LVM takes each in turn). */
export function mergeDeactivations(steps: Step[], scope: lvm.LvmScope = {}): Step[] {
  const out: Step[] = [];
  let run: string[] = [];
  const flush = () => {
    if (run.length === 1)
      out.push({ title: `deactivate ${run[0]}`, req: lvm.deactivateReq(run[0]!, scope), deactivates: run[0] });
    else if (run.length) out.push({ title: `deactivate ${run.join(' ')}`, req: lvm.deactivateReq(run, scope) });
    run = [];
  };
  for (const s of steps) {
    if (s.deactivates && !s.undo?.length) run.push(s.deactivates);
    else {
      flush();
      out.push(s);
    }
  }
  flush();
  return out;
}

/** The warning when the best-effort release of unused ancestors fails (folded or on its own). */
export const ANCESTORS_NOT_RELEASED =
  'releasing unused ancestors on this node failed (another operation may be using them now)';

/**
 * One lvchange -an for the target's LV and the ancestors an operation releases after it, when
 * the ancestors' part is nothing but deactivations (no device of theirs to remove first): the
 * target's deactivation moves to the end of its plan, which is safe because nothing of the
 * target's is used by what is removed after it. LVM deactivates each LV it can; a failure
 * naming only ancestors (another operation started using one) becomes a warning, as when the
 * ancestors are released on their own; any other failure fails the target's plan.
 * Returns undefined when the parts do not have that shape.
 */
export function foldRelease(
  own: Step[],
  ancestors: Step[],
  warnings: string[],
  scope: lvm.LvmScope = {},
): Step[] | undefined {
  const last = own.at(-1);
  if (!last?.deactivates || !ancestors.length || !ancestors.every((s) => s.deactivates)) return undefined;
  const refs = [last, ...ancestors].map((s) => s.deactivates!);
  const names = (text: string, ref: string) =>
    new RegExp(`(^|[^A-Za-z0-9+_.-])${ref.replace(/[.+]/g, '\\$&')}($|[^A-Za-z0-9+_.-])`, 'm').test(text);
  const merged: Step = {
    title: `deactivate ${refs.join(' ')}`,
    req: { ...lvm.deactivateReq(refs, scope), allowFailure: true },
    check: (r) => {
      if (r.exitCode === 0) return;
      const ancestorsOnly = !names(r.stderr, refs[0]!) && refs.slice(1).some((ref) => names(r.stderr, ref));
      if (!ancestorsOnly) throw new CommandError('this node', r.argv, r.exitCode, r.stderr);
      warnings.push(`${ANCESTORS_NOT_RELEASED}: ${r.stderr.trim()}`);
    },
  };
  return [...own.slice(0, -1), merged];
}

/**
 * Decisions made from an observation taken before the COW's lock are made again once this
 * node holds it: another node may have committed (or removed) the clone in between, and
 * its tags and permission change only under that lock. One lockless `lvs` of the LV;
 * refused (the plan is undone, so the COW is released again) unless the clone is still
 * live, writable and the same LV. Placed right after the step that takes or holds the lock.
 */
export const stillLiveStep = (
  o: CowObj,
  verb: string,
  scope: lvm.LvmScope = {},
  seen?: (now: CloneObj) => void,
): Step => ({
  title: `check ${lvRef(o)} is still live and writable under its lock`,
  req: lvm.lvsRequest(lvRef(o), scope),
  check: (r) => {
    const lv = r.exitCode === 0 ? lvm.parseLvs(r.stdout)[0] : undefined;
    const now = lv ? fromLv(lv) : undefined;
    if (now?.kind === 'clone' && now.state === 'live' && !lv!.readOnly && sameUuid(now.uuid, o.uuid)) {
      seen?.(now);
      return;
    }
    const what =
      !now || !sameUuid(now.uuid, o.uuid)
        ? 'was removed'
        : lv!.readOnly && now.state === 'live'
          ? 'is read-only'
          : `is ${now.state}`;
    throw refused(
      `${lvRef(o)} ${what} (changed by another operation while this one waited for its lock); refusing to ${verb}`,
      now?.state === 'committed'
        ? `a committed clone is mapped read-only: run cowstack clone ${verb.split(' ')[0]} ${o.name} again`
        : undefined,
      { lv: lvRef(o), state: now?.state ?? 'removed', readOnly: lv?.readOnly },
    );
  },
});

/** On the image layer: the names of a cache device standing in for the image LV. */
export interface StackLayer extends BottomCacheNames {
  obj: CowObj;
  /** The device this layer presents (LV for the image, dm snapshot for clones). */
  device: string;
  role?: DmRole;
}

/** The names of the cache device the stack stands on instead of the image LV, if one does. */
export interface StackPlan extends BottomCacheNames {
  steps: Step[];
  layers: StackLayer[];
  device: string;
  /** Existing devices that must be checked against the expected table before use. */
  verify: Array<{
    name: string;
    table: string;
    origin: CowObj;
    cow: CowObj;
    originDevice: string;
    cowDevice?: string;
    altOriginDevices?: string[];
  }>;
  sectors: number;
  /** The top device when this plan creates it: its name and table (a migration loads that table instead). */
  top?: { name: string; table: string };
}

/**
 * The plan that makes `target` usable on this node: read-only (every layer frozen) or
 * read-write (target is a live clone: exclusive COW + rw snapshot on top).
 */
export interface StackOptions {
  /** false: do not stand on a cache device (replica, lazy cache) even when there is one (`--cache none`). */
  caches?: boolean;
  /**
   * The live clone this operation created here with lvcreate -aey and marked live itself:
   * held exclusively since it was made, so nothing can have grown or committed it since, and
   * neither a refresh nor a re-read is needed before its writable device.
   */
  createdHere?: string;
  /**
   * Hears the live clone as re-read under its lock (stillLiveStep), when this plan takes that
   * lock: a live migration's acquire reads the source's hand-over record there.
   */
  underLock?: (now: CloneObj) => void;
}

export function planStack(
  state: NodeState,
  target: CowObj,
  scope: lvm.LvmScope = {},
  opts: StackOptions = {},
): StackPlan {
  const chain = state.repo.chain(target).reverse(); // image first
  const image = chain[0]!;
  if (image.kind !== 'image' || image.state !== 'sealed') {
    throw refused(
      `${lvRef(image)} is not a sealed image; clones may only stand on sealed images`,
      `seal it first: cowstack image seal ${image.name}`,
    );
  }
  const sectors = image.sizeBytes / 512;
  const steps: Step[] = [];
  const layers: StackLayer[] = [];
  const verify: StackPlan['verify'] = [];
  let top: StackPlan['top'];
  // A cache device holding the image's bytes on this node stands in for the image LV at the
  // bottom (the first cache kind that has one ready): the node then reads less, or nothing,
  // from the repository for this stack.
  const bottom =
    opts.caches === false ? undefined : CACHE_LAYERS.map((l) => l.bottom?.(state, image)).find((b) => b !== undefined);
  const imageDevice = lvMapperPath(image.vg, image.name);
  let origin = bottom?.device ?? imageDevice;
  // A bottom snapshot built earlier may stand on any of them: all hold the same bytes.
  const altBottom = [imageDevice, ...CACHE_LAYERS.flatMap((l) => l.sameBytes?.(state, image) ?? [])].filter(
    (d) => d !== origin,
  );
  if (!bottom && !image.lv.activeLocally) steps.push(activateStep(image, 'shared', scope));
  layers.push({ obj: image, device: origin, ...bottom?.names });

  for (const o of chain.slice(1)) {
    if (o.kind !== 'clone')
      throw new CowstackError(EXIT.FAILED, `${lvRef(o)} is an image inside a chain`, { hint: 'cowstack recover' });
    const live = o === target && o.state === 'live';
    if (!live && !isFrozen(o)) {
      throw refused(
        `${lvRef(o)} is ${o.state}; only committed clones can be parents`,
        o.state === 'initializing' ? 'its creation did not finish: run cowstack recover' : undefined,
      );
    }
    if (o.state === 'initializing')
      throw refused(
        `${lvRef(o)} is still initializing`,
        'its creation did not finish: run cowstack recover, or create it again',
      );
    const role: DmRole = live ? 'rw' : 'ro';
    if (live) {
      // Never a writable device over a read-only LV: a 6.1 kernel only warns and writes anyway.
      if (o.lv.readOnly)
        throw refused(
          `${lvRef(o)} is marked live but its LV is read-only; refusing to map it writable`,
          'run cowstack recover, then look at its tags: lvs -o lv_tags,lv_permissions',
        );
      if (o.lv.activeLocally && !o.lv.activeExclusively) {
        throw refused(
          `${lvRef(o)} is active shared on this node; a live COW must be exclusive`,
          `deactivate it first: cowstack deactivate ${lvRef(o)}`,
        );
      }
      // Already active here: refresh (another node may have grown it) unless it is already
      // mapped, in which case the mapping is verified below and nothing runs at all.
      if (!o.lv.activeLocally)
        steps.push(activateStep(o, 'exclusive', scope), stillLiveStep(o, 'map it writable', scope, opts.underLock));
      else if (!state.devices.has(dmName('rw', o.uuid)) && o.uuid !== opts.createdHere) {
        steps.push(
          { title: `refresh ${lvRef(o)}`, req: lvm.refreshReq(lvRef(o), scope) },
          stillLiveStep(o, 'map it writable', scope, opts.underLock),
        );
      }
    } else if (!o.lv.activeLocally) {
      steps.push(activateStep(o, 'shared', scope));
    }
    const name = dmName(role, o.uuid);
    // A live clone with a cache for its COW on this node (write-back) gets it between the
    // snapshot and the COW.
    let cowDevice = lvMapperPath(o.vg, o.name);
    if (live) {
      const cow = CACHE_LAYERS.map((l) => l.cow?.(state, o, state.devices.has(name))).find((c) => c !== undefined);
      if (cow) {
        steps.push(...cow.steps);
        cowDevice = cow.device;
      }
    }
    const table = dmsetup.snapshotTable(sectors, origin, cowDevice, live ? 'PO' : 'P', o.chunkSectors);
    if (state.devices.has(name)) {
      // A device built before the replica existed stands on the image LV: same bytes, also fine.
      verify.push({
        name,
        table,
        origin: layers[layers.length - 1]!.obj,
        cow: o,
        originDevice: origin,
        cowDevice,
        ...(layers.length === 1 && altBottom.length ? { altOriginDevices: altBottom } : {}),
      });
    } else {
      if (o === target) top = { name, table };
      steps.push({
        title: `map ${live ? 'writable' : 'read-only'} snapshot ${name} (${o.name})`,
        req: dmsetup.createReq(name, dmUuid(role, o.uuid), table, { readOnly: !live }),
        undo: [dmsetup.removeReq(name)],
      });
    }
    origin = dmPath(role, o.uuid);
    layers.push({ obj: o, device: origin, role });
  }
  // The bottom cache's own steps (activate it, mark it used) go first, if the kind wants them.
  if (bottom) steps.unshift(...bottom.steps(steps.length > 0));
  return { steps, layers, device: origin, verify, sectors, ...(top ? { top } : {}), ...bottom?.names };
}

/**
 * An existing device must be exactly the one we would build: same target, length, mode,
 * chunk, and the same origin and COW devices (by major:minor). Anything else is refused.
 */
export async function verifyExisting(runner: Runner, state: NodeState, plan: StackPlan): Promise<void> {
  for (const v of plan.verify) {
    const [line] = await dmsetup.table(runner, v.name);
    const want = dmsetup.parseDmLines(v.table)[0]!;
    const devNum = (path: string) => {
      const dev = state.devices.get(path.slice('/dev/mapper/'.length));
      return dev ? `${dev.major}:${dev.minor}` : undefined;
    };
    const originNum = devNum(v.originDevice);
    const altNums = (v.altOriginDevices ?? []).map(devNum).filter((n): n is string => n !== undefined);
    const cowNum = devNum(v.cowDevice ?? lvMapperPath(v.cow.vg, v.cow.name));
    const ok =
      line &&
      line.target === 'snapshot' &&
      line.length === want.length &&
      line.args[2] === want.args[2] &&
      line.args[3] === want.args[3] &&
      (!originNum || line.args[0] === originNum || altNums.includes(line.args[0]!)) &&
      (!cowNum || line.args[1] === cowNum);
    if (!ok) {
      throw new CowstackError(
        EXIT.FAILED,
        `device ${v.name} exists but its table is not the one cowstack expects for ${v.cow.name}`,
        {
          hint:
            'inspect it with dmsetup table; cowstack recover reports such devices. cowstack never replaces a ' +
            'table in use.',
          data: { device: v.name, found: line, expected: v.table },
        },
      );
    }
  }
}

type TeardownOptions = {
  removeTop: boolean;
  forceTop?: boolean;
  scope?: lvm.LvmScope;
  tables?: Map<string, dmsetup.DmLine[]>;
};

/** How many openers each device has, and what each of our devices opens (for GC simulation). */
export function teardownPlan(state: NodeState, target: CowObj, opts: TeardownOptions): Step[] {
  const { own, ancestors } = teardownParts(state, target, opts);
  return mergeDeactivations([...own, ...ancestors], opts.scope);
}

/**
 * The same teardown in two parts: the target's own devices and LV, then the ancestors that
 * nothing uses any more (operations run the second part best-effort, inside their journal).
 */
export function teardownParts(
  state: NodeState,
  target: CowObj,
  opts: TeardownOptions,
): { own: Step[]; ancestors: Step[] } {
  const scope = opts.scope ?? {};
  const open = new Map([...state.devices].map(([n, d]) => [n, d.open]));
  const forced = new Set<string>();
  if (opts.forceTop) for (const role of ['rw', 'ro'] as const) forced.add(dmName(role, target.uuid));
  const chain = state.repo.chain(target); // target first
  const steps: Step[] = [];
  // Steps before this index are the target's own: set when the loop leaves the target (a
  // return before that, because something still uses it, leaves nothing but its own steps).
  let ownEnd: number | undefined;
  const parts = () => {
    const end = ownEnd ?? steps.length;
    return { own: steps.slice(0, end), ancestors: steps.slice(end) };
  };
  const release = (name: string) => open.set(name, Math.max(0, (open.get(name) ?? 0) - 1));
  const originName = (i: number): string => {
    const parent = chain[i + 1]!;
    return parent.kind === 'image' ? mapperName(parent) : dmName('ro', parent.uuid);
  };
  for (const [i, o] of chain.entries()) {
    if (o.kind === 'clone') {
      const names = i === 0 && opts.removeTop ? [dmName('rw', o.uuid), dmName('ro', o.uuid)] : [dmName('ro', o.uuid)];
      for (const name of names) {
        if (!state.devices.has(name)) continue;
        if ((open.get(name) ?? 0) > 0 && !forced.has(name)) return parts(); // still used: so is everything below it
        steps.push({
          title: `unmap ${name} (${o.name})`,
          req: dmsetup.removeReq(name, forced.has(name) && (open.get(name) ?? 0) > 0),
        });
        open.delete(name);
        release(mapperName(o));
        // Without the tables, a snapshot may stand on a cache device of the image (a replica)
        // or on the image LV (mapped before the replica existed): assume the image LV is still
        // used rather than deactivate it under another clone. GC releases it once nothing opens it.
        const parent = chain[i + 1]!;
        const bottom = parent.kind === 'image' ? bottomOrigin(state, name, opts.tables) : undefined;
        if (bottom) release(bottom);
        else if (!(parent.kind === 'image' && CACHE_LAYERS.some((l) => l.ambiguousBottom?.(state, parent))))
          release(originName(i));
      }
    }
    // A cache device over the image LV (lazy) goes when nothing stands on it any more
    // (detached cleanly, so its mappings persist), before the image LV it holds open is released.
    const holders = o.kind === 'image' ? CACHE_LAYERS.map((l) => l.overImage?.(state, o)) : [];
    for (const holder of holders) {
      if (!holder) continue;
      if ((open.get(holder.device) ?? 0) > 0) return parts();
      steps.push(...holder.detach());
      open.delete(holder.device);
      release(mapperName(o));
    }
    if (o.lv.activeLocally) {
      if ((open.get(mapperName(o)) ?? 0) > 0) return parts();
      steps.push(deactivateStep(o, scope));
    }
    if (i === 0) ownEnd = steps.length;
  }
  return parts();
}

/**
 * The device a bottom snapshot stands on, by its table's origin major:minor. The tables are
 * read only when the node has a cache device under bottom snapshots (bottomTables: a snapshot
 * may then stand on it, on the image LV, or on a replica). Without them: unknown (the
 * caller's conservative default applies: the cache device is kept up, never removed under a
 * snapshot).
 */
function bottomOrigin(state: NodeState, snapName: string, tables?: Map<string, dmsetup.DmLine[]>): string | undefined {
  const line = tables?.get(snapName)?.[0];
  if (!line) return undefined;
  const num = line.args[0];
  return [...state.devices.values()].find((d) => `${d.major}:${d.minor}` === num)?.name;
}

/** Every device's table, when a cache device under bottom snapshots is up (teardownPlan needs their origins). */
export async function bottomTables(
  runner: Runner,
  state: NodeState,
): Promise<Map<string, dmsetup.DmLine[]> | undefined> {
  const roles = CACHE_LAYERS.map((l) => l.tableRole).filter((r) => r !== undefined);
  const up = [...state.devices.values()].some((d) => {
    const role = parseDmUuid(d.uuid)?.role;
    return role !== undefined && roles.includes(role);
  });
  if (!up) return undefined;
  return dmsetup.tableAll(runner);
}

/** Who holds a device open (dm holders), for refusal messages. */
export function describeOpen(state: NodeState, name: string): string {
  const d = state.devices.get(name);
  return d ? `open ${d.open} time(s)` : 'not mapped';
}

export function liveTop(state: NodeState, clone: CloneObj) {
  return state.devices.get(dmName('rw', clone.uuid));
}
