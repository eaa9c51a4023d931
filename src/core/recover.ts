/**
 * `cowstack recover`, at node boot and after any failure: finish or undo every operation
 * the journal says was in flight, then report what still looks wrong. Decisions:
 *   map            undo (tear the stack down) unless its top device is open: then it had
 *                  finished and a VM uses it, so it is kept
 *   unmap, commit, discard   finish (the admin asked for them; all are idempotent)
 *   create-*, import, flatten undo (remove the half-made LV still marked initializing)
 *   migrate-prepare   undo (remove the placeholder) unless it is open: a qemu waits on it, kept
 *   migrate-release   finish (with the hand-over record the entry keeps)
 *   migrate-acquire   finish while the placeholder (or the loaded snapshot) is there, once
 *   live-backup    undo before the hand-over of the exception store, finish after it (livePoint.ts)
 *   stage          finish: stop the BitTorrent client and tracker a killed staging/pull run left
 * Then, whatever the journal says: a writable device over a committed clone is removed when
 * nothing opens it, and cowstack devices and shared activations nothing uses are released.
 */
import type { Runner } from '../exec/types.js';
import * as daemon from '../tools/daemon.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as host from '../tools/host.js';
import * as lvm from '../tools/lvm.js';
import { collectGarbage, commitClone, discardClone, unmapClone } from './clones.js';
import { resumeLivePoint, settleLivePoint } from './livePoint.js';
import { settleRestore } from './restoreDisk.js';
import { abortMigration, acquireMigration, releaseMigration } from './migrate.js';
import type { NodeSession } from './node.js';
import { lazyDeviceName } from './cache/lazy.js';
import { wbHostOf } from './cache/meta.js';
import { writebackLv, nodeName } from './cache/writeback.js';
import { dmIdentity, dmName, lvMapperName, sameUuid } from './dmNames.js';
import { readJournal, endStep, type JournalEntry } from './journal.js';
import { journalSinkOf } from './journalSink.js';
import { stagingFiles } from './stage/files.js';
import { truncateLogReq } from '../tools/flock.js';
import { isFrozen, type CowObj } from './metadata.js';
import { type NodeState, observeNode } from './observe.js';
import { runGuarded } from './executor.js';
import { nodeStatus, writableOverFrozen } from './report.js';
import { deactivateStep, lvRef, bottomTables, teardownPlan } from './stack.js';

export interface RecoverAction {
  op: string;
  name: string;
  decision: 'finished' | 'undone' | 'kept' | 'nothing-to-do' | 'failed';
  detail?: string;
}

export interface RecoverReport {
  vg: string;
  actions: RecoverAction[];
  warnings: string[];
}

export async function recover(ctx: NodeSession): Promise<RecoverReport> {
  const actions: RecoverAction[] = [];
  const entries = (await readJournal(ctx.runner)).filter((j) => j.vg === ctx.vg || !j.vg);
  // A VM device a live backup left suspended blocks every LVM scan here: resumed before anything.
  const resumed = new Set<JournalEntry>();
  for (const entry of entries)
    await resumeLivePoint(ctx, entry).then(
      (r) => r && resumed.add(entry),
      (e: unknown) =>
        actions.push({ op: entry.op, name: entry.name, decision: 'failed', detail: (e as Error).message }),
    );
  for (const entry of entries) {
    try {
      const decision = await settle(ctx, entry, resumed.has(entry));
      // An entry without a VG is a torn write (or not ours): report the file, not a made-up op.
      actions.push(
        entry.vg
          ? { op: entry.op, name: entry.name, decision }
          : { op: 'journal', name: entry.file, decision, detail: 'unreadable entry removed' },
      );
      if (!entry.vg) await ctx.runner.run(host.removeRootFileReq(entry.file));
      else await runGuarded(ctx, [endStep(entry)]);
    } catch (e) {
      actions.push({ op: entry.op, name: entry.name, decision: 'failed', detail: (e as Error).message });
    }
  }
  // The log only grows (two records per operation): with nothing in it left in flight, recover
  // empties it. Only under the node lock, whose keeper appends to it and follows the truncation
  // (O_APPEND); the lock's own holder record goes with it.
  const settled = entries.every((e, i) => !e.fromLog || actions[i]?.decision !== 'failed');
  if (settled && !ctx.dryRun && journalSinkOf(ctx.runner.target)) await ctx.runner.run(truncateLogReq(ctx.vg));
  actions.push(...(await recoverWriteback(ctx)));
  actions.push(...(await recoverLazy(ctx)));
  const state = await observeNode(ctx);
  const repaired = await recoverWritableOverFrozen(ctx, state);
  actions.push(...repaired);
  actions.push(
    ...(await releaseUnused(ctx, repaired.some((a) => a.decision === 'finished') ? await observeNode(ctx) : state)),
  );
  const status = await nodeStatus(ctx);
  const warnings = [...status.warnings];
  for (const o of state.repo.byName.values()) {
    if (o.state === 'initializing')
      warnings.push(
        `${lvRef(o)} is still initializing and no operation on this node owns it: ` +
          'it is being created on another node, or was abandoned there (cowstack recover on that node removes it)',
      );
  }
  return { vg: ctx.vg, actions, warnings };
}

