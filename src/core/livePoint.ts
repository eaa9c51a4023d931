/**
 * A backup point of a running disk, taken without closing it. The disk's device
 * (`cowstack-rw-<top>`, open by the VM) is a writable snapshot: origin = its parent's stack,
 * COW = the top's LV. Its backup point is that COW frozen, and the disk goes on on a new COW:
 *   prepare  (VM runs)   create the new top's COW (-aey, zeroed header, "initializing");
 *                        create `cowstack-ro-<top>` without a table and load, read-only, the
 *                        table a committed layer has: snapshot(same origin, the top's COW, P)
 *   switch   (VM paused) suspend the VM's device (in-flight writes finish and their exceptions
 *                        are on the COW; new I/O queues); resume the read-only device: the
 *                        kernel hands the exception store over from the suspended snapshot
 *                        sharing its origin and COW (dm-snapshot "handover"), which is from
 *                        then on invalid; load the VM's device with snapshot(the read-only
 *                        device, the new COW, PO) and resume it. Same bytes before and after.
 *   finish   (VM runs)   rename the VM's device after the new COW's LV (its dm uuid, set once
 *                        by the kernel, keeps naming the point: dmIdentity reads the name
 *                        first); the old COW becomes the committed, read-only point `<top>-b<N>`
 *                        and is shared; the new COW becomes the live `<top>`.
 * The pause is the switch alone: four dmsetup calls, measured and reported.
 *
 * A disk with a write-back cache on this node (dm-writecache between the VM's snapshot and its
 * COW) is drained into the COW first, and gets a fresh cache on the new top: liveWriteback.ts.
 * Its switch has no hand-over (the point's table is read from the drained COW under the
 * suspend) and two more calls in the window: the last flush and the status that must say 0.
 *
 * Journalled as `live-backup`; the hand-over is the point of no return. `cowstack recover`
 * resumes a suspended VM device first, from dmsetup alone (resumeLivePoint: a suspended device
 * blocks every LVM scan on the node), then settles the rest (settleLivePoint):
 *   read-only device without a live table (no hand-over yet): undo. The read-only device is
 *     removed, the VM's device resumed on its own table (if a crash left it suspended; in that
 *     order: a pending hand-over keeps it from resuming), the new COW removed; the disk is as before.
 *   read-only device live (handed over): finish. The VM's device, if suspended, gets the new
 *     table (loaded unless already there) and is resumed; then the finish steps that remain.
 *     Never resumed on its old table: that snapshot was invalidated by the hand-over.
 *   no device at all (a power cut): the new top's COW says it. A snapshot header on it (written
 *     when the VM's table was loaded on it) means switched: finish; none: undo (switchedOnDisk).
 */
