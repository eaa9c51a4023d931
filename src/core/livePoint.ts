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
 * Journalled as `live-backup`; the hand-over is the point of no return. `cowstack recover`
 * resumes a suspended VM device first, from dmsetup alone (resumeLivePoint: a suspended device
 * blocks every LVM scan on the node), then settles the rest (settleLivePoint):
 *   read-only device without a live table (no hand-over yet): undo. The read-only device is
 *     removed, the VM's device resumed on its own table (if a crash left it suspended; in that
 *     order: a pending hand-over keeps it from resuming), the new COW removed; the disk is as before.
 *   read-only device live (handed over): finish. The VM's device, if suspended, gets the new
 *     table (loaded unless already there) and is resumed; then the finish steps that remain.
 *     Never resumed on its old table: that snapshot was invalidated by the hand-over.
 */
import { CowstackError, EXIT, refused } from '../exec/errors.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import { dmName, dmPath, dmUuid, lvMapperName, lvMapperPath, sameUuid } from './dmNames.js';
import { runGuarded } from './executor.js';
import { beginStep, endStep, type JournalEntry } from './journal.js';
import { chunkTag, parentTag, roleTag, stateTag, type CloneObj } from './metadata.js';
import type { NodeSession } from './node.js';
import { type NodeState, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { lvRef } from './stack.js';
import { validateLvName } from './validate.js';

/** The new top's COW until the switch is finished: then it takes the top's name. */
export const nextTopName = (point: string): string => `${point}-next`;

export interface LivePointResult {
  top: string;
  point: string;
  /** How long the VM's disk was suspended (suspend to resume), in milliseconds. */
  pauseMs: number;
}

interface Switch {
  top: string;
  point: string;
  old: Pick<CloneObj, 'vg' | 'name' | 'uuid' | 'chunkSectors'>;
  /** The new COW, once its uuid is known. */
  nextUuid?: string;
  /** The VM's device as it is named now. */
  rwDevice: string;
  /** The read-only snapshot table of the point, and the VM device's table on the new COW. */
  roTable: string;
  rwTable: string;
}

const journalOf = (ctx: NodeSession, s: Pick<Switch, 'top' | 'point' | 'old'>) => ({
  op: 'live-backup' as const,
  vg: ctx.vg,
  name: s.top,
  uuid: s.old.uuid,
  point: s.point,
});

/** The tables of the switch, from the VM device's own table: its origin stays, its COW is frozen. */
function tablesOf(ctx: NodeSession, state: NodeState, t: CloneObj, line: dmsetup.DmLine, next: string) {
  const [originNum, cow, , chunk] = line.args;
  const cowDev = state.devices.get(lvMapperName(t.vg, t.name));
  // By its /dev/mapper name, as every table cowstack loads (and its sudoers rules) spells it.
  const origin = [...state.devices.values()].find((d) => `${d.major}:${d.minor}` === originNum)?.name;
  if (line.target !== 'snapshot' || !origin || !cowDev || cow !== `${cowDev.major}:${cowDev.minor}`)
    throw refused(
      `${dmName('rw', t.uuid)} is not a snapshot on ${lvRef(t)} (table: ${line.target} ${line.args.join(' ')})`,
      'a write-back cached or hand-built device cannot be backed up live: power the VM off and use prebackup',
    );
  const roTable = dmsetup.snapshotTable(
    line.length,
    `/dev/mapper/${origin}`,
    lvMapperPath(t.vg, t.name),
    'P',
    Number(chunk),
  );
  const rwTable = dmsetup.snapshotTable(
    line.length,
    dmPath('ro', t.uuid),
    lvMapperPath(ctx.vg, next),
    'PO',
    t.chunkSectors,
  );
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
  if (state.devices.has(dmName('wb', t.uuid)))
    throw refused(`${lvRef(t)} has a write-back cache on this node: a live backup point needs the COW itself`, hint);
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
  const s: Switch = { top: t.name, point, old: t, rwDevice: rwName, ...tablesOf(ctx, state, t, line, next) };
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
          tags: [roleTag('clone'), stateTag('initializing'), parentTag(t.uuid), chunkTag(t.chunkSectors)],
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
    {
      title: `load the read-only table of ${point} into ${roName}`,
      req: dmsetup.reloadReq(roName, s.roTable, { readOnly: true }),
    },
  ];
  const made = await runGuarded(ctx, prepare, t);
  const created = made.results[1]!;
  s.nextUuid = created.skipped ? undefined : (await lvm.findLv(ctx.runner, ctx.vg, next, ctx.scope))?.uuid;
  // No undo on the suspend: a suspended snapshot with a hand-over pending cannot resume
  // (EINVAL) until that read-only device is gone, so the undo below goes in that order.
  const handover: Step[] = [
    { title: `suspend ${rwName} (the VM's I/O waits)`, req: dmsetup.suspendReq(rwName) },
    { title: `resume ${roName}: the exception store of ${t.name} is handed over`, req: dmsetup.resumeReq(roName) },
  ];
  const t0 = Date.now();
  try {
    await runGuarded(ctx, handover);
  } catch (e) {
    // No hand-over: the VM's device runs on its own table again; what prepare made goes.
    const undo = [dmsetup.removeReq(roName), dmsetup.resumeReq(rwName), lvm.removeLvReq(ref, ctx.scope)];
    for (const req of undo) await ctx.runner.run(req).catch(() => undefined);
    await runGuarded(ctx, [endStep(journal)]).catch(() => undefined);
    throw e;
  }
  try {
    await runGuarded(ctx, switchSteps(s));
  } catch (e) {
    throw new CowstackError(EXIT.FAILED, `${rwName} stays suspended after the hand-over: ${(e as Error).message}`, {
      hint: 'run cowstack recover now: it loads the new table and resumes the VM',
    });
  }
  const pauseMs = Date.now() - t0;
  await runGuarded(ctx, [...finishSteps(ctx, s, undefined), endStep(journal)]);
  return { top: t.name, point, pauseMs };
}

/** After the hand-over: the VM's device on the new COW, resumed. */
const switchSteps = (s: Switch): Step[] => [
  { title: `load ${s.rwDevice} with the new top's table`, req: dmsetup.reloadReq(s.rwDevice, s.rwTable) },
  { title: `resume ${s.rwDevice} (the VM's I/O goes on)`, req: dmsetup.resumeReq(s.rwDevice) },
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
  if (s.rwDevice !== rwNew)
    steps.push({ title: `rename ${s.rwDevice} to ${rwNew}`, req: dmsetup.renameReq(s.rwDevice, rwNew) });
  const oldName = old?.name ?? s.top;
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
      const next = lvMapperPath(ctx.vg, nextTopName(entry.point));
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
  if (!ro || ro.attr[0] !== 'L') {
    const steps: Step[] = [];
    if (ro) steps.push({ title: `remove ${ro.name} (never live)`, req: dmsetup.removeReq(ro.name) });
    if (next?.state === 'initializing')
      steps.push({ title: `remove the unused new COW ${lvRef(next)}`, req: lvm.removeLvReq(lvRef(next), ctx.scope) });
    await runGuarded(ctx, steps);
    return steps.length || resumed ? 'undone' : 'nothing-to-do';
  }
  // The VM's device is named after the old top until the finish renames it after the new one.
  const dev = state.devices.get(dmName('rw', old.uuid)) ?? (next && state.devices.get(dmName('rw', next.uuid)));
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
  await runGuarded(ctx, finishSteps(ctx, s, state));
  return 'finished';
}