async function settle(
  ctx: NodeSession,
  entry: JournalEntry & { file: string },
  resumedLive: boolean,
): Promise<RecoverAction['decision']> {
  if (!entry.vg) return 'nothing-to-do'; // torn journal write: nothing had started
  // A killed staging or pull run: its client (and a tracker) may still run, whatever became of the LV.
  if (entry.op === 'stage') {
    if (!entry.uuid) return 'nothing-to-do';
    const f = stagingFiles(entry.uuid);
    await runGuarded(ctx, [
      { title: 'stop the BitTorrent client left by a staging run', req: daemon.stopReq(f.pid, 'stop the client') },
      { title: 'stop a tracker left by a staging run', req: daemon.stopReq(f.trackerPid, 'stop the tracker') },
    ]);
    return 'finished';
  }
  // Named by its top, which the point's own renames take away for a moment: settled by uuid.
  if (entry.op === 'live-backup') return settleLivePoint(ctx, entry, resumedLive);
  // Named by the disk's top, which the restore itself removes and makes again.
  if (entry.op === 'restore') return settleRestore(ctx, entry);
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(entry.name);
  if (!o) return 'nothing-to-do';
  // An entry names the LV it was about by uuid: an LV of that name made since is another one.
  // (An `end` record written within the last seconds before a power cut can be lost with the
  // page cache, so a finished operation can read as in flight; settling it must not touch an
  // LV created after it.)
  if (entry.uuid && entry.uuid !== o.uuid) return 'nothing-to-do';
  switch (entry.op) {
    case 'map': {
      const top = state.devices.get(dmName('rw', o.uuid)) ?? state.devices.get(dmName('ro', o.uuid));
      if (top && top.open > 0) return 'kept';
      await unmapClone(ctx, o.name);
      return 'undone';
    }
    case 'unmap':
      await unmapClone(ctx, o.name);
      return 'finished';
    case 'commit':
      await commitClone(ctx, o.name);
      return 'finished';
    case 'discard':
      await discardClone(ctx, o.name);
      return 'finished';
    case 'migrate-prepare': {
      if ((state.devices.get(dmName('rw', o.uuid))?.open ?? 0) > 0) return 'kept';
      await abortMigration(ctx, o.name);
      return 'undone';
    }
    case 'migrate-release':
      await releaseMigration(ctx, o.name, entry.handover ? { record: entry.handover } : {});
      return 'finished';
    case 'migrate-acquire':
      // Without the device the hand-over was aborted here (or the node rebooted): nothing waits.
      if (!state.devices.has(dmName('rw', o.uuid))) return 'nothing-to-do';
      await acquireMigration(ctx, o.name, { waitSeconds: 0 });
      return 'finished';
    case 'create-clone':
    case 'create-image':
    case 'import':
    case 'flatten': {
      if (o.state !== 'initializing') return 'nothing-to-do';
      const steps = [];
      if (o.lv.activeLocally) steps.push(deactivateStep(o, ctx.scope));
      steps.push({
        title: `remove half-made ${lvRef(o)}`,
        req: lvm.removeLvReq(lvRef(o), ctx.scope),
      });
      await runGuarded(ctx, steps);
      return 'undone';
    }
  }
  return 'nothing-to-do';
}

export type { Runner };

/**
 * After a crash a write-back cache LV may hold a clone's newest blocks with nothing mapped:
 * re-attach it over the COW (taken exclusively here), write everything back, remove it and
 * release the COW (unmap does all of that). A cache under a running VM's disk is kept.
 * Clones marked as write-back cached on this node without a cache LV get their marker cleared.
 */
