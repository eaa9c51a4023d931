/**
 * Live migration of a running VM's disk: the hand-over of a live clone's writable COW from the
 * host that runs the VM (the source) to the host the VM moves to (the destination), while the
 * VM is paused between them. The cluster lock keeps the COW's snapshot table loaded on one
 * host at most at every instant (a dm-snapshot keeps its exception table in the kernel that
 * loaded it). The steps, each idempotent and journalled:
 *   prepare  (destination, before the migration) the ancestors' read-only stack, and the VM
 *            disk's device under its final name and size with an `error` table: the incoming
 *            qemu opens it and probes it (EIO is tolerated; a suspended device would hang it).
 *   release  (source, after the migration; its qemu has closed the disk) any write-back cache
 *            drained and removed, the snapshot's status recorded in a tag on the COW (the
 *            hand-over record), the writable snapshot removed, the COW deactivated.
 *   acquire  (destination) the COW taken exclusively (retried while the source holds it), the
 *            real snapshot table loaded into the placeholder, its status compared with the record.
 *   abort    (either side) the placeholder removed and unused ancestors released; a host that
 *            holds the disk (the VM runs there) is left alone.
 * The stack is built by the same planner as `clone map` (stack.ts): only the top device differs.
 */
import { CowstackError, EXIT, notFound, refused, usageError } from '../exec/errors.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { wbHostOf } from './cache/meta.js';
import { refuseForeignWriteback, releaseWriteback, writebackLv } from './cache/writeback.js';
import { observeForMap, unmapClone } from './clones.js';
import { dmName, dmPath, dmUuid } from './dmNames.js';
import { runGuarded } from './executor.js';
import { lookAgainAfterUdev, whoHolds } from './holders.js';
import { beginStep, endStep } from './journal.js';
import { handoverTag, handoverTags, type CloneObj, type Handover } from './metadata.js';
import type { NodeSession } from './node.js';
import { collectGarbage } from './nodeGc.js';
import { findClone, type NodeState, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { lvRef, planStack, verifyExisting } from './stack.js';
import { validateLvName } from './validate.js';

export type MigrateStep = 'prepare' | 'release' | 'acquire' | 'abort';

export interface MigrateResult {
  name: string;
  vg: string;
  uuid?: string;
  step: MigrateStep;
  action: 'prepared' | 'released' | 'acquired' | 'aborted' | 'none';
  /** The VM disk's device (its final name on both hosts). */
  device?: string;
  /** release: the record written; acquire: the record compared (absent: the source never released). */
  handover?: Handover;
  /** acquire: how many times the COW's lock was asked for. */
  attempts?: number;
  /** release: blocks written back from a write-back cache before the COW was released. */
  flushedBlocks?: number;
  flushSeconds?: number;
  warnings?: string[];
}

/** What this host has under the VM disk's name: nothing, the migration placeholder, or the real snapshot. */
type Top = { kind: 'none' } | { kind: 'placeholder' | 'snapshot'; dev: dmsetup.DmDevice; line: dmsetup.DmLine };

async function topOf(ctx: NodeSession, state: NodeState, o: CloneObj): Promise<Top> {
  const dev = state.devices.get(dmName('rw', o.uuid));
  if (!dev) return { kind: 'none' };
  const [line] = await dmsetup.table(ctx.runner, dev.name);
  if (line?.target === 'error' || line?.target === 'snapshot')
    return { kind: line.target === 'error' ? 'placeholder' : 'snapshot', dev, line };
  throw new CowstackError(
    EXIT.FAILED,
    `device ${dev.name} exists but its table is neither ${o.name}'s snapshot nor a migration placeholder`,
    {
      hint: 'inspect it with dmsetup table; cowstack never replaces a table it did not make',
      data: { device: dev.name, found: line },
    },
  );
}

function liveClone(state: NodeState, name: string): CloneObj {
  const o = findClone(state, name);
  if (o.state === 'live') return o;
  throw refused(
    `${lvRef(o)} is ${o.state}: only a live clone's disk moves with its VM`,
    o.state === 'committed'
      ? `a committed clone is mapped read-only on any host: cowstack clone map ${name}`
      : 'its creation did not finish: run cowstack recover',
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const withWarnings = (r: MigrateResult, w: string[]): MigrateResult => (w.length ? { ...r, warnings: w } : r);

// ---- prepare (destination) ------------------------------------------------------------------

export async function prepareMigration(ctx: NodeSession, name: string): Promise<MigrateResult> {
  validateLvName(name, 'clone name');
  const state = await observeForMap(ctx);
  const o = liveClone(state, name);
  const rw = dmName('rw', o.uuid);
  const base = { name, vg: ctx.vg, uuid: o.uuid, step: 'prepare' as const, device: dmPath('rw', o.uuid) };
  const top = await topOf(ctx, state, o);
  if (top.kind === 'snapshot')
    throw refused(
      `${lvRef(o)} is mapped writable on this host (${rw}): its VM runs here`,
      'prepare runs on the destination host of a migration; there is nothing to prepare on the source',
    );
  // The read-only stack of the parent, exactly as clone map builds it (caches included).
  const parent = state.repo.chain(o)[1]!;
  const stack = planStack(state, parent, ctx.scope);
  await verifyExisting(ctx.runner, state, stack);
  const steps = [...stack.steps];
  if (top.kind === 'placeholder' && top.line.length !== stack.sectors)
    throw new CowstackError(
      EXIT.FAILED,
      `placeholder ${rw} has ${top.line.length} sectors, ${lvRef(o)}'s disk has ${stack.sectors}`,
      { hint: `remove it (cowstack clone migrate abort ${name}) and prepare again` },
    );
  if (top.kind === 'none')
    steps.push({
      title: `create the placeholder ${rw} for ${lvRef(o)} (EIO until acquire)`,
      req: dmsetup.createReq(rw, dmUuid('rw', o.uuid), dmsetup.errorTable(stack.sectors)),
      undo: [dmsetup.removeReq(rw)],
    });
  if (!steps.length) return { ...base, action: 'none' };
  const journal = { op: 'migrate-prepare' as const, vg: ctx.vg, name, uuid: o.uuid };
  const layers = stack.layers.map((l) => l.obj).reverse();
  await runGuarded(ctx, [beginStep(journal), ...steps, endStep(journal)], layers);
  return { ...base, action: 'prepared' };
}

// ---- release (source) -----------------------------------------------------------------------

/**
 * Refuse while the VM disk is open here (its qemu has not let go: the migration did not
 * complete), after giving udev's probe of a just-closed device its chance to go.
 */
async function refuseOpen(ctx: NodeSession, state: NodeState, o: CloneObj): Promise<NodeState> {
  const rw = dmName('rw', o.uuid);
  const open = (s: NodeState) => (s.devices.get(rw)?.open ?? 0) > 0;
  state = await lookAgainAfterUdev(ctx.runner, state, open, () => observeNode(ctx, { caches: 'auto' }));
  if (!open(state)) return state;
  const users = await whoHolds(ctx.runner, dmPath('rw', o.uuid));
  throw refused(
    `${lvRef(o)}'s disk ${rw} is open on this host (${users.join(', ') || 'by a process'}); refusing to release it`,
    'release runs once the migration completed: the source qemu then closes its disks (with --suspend, ' +
      'the destination stays paused). If the migration failed, the VM keeps running here: abort on the destination',
    { device: rw, open: state.devices.get(rw)?.open, holders: users },
  );
}

async function snapshotStatus(ctx: NodeSession, device: string): Promise<Handover> {
  const [line] = await dmsetup.status(ctx.runner, device);
  const s = line?.target === 'snapshot' ? dmsetup.parseSnapshotStatus(line.args) : undefined;
  if (s?.state === 'active') return { allocatedSectors: s.allocatedSectors, metadataSectors: s.metadataSectors };
  throw new CowstackError(EXIT.FAILED, `${device} is not a working snapshot (${s?.state ?? 'no snapshot status'})`, {
    hint: 'an invalid or overflowed COW cannot be handed over; keep the VM where it is and inspect the clone',
  });
}

export async function releaseMigration(
  ctx: NodeSession,
  name: string,
  opts: { record?: string } = {},
): Promise<MigrateResult> {
  validateLvName(name, 'clone name');
  let state = await observeNode(ctx, { caches: 'auto' });
  let o = liveClone(state, name);
  const base = { name, vg: ctx.vg, uuid: o.uuid, step: 'release' as const };
  const top = await topOf(ctx, state, o);
  if (top.kind === 'placeholder')
    throw refused(
      `${lvRef(o)} has only the migration placeholder on this host: this is the destination`,
      `release runs on the source; here the hand-over ends with: cowstack clone migrate acquire ${name}`,
    );
  const journal = { op: 'migrate-release' as const, vg: ctx.vg, name, uuid: o.uuid };
  const hasWriteback = () =>
    state.devices.has(dmName('wb', o.uuid)) || Boolean(writebackLv(state.cache, o)) || Boolean(wbHostOf(o));
  let record = opts.record;
  if (top.kind === 'none') {
    if (!o.lv.activeLocally) {
      // Released already (or never here): what is left is the ancestors nothing uses any more.
      if (!ctx.dryRun) await collectGarbage(ctx, name);
      return { ...base, action: 'none' };
    }
    // The COW is still held here with no snapshot over it: a release cut short (recover passes
    // the record its journal entry kept).
    if (!record)
      throw refused(
        `${lvRef(o)} is active on this host with no writable snapshot over it (an interrupted release?)`,
        'run cowstack recover: it finishes an interrupted release from its journal',
      );
  } else {
    state = await refuseOpen(ctx, state, o);
    record = handoverTag(await snapshotStatus(ctx, top.dev.name));
  }
  // Begun without an undo: a failure from here on leaves the entry in flight and recover
  // finishes the release with the record it keeps (the snapshot, once removed, cannot be read).
  const { undo: _undo, undoRecord: _undoRecord, ...begin } = beginStep({ ...journal, handover: record });
  await runGuarded(ctx, [begin]);
  let flushed = {};
  if (hasWriteback()) {
    // Every dirty block goes to the COW before the COW can be released (the snapshot goes first).
    const wb = await releaseWriteback(ctx, state, o, { flush: true });
    if (wb.flushedBlocks !== undefined) flushed = { flushedBlocks: wb.flushedBlocks, flushSeconds: wb.flushSeconds };
    if (wb.released && !ctx.dryRun) {
      state = await observeNode(ctx, { caches: 'auto' });
      o = findClone(state, name);
    }
  }
  const steps: Step[] = [];
  const rw = state.devices.get(dmName('rw', o.uuid));
  if (rw) steps.push({ title: `unmap ${rw.name} (${name})`, req: dmsetup.removeReq(rw.name) });
  // One lvchange writes the record while this host still holds the COW and then releases it:
  // a destination that gets the lock finds the record there.
  const stale = handoverTags(o.tags).filter((t) => t !== record);
  const add = o.tags.includes(record) ? [] : [record];
  steps.push({
    title: `record the hand-over of ${lvRef(o)} (${record}) and release it`,
    req: lvm.changeLvReq(lvRef(o), { activate: 'n', tags: { add, del: stale } }, ctx.scope),
  });
  await runGuarded(ctx, [...steps, endStep(journal)], o);
  const [allocated, metadata] = record.split(':').slice(-2).map(Number);
  return {
    ...base,
    action: 'released',
    handover: { allocatedSectors: allocated!, metadataSectors: metadata! },
    ...flushed,
  };
}

// ---- acquire (destination) ------------------------------------------------------------------

export interface AcquireOptions {
  /** How long to keep asking for the COW's lock while another host holds it (seconds; 0: once). */
  waitSeconds?: number;
  /** Pause between two attempts (seconds). */
  pauseSeconds?: number;
}

export async function acquireMigration(
  ctx: NodeSession,
  name: string,
  opts: AcquireOptions = {},
): Promise<MigrateResult> {
  validateLvName(name, 'clone name');
  const waitMs = (opts.waitSeconds ?? 10) * 1000;
  const pauseMs = (opts.pauseSeconds ?? 2) * 1000;
  if (!(waitMs >= 0) || !(pauseMs > 0))
    throw usageError(`--wait ${opts.waitSeconds} / pause ${opts.pauseSeconds}: need a wait >= 0 and a pause > 0`);
  const deadline = Date.now() + waitMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return { ...(await acquireOnce(ctx, name)), attempts: attempt };
    } catch (e) {
      const conflict = e instanceof CowstackError && e.exitCode === EXIT.LOCK_CONFLICT;
      if (!conflict || ctx.dryRun || Date.now() + pauseMs > deadline) {
        if (conflict) Object.assign(e.data ?? {}, { attempts: attempt });
        throw e;
      }
      await sleep(pauseMs);
    }
  }
}

const mismatch = (device: string, found: Handover, record: Handover) =>
  refused(
    `${device} loaded with ${found.allocatedSectors}:${found.metadataSectors} allocated:metadata sectors, ` +
      `but the source recorded ${record.allocatedSectors}:${record.metadataSectors}; refusing to hand it to the VM`,
    'the placeholder is back and the COW released: the destination stays paused. Find out what wrote the COW ' +
      'after the source released it, then acquire again or abort',
    { device, found, record },
  );

async function acquireOnce(ctx: NodeSession, name: string): Promise<MigrateResult> {
  const state = await observeForMap(ctx);
  const o = liveClone(state, name);
  // A write-back marker of another host: the newest blocks may still be there, not in the COW.
  await refuseForeignWriteback(ctx, o, 'acquire');
  const rw = dmName('rw', o.uuid);
  const base = { name, vg: ctx.vg, uuid: o.uuid, step: 'acquire' as const, device: dmPath('rw', o.uuid) };
  const journal = { op: 'migrate-acquire' as const, vg: ctx.vg, name, uuid: o.uuid };
  const clear = (record: Handover | undefined, now: CloneObj): Step[] =>
    record
      ? [
          {
            title: `clear the hand-over record of ${lvRef(o)}`,
            req: lvm.tagLvReq(lvRef(o), { del: handoverTags(now.tags) }, ctx.scope),
          },
        ]
      : [];
  const top = await topOf(ctx, state, o);
  if (top.kind === 'none')
    throw notFound(
      `${lvRef(o)} has no migration placeholder on this host`,
      `prepare the destination first: cowstack clone migrate prepare ${name}`,
    );
  if (top.kind === 'snapshot') {
    if (!o.handover) return { ...base, action: 'none' };
    // Acquired, but cut short before the record was cleared: compare and clear now.
    const found = await snapshotStatus(ctx, rw);
    if (found.allocatedSectors !== o.handover.allocatedSectors || found.metadataSectors !== o.handover.metadataSectors)
      throw mismatch(rw, found, o.handover);
    await runGuarded(ctx, [...clear(o.handover, o), endStep(journal)], o);
    return { ...base, action: 'acquired', handover: o.handover };
  }
  // Plan the stack as clone map would with no device on top, then load its top table into the
  // placeholder instead of creating the device (the incoming qemu keeps the device open).
  const without: NodeState = { ...state, devices: new Map([...state.devices].filter(([n]) => n !== rw)) };
  let now: CloneObj | undefined;
  const plan = planStack(without, o, ctx.scope, { underLock: (c) => (now = c) });
  await verifyExisting(ctx.runner, without, plan);
  if (plan.top?.name !== rw || plan.steps.at(-1)?.req.argv[1] !== 'create')
    throw new CowstackError(EXIT.FAILED, `planning ${lvRef(o)}'s stack did not end with its writable snapshot`, {
      hint: 'run cowstack recover, then look at cowstack report',
    });
  const placeholder = dmsetup.errorTable(plan.sectors);
  const steps: Step[] = [
    ...plan.steps.slice(0, -1),
    {
      title: `load ${name}'s snapshot table into the placeholder ${rw}`,
      req: dmsetup.reloadReq(rw, plan.top.table),
      undo: [dmsetup.clearReq(rw)],
    },
    {
      title: `switch ${rw} from the placeholder to ${name}'s snapshot`,
      req: dmsetup.resumeReq(rw),
      undo: [dmsetup.reloadReq(rw, placeholder), dmsetup.resumeReq(rw)],
    },
    {
      title: `compare ${rw}'s snapshot status with the source's hand-over record`,
      req: dmsetup.statusReq(rw),
      check: (r) => {
        const [line] = dmsetup.parseDmLines(r.stdout);
        const s = line?.target === 'snapshot' ? dmsetup.parseSnapshotStatus(line.args) : undefined;
        if (s?.state !== 'active')
          throw new CowstackError(EXIT.FAILED, `${rw} is not a working snapshot (${s?.state ?? 'no status'})`, {
            hint: 'the placeholder is back and the COW released; inspect the clone before resuming anything',
          });
        const record = now?.handover;
        const found = { allocatedSectors: s.allocatedSectors, metadataSectors: s.metadataSectors };
        if (
          record &&
          (found.allocatedSectors !== record.allocatedSectors || found.metadataSectors !== record.metadataSectors)
        )
          throw mismatch(rw, found, record);
      },
    },
  ];
  // Any layer's activation may be refused by the lock manager: name the one that was (exit 4).
  await runGuarded(ctx, [beginStep(journal), ...steps], plan.layers.map((l) => l.obj).reverse());
  const record = now?.handover;
  await runGuarded(ctx, [...clear(record, now ?? o), endStep(journal)], o);
  const warnings =
    record || ctx.dryRun
      ? []
      : [
          'the source left no hand-over record (it did not release: powered off or crashed after the migration?); ' +
            'the COW was taken once its lock was free, so its on-disk exceptions are complete; status not compared',
        ];
  return withWarnings({ ...base, action: 'acquired', ...(record ? { handover: record } : {}) }, warnings);
}

// ---- abort (either side) --------------------------------------------------------------------

export async function abortMigration(
  ctx: NodeSession,
  name: string,
  opts: { force?: boolean } = {},
): Promise<MigrateResult> {
  validateLvName(name, 'clone name');
  const state = await observeNode(ctx, { caches: 'auto' });
  const found = state.repo.byName.get(name);
  const base = { name, vg: ctx.vg, step: 'abort' as const };
  if (!found) return { ...base, action: 'none' };
  if (found.kind !== 'clone') throw usageError(`${name} is an image, not a clone`);
  const o = found;
  const top = await topOf(ctx, state, o);
  if (top.kind === 'snapshot')
    return withWarnings({ ...base, uuid: o.uuid, action: 'none' }, [
      `${lvRef(o)} is mapped writable on this host: this host holds the disk (its VM runs or waits here), kept`,
    ]);
  if (top.kind === 'placeholder') {
    if (top.dev.open > 0 && !opts.force)
      throw refused(
        `the placeholder ${top.dev.name} of ${lvRef(o)} is open on this host (the destination qemu still runs)`,
        'stop the destination qemu first (its migration failed), or pass --force',
        { device: top.dev.name, open: top.dev.open },
      );
    // The placeholder goes like any writable device, with the ancestors nothing else uses (unmap's
    // teardown, journalled as an unmap); the COW is not held here, so nothing of it changes.
    const r = await unmapClone(ctx, name, { force: opts.force });
    return withWarnings({ ...base, uuid: o.uuid, action: 'aborted' }, r.warnings ?? []);
  }
  if (o.lv.activeLocally && o.state === 'live')
    throw refused(
      `${lvRef(o)} is held on this host with no device over it (an interrupted acquire or release)`,
      'run cowstack recover: it finishes what its journal says was in flight',
    );
  if (!ctx.dryRun) await collectGarbage(ctx, name);
  return { ...base, uuid: o.uuid, action: 'none' };
}