import { CowstackError, EXIT, refused } from '../exec/errors.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as store from '../tools/exceptionStore.js';
import * as lvm from '../tools/lvm.js';
import { wbHostOf, writebackLvName } from './cache/meta.js';
import { cacheVgOf } from './cache/vg.js';
import { nodeName, releaseWriteback, writecacheStatus } from './cache/writeback.js';
import { readCowHeader } from './cowHeader.js';
import { dmName, dmPath, dmUuid, lvMapperName, lvMapperPath, sameUuid } from './dmNames.js';
import { runGuarded } from './executor.js';
import { beginStep, endStep, type JournalEntry } from './journal.js';
import { chunkTag, parentTag, roleTag, stateTag, type CloneObj } from './metadata.js';
import type { NodeSession } from './node.js';
import { type NodeState, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { activateStep, deactivateStep } from './lvSteps.js';
import { lvRef } from './stack.js';
import { validateLvName } from './validate.js';
import {
  dropNewCacheReqs,
  flushStep,
  markerOf,
  newCachePath,
  newCacheSteps,
  oldCacheSteps,
  PLANNED_UUID,
  refuseDirty,
  type WritebackSwitch,
} from './liveWriteback.js';

/** The new top's COW until the switch is finished: then it takes the top's name. */
export const nextTopName = (point: string): string => `${point}-next`;

export interface LivePointResult {
  top: string;
  point: string;
  /** How long the VM's disk was suspended (suspend to resume), in milliseconds. */
  pauseMs: number;
  /** A write-back cached disk: blocks written back while the VM ran (before the pause), its new cache. */
  writeback?: { drainedBlocks: number; cache: string };
}

interface Switch {
  top: string;
  point: string;
  old: Pick<CloneObj, 'vg' | 'name' | 'uuid' | 'chunkSectors'>;
  /** The new COW, once its uuid is known. */
  nextUuid?: string;
  /** The VM's device as it is named now; none after a power cut. */
  rwDevice?: string;
  /** The read-only snapshot table of the point, and the VM device's table on the new COW. */
  roTable: string;
  rwTable: string;
  /** The disk has a write-back cache here: drained, then a new one on the new top. */
  wb?: WritebackSwitch;
}

const journalOf = (ctx: NodeSession, s: Pick<Switch, 'top' | 'point' | 'old' | 'wb'>) => ({
  op: 'live-backup' as const,
  vg: ctx.vg,
  name: s.top,
  uuid: s.old.uuid,
  point: s.point,
  ...(s.wb ? { writeback: s.wb.cacheVg } : {}),
});

/** The tables of the switch, from the VM device's own table: its origin stays, its COW is frozen. */
function tablesOf(
  ctx: NodeSession,
  state: NodeState,
  t: CloneObj,
  line: dmsetup.DmLine,
  next: { name: string; cow: string },
  cached: boolean,
) {
  const [originNum, cow, , chunk] = line.args;
  // A write-back cached disk's snapshot stands on the cache device over the COW.
  const cowDev = state.devices.get(cached ? dmName('wb', t.uuid) : lvMapperName(t.vg, t.name));
  // By its /dev/mapper name, as every table cowstack loads (and its sudoers rules) spells it.
  const origin = [...state.devices.values()].find((d) => `${d.major}:${d.minor}` === originNum)?.name;
  if (line.target !== 'snapshot' || !origin || !cowDev || cow !== `${cowDev.major}:${cowDev.minor}`)
    throw refused(
      `${dmName('rw', t.uuid)} is not a snapshot on ${lvRef(t)} (table: ${line.target} ${line.args.join(' ')})`,
      'a hand-built device cannot be backed up live: power the VM off and use prebackup',
    );
  const roTable = dmsetup.snapshotTable(
    line.length,
    `/dev/mapper/${origin}`,
    lvMapperPath(t.vg, t.name),
    'P',
    Number(chunk),
  );
  const rwTable = dmsetup.snapshotTable(line.length, dmPath('ro', t.uuid), next.cow, 'PO', t.chunkSectors);
  return { roTable, rwTable };
}

/**
 * Take backup point `point` of the live clone `t`, mapped and (usually) open here, without
 * closing it. The caller has checked that the point does not exist yet.
 */
export async function takeLivePoint(
  ctx: NodeSession,
  state: NodeState,
  t: CloneObj,
  point: string,
): Promise<LivePointResult> {
  validateLvName(point, 'backup point');
  const next = nextTopName(point);
  validateLvName(next, 'new top');
  const rwName = dmName('rw', t.uuid);
  const dev = state.devices.get(rwName);
  const hint = 'run the backup on the host that runs the VM, or power the VM off and use prebackup';
  if (!dev)
    throw refused(`${lvRef(t)} is not mapped on ${ctx.runner.target}: there is no running disk to back up`, hint);
  const cached = state.devices.has(dmName('wb', t.uuid));
  if (dev.suspended || state.devices.has(dmName('ro', t.uuid)) || state.repo.byName.has(next))
    throw refused(
      `a live backup of ${lvRef(t)} was interrupted (${rwName} suspended, or ${next} left)`,
      'run cowstack recover',
    );
  const status = dmsetup.parseSnapshotStatus((await dmsetup.status(ctx.runner, rwName))[0]?.args ?? []);
  if (status.state !== 'active')
    throw refused(
      `${lvRef(t)}'s snapshot is ${status.state}: its COW no longer holds the disk`,
      'the disk cannot be backed up; grow COWs before they fill (cowstack clone grow)',
    );
  const [line] = await dmsetup.table(ctx.runner, rwName);
  if (!line) throw refused(`${rwName} has no table`, 'run cowstack recover');
  const wb = cached ? await writebackOf(ctx, t) : undefined;
  const s: Switch = {
    top: t.name,
    point,
    old: t,
    rwDevice: rwName,
    ...tablesOf(ctx, state, t, line, { name: next, cow: lvMapperPath(ctx.vg, next) }, cached),
    ...(wb ? { wb } : {}),
  };
  const journal = journalOf(ctx, s);
  const roName = dmName('ro', t.uuid);
  const ref = `${ctx.vg}/${next}`;
  // The new top inherits the disk's COW size and chunk: the VM's writes go on as they were.
  const prepare: Step[] = [
    beginStep(journal),
    {
      title: `create the new top's COW ${ref} on ${t.name}`,
      req: lvm.createLvReq(
        {
          vg: ctx.vg,
          name: next,
          bytes: t.sizeBytes,
          activate: 'ey',
          zero: true,
          tags: [
            roleTag('clone'),
            stateTag('initializing'),
            parentTag(t.uuid),
            chunkTag(t.chunkSectors),
            // Its cache may hold its newest blocks from the switch on: marked before it has one.
            ...(wb ? [markerOf(wb.host)] : []),
          ],
        },
        ctx.scope,
      ),
      undo: [lvm.removeLvReq(ref, ctx.scope)],
    },
    {
      title: `create ${roName} for ${point}`,
      req: dmsetup.createEmptyReq(roName, dmUuid('ro', t.uuid)),
      undo: [dmsetup.removeReq(roName)],
    },
    // A cached disk's COW is not complete before the drain: its table is loaded under the suspend.
    ...(wb
      ? []
      : [
          {
            title: `load the read-only table of ${point} into ${roName}`,
            req: dmsetup.reloadReq(roName, s.roTable, { readOnly: true }),
          },
        ]),
  ];
  const made = await runGuarded(ctx, prepare, t);
  const created = made.results[1]!;
  s.nextUuid = created.skipped ? undefined : (await lvm.findLv(ctx.runner, ctx.vg, next, ctx.scope))?.uuid;
  const undoPrepared = async (also: Array<ReturnType<typeof dmsetup.removeReq>> = []) => {
    const undo = [dmsetup.removeReq(roName), dmsetup.resumeReq(rwName), ...also, lvm.removeLvReq(ref, ctx.scope)];
    for (const req of undo) await ctx.runner.run(req).catch(() => undefined);
    await runGuarded(ctx, [endStep(journal)]).catch(() => undefined);
  };
  if (s.nextUuid) {
    // After a power cut recover tells a switched disk by a snapshot header on the new COW; that
    // header means something only once the COW is made and zeroed, which this record says.
    const { undo: _undo, undoRecord: _undoRecord, ...named } = beginStep({ ...journal, next: s.nextUuid });
    try {
      await runGuarded(ctx, [{ ...named, title: `journal: live-backup ${ref} is the new top` }]);
    } catch (e) {
      await undoPrepared();
      throw e;
    }
  }
  let drained = 0;
  if (wb) {
    s.rwTable = rwTableOf(line, t, newCachePath(s.nextUuid));
    const nextObj = { ...t, name: next, uuid: s.nextUuid ?? PLANNED_UUID };
    const before = ctx.dryRun ? undefined : await writecacheStatus(ctx, wb.oldDevice!);
    try {
      await runGuarded(ctx, [...newCacheSteps(wb, nextObj), flushStep(wb.oldDevice!, 'most of it, while the VM runs')]);
    } catch (e) {
      await undoPrepared(dropNewCacheReqs(wb, s.nextUuid));
      throw e;
    }
    drained = before ? before.dirtyBlocks : 0;
  }
  // No undo on the suspend: a suspended snapshot with a hand-over pending cannot resume
  // (EINVAL) until that read-only device is gone, so the undo below goes in that order.
  const t0 = Date.now();
  try {
    if (wb) {
      await runGuarded(ctx, [
        { title: `suspend ${rwName} (the VM's I/O waits)`, req: dmsetup.suspendReq(rwName) },
        flushStep(wb.oldDevice!, 'what the VM wrote since, under the suspend'),
      ]);
      await refuseDirty(ctx, wb.oldDevice!);
      await runGuarded(ctx, [
        {
          title: `load the read-only table of ${point} into ${roName} (its exception store, from the drained COW)`,
          req: dmsetup.reloadReq(roName, s.roTable, { readOnly: true }),
        },
        { title: `resume ${roName}: ${point} is live`, req: dmsetup.resumeReq(roName) },
      ]);
    } else
      await runGuarded(ctx, [
        { title: `suspend ${rwName} (the VM's I/O waits)`, req: dmsetup.suspendReq(rwName) },
        { title: `resume ${roName}: the exception store of ${t.name} is handed over`, req: dmsetup.resumeReq(roName) },
      ]);
  } catch (e) {
    // No hand-over: the VM's device runs on its own table again; what prepare made goes.
    await undoPrepared(wb ? dropNewCacheReqs(wb, s.nextUuid) : []);
    throw e;
  }
  try {
    await runGuarded(ctx, switchSteps(s, rwName));
  } catch (e) {
    throw new CowstackError(EXIT.FAILED, `${rwName} stays suspended after the hand-over: ${(e as Error).message}`, {
      hint: 'run cowstack recover now: it loads the new table and resumes the VM',
    });
  }
  const pauseMs = Date.now() - t0;
  await runGuarded(ctx, [...finishSteps(ctx, s, undefined), endStep(journal)]);
  return {
    top: t.name,
    point,
    pauseMs,
    ...(wb ? { writeback: { drainedBlocks: drained, cache: newCachePath(s.nextUuid) } } : {}),
  };
}

/** The VM device's table on the read-only point and the new top's COW (or its cache). */
const rwTableOf = (line: dmsetup.DmLine, t: CloneObj, cow: string): string =>
  dmsetup.snapshotTable(line.length, dmPath('ro', t.uuid), cow, 'PO', t.chunkSectors);

/** The write-back cache of `t` on this node, as the switch drains and replaces it. */
async function writebackOf(ctx: NodeSession, t: CloneObj): Promise<WritebackSwitch> {
  const cacheVg = cacheVgOf(ctx);
  const host = await nodeName(ctx);
  const marker = wbHostOf(t);
  return {
    cacheVg,
    host,
    oldDevice: dmName('wb', t.uuid),
    oldLv: `${cacheVg}/${writebackLvName(t.uuid)}`,
    ...(marker ? { marker: markerOf(marker) } : {}),
  };
}

/** After the hand-over: the VM's device on the new COW, resumed. */
const switchSteps = (s: Switch, rw: string): Step[] => [
  { title: `load ${rw} with the new top's table`, req: dmsetup.reloadReq(rw, s.rwTable) },
  { title: `resume ${rw} (the VM's I/O goes on)`, req: dmsetup.resumeReq(rw) },
];

/**
 * The bookkeeping after the switch, what `state` (recover) says is still to do; all of it
 * without it (the first run). The point is committed under the lock this node holds on its
 * COW (exclusive), then shared like every committed layer, so other nodes may stand on it.
 */
function finishSteps(ctx: NodeSession, s: Switch, state: NodeState | undefined): Step[] {
  const old = state ? [...state.repo.byUuid.values()].find((o) => sameUuid(o.uuid, s.old.uuid)) : undefined;
  const nextObj = state
    ? [...state.repo.byUuid.values()].find((o) => s.nextUuid && sameUuid(o.uuid, s.nextUuid))
    : undefined;
  const steps: Step[] = [];
  // A dry run has no new COW, so no uuid to name the device after.
  const rwNew = s.nextUuid ? dmName('rw', s.nextUuid) : 'cowstack-rw-<the new COW uuid>';
  if (s.rwDevice && s.rwDevice !== rwNew)
    steps.push({ title: `rename ${s.rwDevice} to ${rwNew}`, req: dmsetup.renameReq(s.rwDevice, rwNew) });
  const oldName = old?.name ?? s.top;
  if (s.wb) steps.push(...oldCacheSteps(ctx, s.wb, `${ctx.vg}/${oldName}`));
  if (!old || old.state === 'live' || !old.lv.readOnly)
    steps.push({
      title: `mark ${ctx.vg}/${oldName} committed and read-only`,
      req: lvm.changeLvReq(
        `${ctx.vg}/${oldName}`,
        { readOnly: true, tags: { del: [stateTag('live')], add: [stateTag('committed')] } },
        ctx.scope,
      ),
    });
  if (oldName !== s.point)
    steps.push({
      title: `rename ${ctx.vg}/${oldName} to ${s.point}`,
      req: lvm.renameLvReq(ctx.vg, oldName, s.point, ctx.scope),
    });
  const nextName = nextObj?.name ?? nextTopName(s.point);
  if (nextName !== s.top)
    steps.push({
      title: `rename ${ctx.vg}/${nextName} to ${s.top}`,
      req: lvm.renameLvReq(ctx.vg, nextName, s.top, ctx.scope),
    });
  if (!nextObj || nextObj.state === 'initializing')
    steps.push({
      title: `mark ${ctx.vg}/${s.top} live`,
      req: lvm.tagLvReq(`${ctx.vg}/${s.top}`, { del: [stateTag('initializing')], add: [stateTag('live')] }, ctx.scope),
    });
  if (!old || old.lv.activeExclusively)
    steps.push({
      title: `share ${ctx.vg}/${s.point} (its lock from exclusive to shared)`,
      req: lvm.activateReq(`${ctx.vg}/${s.point}`, 'shared', ctx.scope),
    });
  return steps;
}

/**
 * First thing recover does for an interrupted live backup, from dmsetup alone: while the VM's
 * device is suspended every LVM scan on this node (lvs, and so any observation) blocks on it.
 * Before the hand-over: the read-only device goes first (a suspended snapshot with a hand-over
 * pending refuses to resume), then the device resumes on its own table. After it: the new
 * top's table is loaded (unless a load got that far) and the device resumed.
 */
export async function resumeLivePoint(ctx: NodeSession, entry: JournalEntry): Promise<boolean> {
  if (entry.op !== 'live-backup' || !entry.uuid || !entry.point) return false;
  const devices = new Map((await dmsetup.listDevices(ctx.runner)).map((d) => [d.name, d]));
  const dev = devices.get(dmName('rw', entry.uuid));
  if (!dev?.suspended) return false;
  const ro = devices.get(dmName('ro', entry.uuid));
  const steps: Step[] = [];
  if (ro && ro.attr[0] === 'L') {
    if (dev.attr[1] !== 'I') {
      const [line] = await dmsetup.table(ctx.runner, ro.name);
      const next =
        (await newCacheDevice(ctx, devices, entry.uuid, entry.point)) ?? lvMapperPath(ctx.vg, nextTopName(entry.point));
      const table = dmsetup.snapshotTable(line!.length, dmPath('ro', entry.uuid), next, 'PO', Number(line!.args[3]));
      steps.push({ title: `load ${dev.name} with the new top's table`, req: dmsetup.reloadReq(dev.name, table) });
    }
  } else {
    if (dev.attr[1] === 'I') steps.push({ title: `drop ${dev.name}'s loaded table`, req: dmsetup.clearReq(dev.name) });
    if (ro) steps.push({ title: `remove ${ro.name} (never live)`, req: dmsetup.removeReq(ro.name) });
  }
  steps.push({ title: `resume ${dev.name} (the VM's I/O goes on)`, req: dmsetup.resumeReq(dev.name) });
  await runGuarded(ctx, steps);
  return true;
}

/**
 * A write-back cached disk's new top has its own cache device, made before the suspend: the
 * writecache device whose origin is the new top's LV (dmsetup alone: LVM scans would block).
 * Without one (never the case after a suspend) the VM's device goes on the new COW itself.
 */
async function newCacheDevice(
  ctx: NodeSession,
  devices: Map<string, dmsetup.DmDevice>,
  oldUuid: string,
  point: string,
): Promise<string | undefined> {
  const nextLv = devices.get(lvMapperName(ctx.vg, nextTopName(point)));
  if (!devices.has(dmName('wb', oldUuid)) || !nextLv) return undefined;
  const tables = await dmsetup.tableAll(ctx.runner);
  const origin = `${nextLv.major}:${nextLv.minor}`;
  const found = [...tables].find(
    ([name, [line]]) => name.startsWith('cowstack-wb-') && line?.target === 'writecache' && line.args[1] === origin,
  );
  return found && `/dev/mapper/${found[0]}`;
}

/** What of the old top's write-back cache is still here (recover's finish removes it). */
async function leftWriteback(
  ctx: NodeSession,
  entry: JournalEntry,
  state: NodeState,
  old: CloneObj,
): Promise<WritebackSwitch | undefined> {
  const device = dmName('wb', old.uuid);
  const host = wbHostOf(old);
  if (!host && !state.devices.has(device)) return undefined;
  const cacheVg = entry.writeback ?? cacheVgOf(ctx);
  const lv = await lvm.findLv(ctx.runner, cacheVg, writebackLvName(old.uuid));
  if (state.devices.has(device)) {
    // Drained under the suspend and written to by nothing since; checked again before it goes.
    await runGuarded(ctx, [flushStep(device, 'before it is removed')]);
    await refuseDirty(ctx, device, 'run cowstack recover again once the repository path works');
  }
  return {
    cacheVg,
    host: host ?? '',
    ...(state.devices.has(device) ? { oldDevice: device } : {}),
    ...(lv ? { oldLv: `${cacheVg}/${lv.name}` } : {}),
    ...(host ? { marker: markerOf(host) } : {}),
  };
}

/**
 * `cowstack recover` of an interrupted live backup point, after resumeLivePoint ran (recover runs
 * it for every entry before anything else); `resumed` is what it answered: see the module comment.
 */
export async function settleLivePoint(
  ctx: NodeSession,
  entry: JournalEntry,
  resumed: boolean,
): Promise<'finished' | 'undone' | 'nothing-to-do'> {
  if (!entry.uuid || !entry.point) return 'nothing-to-do';
  const state = await observeNode(ctx);
  const old = [...state.repo.byUuid.values()].find((o) => sameUuid(o.uuid, entry.uuid!)) as CloneObj | undefined;
  if (!old) return 'nothing-to-do';
  const next = [...state.repo.byName.values()].find(
    (o) =>
      o.kind === 'clone' &&
      sameUuid(o.parentUuid, old.uuid) &&
      (o.name === nextTopName(entry.point!) || o.name === entry.name),
  ) as CloneObj | undefined;
  const ro = state.devices.get(dmName('ro', old.uuid));
  // The VM's device is named after the old top until the finish renames it after the new one.
  const dev = state.devices.get(dmName('rw', old.uuid)) ?? (next && state.devices.get(dmName('rw', next.uuid)));
  if (!ro && !dev && next && (await switchedOnDisk(ctx, entry, next))) {
    // A power cut after the switch: no device is left, the new top's COW holds what the VM wrote since.
    const s: Switch = { top: entry.name, point: entry.point, old, nextUuid: next.uuid, roTable: '', rwTable: '' };
    const wb = await leftWriteback(ctx, entry, state, old);
    if (wb) s.wb = wb;
    // switchedOnDisk touched only the new COW's activation and its write-back marker and cache,
    // none of which the finish reads: the observation made above still holds for it.
    await runGuarded(ctx, finishSteps(ctx, s, state));
    return 'finished';
  }
  if (!ro || ro.attr[0] !== 'L') {
    const steps: Step[] = [];
    if (ro) steps.push({ title: `remove ${ro.name} (never live)`, req: dmsetup.removeReq(ro.name) });
    // The new top's cache (a cached disk): never used, the VM stayed on the old one.
    if (next?.state === 'initializing' && state.devices.has(dmName('wb', next.uuid)))
      steps.push({ title: `remove the unused new cache device`, req: dmsetup.removeReq(dmName('wb', next.uuid)) });
    if (next?.state === 'initializing' && wbHostOf(next)) {
      const cacheVg = entry.writeback ?? cacheVgOf(ctx);
      const lv = await lvm.findLv(ctx.runner, cacheVg, writebackLvName(next.uuid));
      if (lv)
        steps.push({
          title: `remove the unused new cache LV ${lv.name}`,
          req: lvm.removeLvReq(`${cacheVg}/${lv.name}`),
        });
    }
    if (next?.state === 'initializing')
      steps.push({ title: `remove the unused new COW ${lvRef(next)}`, req: lvm.removeLvReq(lvRef(next), ctx.scope) });
    await runGuarded(ctx, steps);
    return steps.length || resumed ? 'undone' : 'nothing-to-do';
  }
  if (!next || !dev)
    throw refused(
      `${ro.name} was handed ${lvRef(old)}'s exceptions but the new top's COW or the VM's device is gone`,
      `the VM's disk cannot go on: stop the VM, remove its device (dmsetup remove), then map the disk again`,
    );
  const s: Switch = {
    top: entry.name,
    point: entry.point,
    old,
    nextUuid: next.uuid,
    rwDevice: dev.name,
    roTable: '',
    rwTable: '',
  };
  const wb = await leftWriteback(ctx, entry, state, old);
  if (wb) s.wb = wb;
  await runGuarded(ctx, finishSteps(ctx, s, state));
  return 'finished';
}

/**
 * After a power cut no device of the switch is left, and the new top's COW alone says whether
 * the VM's device was loaded on it: the snapshot constructor writes its header there at that
 * load, and nothing else does. Trusted only once the journal names that COW (made and zeroed:
 * before, its first bytes may be a removed LV's). A new top the finish already marked live was
 * switched to. A write-back cached one is written back first (the header, and the VM's writes
 * since, may be in its cache only); the old top's cache was drained before the switch.
 */
async function switchedOnDisk(ctx: NodeSession, entry: JournalEntry, next: CloneObj): Promise<boolean> {
  if (next.state === 'initializing' && !(entry.next && sameUuid(entry.next, next.uuid))) return false;
  if (ctx.dryRun && (next.state === 'initializing' || wbHostOf(next)))
    throw refused(
      `after a power cut, only ${lvRef(next)} itself says whether the live backup's switch was made`,
      'run cowstack recover without --dry-run: it activates that COW to read its header (and writes back its cache)',
    );
  let active = next.lv.activeLocally;
  if (wbHostOf(next)) {
    const cached = { ...ctx, cacheVg: entry.writeback ?? ctx.cacheVg };
    await releaseWriteback(cached, await observeNode(cached, { caches: 'always' }), next, { flush: true });
    active = true;
  }
  let switched = next.state !== 'initializing';
  if (!switched) {
    const cow = lvMapperPath(ctx.vg, next.name);
    if (!active) await runGuarded(ctx, [activateStep(next, 'exclusive', ctx.scope)]);
    active = true;
    switched = store.hasMagic(await readCowHeader(ctx, cow));
  }
  // Unmapped, as the VM's disk is after a power cut (a re-map activates it again).
  if (active) await runGuarded(ctx, [deactivateStep(next, ctx.scope)]);
  return switched;
}