async function recoverWriteback(ctx: NodeSession): Promise<RecoverAction[]> {
  if (!ctx.cacheVg) return [];
  const state = await observeNode(ctx, { caches: 'always' });
  const me =
    state.cache?.exists || [...state.repo.byName.values()].some((o) => o.kind === 'clone' && wbHostOf(o))
      ? await nodeName(ctx)
      : '';
  const out: RecoverAction[] = [];
  for (const o of state.repo.byName.values()) {
    if (o.kind !== 'clone' || o.state !== 'live') continue;
    const lv = writebackLv(state.cache, o);
    if (!lv && wbHostOf(o) !== me) continue;
    // An attached cache is a clone in use (or a map the journal accounts for): left alone.
    if (state.devices.has(dmName('wb', o.uuid))) continue;
    try {
      const r = await unmapClone(ctx, o.name);
      out.push({
        op: 'write-back',
        name: o.name,
        decision: 'finished',
        detail:
          r.flushedBlocks !== undefined
            ? `${r.flushedBlocks} block(s) written back to the COW, cache removed, COW released`
            : 'marker cleared',
      });
    } catch (e) {
      out.push({ op: 'write-back', name: o.name, decision: 'failed', detail: (e as Error).message });
    }
  }
  return out;
}

/**
 * Lazy read caches: a device nothing stands on (a map or unmap interrupted around it) is
 * detached cleanly and its image released (the garbage collection of that image does it).
 * A pair left "attached" with no device (the node crashed while it was up) needs nothing
 * now: its next attach resets it (its metadata is zeroed; nothing can be lost, the origin
 * is a read-only image). Reported so the admin sees it.
 */
async function recoverLazy(ctx: NodeSession): Promise<RecoverAction[]> {
  if (!ctx.cacheVg) return [];
  const state = await observeNode(ctx, { caches: 'always' });
  const out: RecoverAction[] = [];
  for (const d of state.devices.values()) {
    const p = dmIdentity(d);
    if (p?.role !== 'lc' || d.open > 0) continue;
    const image = objectOfDm(state, p.lvUuid);
    if (!image) {
      out.push({
        op: 'lazy-cache',
        name: d.name,
        decision: 'failed',
        detail:
          'no image in the repository has this uuid: remove it with dmsetup remove after checking nothing uses it',
      });
      continue;
    }
    try {
      await collectGarbage(ctx, image.name);
      out.push({
        op: 'lazy-cache',
        name: image.name,
        decision: 'finished',
        detail: `${d.name} was not used by any clone: detached cleanly, LVs deactivated`,
      });
    } catch (e) {
      out.push({ op: 'lazy-cache', name: image.name, decision: 'failed', detail: (e as Error).message });
    }
  }
  for (const c of state.cache?.lvs ?? []) {
    if (c.kind !== 'lazy' || c.lazyState !== 'attached' || state.devices.has(lazyDeviceName({ uuid: c.originUuid })))
      continue;
    const image = state.repo.byUuid.get(c.originUuid);
    out.push({
      op: 'lazy-cache',
      name: image?.name ?? c.name,
      decision: 'nothing-to-do',
      detail: `${c.vg}/${c.name} was left attached (a crash): it is reset (metadata zeroed) at its next attach`,
    });
  }
  return out;
}

/** The repository object a cowstack dm device belongs to (its dm uuid holds the LV uuid compacted). */
const objectOfDm = (state: NodeState, lvUuid: string): CowObj | undefined =>
  [...state.repo.byUuid.values()].find((o) => sameUuid(o.uuid, lvUuid));

/**
 * A writable snapshot over a committed clone (item of the map/commit race that the re-check
 * under the COW's lock now prevents; an older cowstack could leave one): writes through it
 * change a parent other clones stand on. Unopened, it is removed (nothing is written: a
 * snapshot removal only drops the mapping; the COW keeps what was written) and the COW,
 * still active exclusively here, is released like an interrupted commit. Open, it is kept
 * and reported: reloading it read-only would not stop a writer that already has it open
 * (the kernel only warns about writes to a read-only device), and an error table would
 * fail the user's reads as well; only its user can close it.
 */
async function recoverWritableOverFrozen(ctx: NodeSession, state: NodeState): Promise<RecoverAction[]> {
  const out: RecoverAction[] = [];
  for (const d of state.devices.values()) {
    const p = dmIdentity(d);
    if (!p) continue;
    const o = objectOfDm(state, p.lvUuid);
    const problem = writableOverFrozen(o, p.role);
    if (!o || !problem) continue;
    if (d.open > 0) {
      out.push({
        op: 'writable-over-committed',
        name: o.name,
        decision: 'failed',
        detail:
          `${d.name} is open ${d.open} time(s), kept: ${problem}; stop what uses it, then run cowstack recover ` +
          'again (blocks written through it are in the COW: check its children)',
      });
      continue;
    }
    try {
      await runGuarded(ctx, [
        { title: `remove the writable device ${d.name} over committed ${lvRef(o)}`, req: dmsetup.removeReq(d.name) },
      ]);
      if (o.state === 'committed') await commitClone(ctx, o.name);
      out.push({
        op: 'writable-over-committed',
        name: o.name,
        decision: 'finished',
        detail: `${d.name} was not open: removed (nothing written), COW released`,
      });
    } catch (e) {
      out.push({ op: 'writable-over-committed', name: o.name, decision: 'failed', detail: (e as Error).message });
    }
  }
  return out;
}

/**
 * What an interrupted operation (or an older cowstack's killed commit) left on this node with
 * nothing using it: read-only snapshot devices nothing opens, and shared activations of images
 * and committed clones nothing opens and no cowstack device stands for. They hold shared locks
 * that block lvremove from every other node. Each is released with the chain below it as far
 * as nothing else uses it (the same teardown as unmap's). A read-only map of a committed clone
 * that nothing has opened yet is released too: mapping it again is idempotent. So is a live
 * COW held exclusively with nothing over it (a create-and-map cut before its snapshot).
 */
async function releaseUnused(ctx: NodeSession, first: NodeState): Promise<RecoverAction[]> {
  const out: RecoverAction[] = [];
  const tried = new Set<string>();
  let state = first;
  const candidate = (): { o?: CowObj; device?: string; held?: boolean } | undefined => {
    for (const d of state.devices.values()) {
      const p = dmIdentity(d);
      if (p?.role !== 'ro' || d.open > 0 || tried.has(d.name)) continue;
      return { o: objectOfDm(state, p.lvUuid), device: d.name };
    }
    for (const o of state.repo.byName.values()) {
      const frozen = isFrozen(o);
      if (!frozen || !o.lv.activeLocally || o.lv.activeExclusively || tried.has(o.name)) continue;
      if ((state.devices.get(lvMapperName(o.vg, o.name))?.open ?? 1) > 0) continue;
      if (state.devices.has(dmName('ro', o.uuid)) || state.devices.has(dmName('lc', o.uuid))) continue;
      return { o };
    }
    // A live COW held exclusively here with no writable snapshot over it and nothing opening it:
    // an operation that keeps the COW for its map (create --map, TM clone) cut between the live
    // mark and the snapshot. Held, it blocks every other node from the VM's disk; released, it
    // maps again anywhere. Not with a write-back marker (its cache is settled above).
    for (const o of state.repo.byName.values()) {
      if (o.kind !== 'clone' || o.state !== 'live' || !o.lv.activeLocally || tried.has(o.name)) continue;
      if (wbHostOf(o) || state.devices.has(dmName('rw', o.uuid)) || state.devices.has(dmName('wb', o.uuid))) continue;
      if ((state.devices.get(lvMapperName(o.vg, o.name))?.open ?? 1) > 0) continue;
      return { o, held: true };
    }
    return undefined;
  };
  for (let c = candidate(); c; c = candidate()) {
    const key = c.device ?? c.o!.name;
    tried.add(key);
    try {
      const steps = c.held
        ? [deactivateStep(c.o!, ctx.scope)]
        : c.o
          ? teardownPlan(state, c.o, {
              removeTop: false,
              scope: ctx.scope,
              tables: await bottomTables(ctx.runner, state),
            })
          : [{ title: `remove orphan ${c.device}`, req: dmsetup.removeReq(c.device!) }];
      if (!steps.length) continue;
      await runGuarded(ctx, steps);
      const what = c.device
        ? `${c.device} was not open`
        : `${lvRef(c.o!)} was active ${c.held ? 'exclusively' : 'shared'} with nothing using it`;
      out.push({
        op: 'unused',
        name: c.o?.name ?? key,
        decision: 'finished',
        detail: `${what}: released with what only it used (${steps.length} step(s))`,
      });
    } catch (e) {
      out.push({ op: 'unused', name: c.o?.name ?? key, decision: 'failed', detail: (e as Error).message });
    }
    state = await observeNode(ctx);
  }
  return out;
}
