/**
 * OpenNebula TM actions mapped onto cowstack's core operations. Each runs on the front-end
 * and acts on the host named in its arguments through that host's runner (one multiplexed
 * ssh connection per host). Every action is idempotent: oned re-runs failed actions.
 * See README "OpenNebula transfer-manager driver" for the mapping table.
 */
import { createReadStream, existsSync, promises as fsp } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { CowstackError, EXIT, notFound, refused, usageError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as backupFiles from '../tools/backupFiles.js';
import * as blockData from '../tools/blockData.js';
import * as fsReq from '../tools/host.js';
import { installFileReq } from '../tools/files.js';
import * as lvm from '../tools/lvm.js';
import { createAndMapClone, growClone, mapClone, unmapClone } from '../core/clones.js';
import { abortMigration, acquireMigration, prepareMigration, releaseMigration } from '../core/migrate.js';
import { runGuarded } from '../core/executor.js';
import { nodeSession, type NodeSession } from '../core/node.js';
import { retryAction, withLockRetry, type LockPolicy } from '../core/plan.js';
import { dmName, lvMapperName, lvMapperPath } from '../core/dmNames.js';
import { isTransientLockError } from '../core/locks.js';
import { flattenClone } from '../core/flatten.js';
import { removeLvs } from '../core/gc.js';
import { backupDisk, validateBackupPath } from '../core/backups.js';
import { createImage } from '../core/images.js';
import { growVolatile, saveLiveAsImage } from '../core/lineage.js';
import type { CowObj } from '../core/metadata.js';
import { observeNode, type NodeState } from '../core/observe.js';
import { recover } from '../core/recover.js';
import { usageOf } from '../core/report.js';
import { activateStep, deactivateStep, lvRef } from '../core/stack.js';
import { EXTENT, roundUp } from '../core/validate.js';
import {
  deleteSnapshot,
  diskLvs,
  revertSnapshot,
  startPersistentCow,
  syncBack,
  takeSnapshot,
  type CowOptions,
  type DiskSnapshot,
} from '../core/vmDisks.js';
import {
  backupIncrement,
  diskLv,
  DS_LOCATION,
  snapLv,
  parseTmPath,
  parseVmLv,
  vmLvPattern,
  xmlValue,
  type TmPath,
  type TmRequest,
  type TmSource,
} from './args.js';
import { totalsText, vmDisksText, type DiskUsage } from './monitorFormat.js';
import { DEFAULT_ONE_REMOTES, restore, type RestoreRequest } from './restore.js';

export interface TmEnv {
  vg: string;
  scope: lvm.LvmScope;
  /** The runner for a host (cached: one ssh control connection per host). */
  runnerFor(host: string): Runner;
  /** Cluster nodes to use when the named host is unreachable (delete) or for monitor. */
  hosts: string[];
  cowPercent: number;
  chunk: string;
  /** Host names that mean "the front-end itself" (undeploy/stop move files there). */
  frontends: string[];
  info(msg: string): void;
  out(text: string): void;
  observer?: NodeSession['observer'];
  /** The lock-error policy of every session the action opens; default: core/plan.ts defaultLockPolicy. */
  lockPolicy?: LockPolicy;
  /** OpenNebula's remotes directory on the front-end (restore runs its datastore drivers there). */
  oneRemotes?: string;
  /** --dry-run (the runners print writes instead of running them); restore then only says its plan. */
  dryRun?: boolean;
  /**
   * The repository VG of a datastore id (config repositories): activate brings up only the
   * disks of datastores in `vg`. Unset: every datastore is in `vg`.
   */
  vgOf?: (dsId: number) => string;
}

type Disk = TmPath & { diskId: number };

const ctxOf = (env: TmEnv, host: string): NodeSession =>
  nodeSession({
    runner: env.runnerFor(host),
    vg: env.vg,
    scope: env.scope,
    observer: env.observer,
    lockPolicy: env.lockPolicy,
  });
const cowOpts = (env: TmEnv): CowOptions => ({ chunk: env.chunk, defaultPercent: env.cowPercent });
const isFrontend = (env: TmEnv, host: string) => env.frontends.includes(host) || host === 'localhost';

/**
 * A VM disk lives in its system datastore's VG (tm/repository.ts), and a COW in its image's
 * VG: cowstack's lineage is by LV UUID within one VG. An image of another repository is refused.
 */
function checkVg(env: TmEnv, src: TmSource, disk: TmPath, saving = false): void {
  if (src.vg === env.vg) return;
  const where = `VG ${env.vg}, the repository of system datastore ${disk.dsId} that VM ${disk.vmId} is deployed on`;
  if (saving)
    throw usageError(
      `image SOURCE ${src.vg}/${src.lv} is not in ${where}`,
      `save the disk into an image datastore mapped to ${env.vg} (config repositories), then copy the image ` +
        `across if needed: cowstack image copy ${src.lv} --vg ${env.vg} --to-vg ${src.vg}`,
    );
  throw usageError(
    `image SOURCE ${src.vg}/${src.lv} is not in ${where}`,
    `copy the image into that repository (cowstack image copy ${src.lv} --vg ${src.vg} --to-vg ${env.vg}, or ` +
      `oneimage clone onto an image datastore mapped to ${env.vg}), or deploy the VM on a system datastore of ` +
      `${src.vg} (SCHED_DS_REQUIREMENTS); the mapping is config repositories (or repository.vg)`,
  );
}

/** D becomes a symlink to the device, as the hypervisor expects; the VM directory is created. */
async function link(r: Runner, device: string, d: TmPath): Promise<void> {
  await r.run(fsReq.mkdirReq(d.vmDir));
  await r.run(fsReq.linkReq(device, d.path));
}

function disksOf(state: NodeState, vmId: number): CowObj[] {
  const re = vmLvPattern(vmId);
  return [...state.repo.byName.values()].filter((o) => re.test(o.name));
}

/** Every LV of one VM: its disks and their snapshots (what removing the VM directory removes). */
const vmLvs = (state: NodeState, vmId: number): string[] => disksOf(state, vmId).map((o) => o.name);

/** The disk's top: a live clone (image-backed disk) or a writable image (volatile disk). */
function topOf(state: NodeState, d: Disk): CowObj | undefined {
  return state.repo.byName.get(diskLv(d.vmId, d.diskId));
}

/** Make a disk usable on the host its runner reaches and return its device. */
async function attach(ctx: NodeSession, o: CowObj): Promise<string> {
  if (o.kind === 'clone') return (await mapClone(ctx, o.name)).device!;
  if (!o.lv.activeLocally) await runGuarded(ctx, [activateStep(o, 'exclusive', ctx.scope)], o);
  return lvMapperPath(o.vg, o.name);
}

/** Release a disk on this host without committing anything: unmap + deactivate. */
async function release(ctx: NodeSession, state: NodeState, o: CowObj): Promise<void> {
  if (o.kind === 'clone') {
    if (o.state === 'live') await unmapClone(ctx, o.name);
    return;
  }
  const dev = state.devices.get(lvMapperName(o.vg, o.name));
  if (dev && dev.open > 0) throw refused(`${lvRef(o)} is open on ${ctx.runner.target}`, 'stop the VM using it first');
  if (o.lv.activeLocally) await runGuarded(ctx, [deactivateStep(o, ctx.scope)], o);
}

// ---- clone / ln / mvds / cpds -------------------------------------------------------------------

async function clone(env: TmEnv, req: Extract<TmRequest, { action: 'clone' | 'ln' }>): Promise<void> {
  checkVg(env, req.src, req.dst);
  const ctx = ctxOf(env, req.dst.host);
  const name = diskLv(req.vmId, req.dst.diskId);
  // One operation: one observation, the COW held from its lvcreate on, the image activated
  // meanwhile. A re-run after snapshots exist finds the disk there already (its parent is a
  // snapshot) and maps it as it is.
  const { created: r, mapped: m } = await createAndMapClone(
    ctx,
    { name, from: req.src.lv, ...cowOpts(env) },
    { reuseLive: true },
  );
  if (r.action !== 'none')
    env.info(`${r.action === 'created' ? 'created' : 'found'} COW clone ${env.vg}/${name} of ${req.src.lv}`);
  await link(ctx.runner, m.device!, req.dst);
  env.info(`${req.dst.path} -> ${m.device} on ${req.dst.host}`);
}

async function ln(env: TmEnv, req: Extract<TmRequest, { action: 'clone' | 'ln' }>): Promise<void> {
  checkVg(env, req.src, req.dst);
  const ctx = ctxOf(env, req.dst.host);
  const name = diskLv(req.vmId, req.dst.diskId);
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name);
  if (!(o?.kind === 'clone' && o.state === 'live')) {
    // mvds commits the COW back as the lineage's next sync-back.
    const head = await startPersistentCow(ctx, state, req.src.lv, name, cowOpts(env));
    env.info(`persistent ${req.src.lv}: COW ${name} on ${head}`);
  }
  const m = await mapClone(ctx, name);
  await link(ctx.runner, m.device!, req.dst);
}

async function mvds(env: TmEnv, req: Extract<TmRequest, { action: 'mvds' }>): Promise<void> {
  checkVg(env, req.dst, req.src, true);
  const ctx = ctxOf(env, req.src.host);
  const name = diskLv(req.vmId, req.src.diskId);
  const state = await observeNode(ctx);
  const target = await syncBack(ctx, state, name, req.dst.lv);
  env.info(
    target
      ? `synced ${name} back into ${req.dst.lv}'s lineage as ${target}`
      : `${name} is not in ${env.vg}: already synced back`,
  );
  await ctx.runner.run(fsReq.removeReq(req.src.path));
}

async function cpds(env: TmEnv, req: Extract<TmRequest, { action: 'cpds' }>): Promise<void> {
  checkVg(env, req.dst, req.src, true);
  const ctx = ctxOf(env, req.src.host);
  const name = req.snapId < 0 ? diskLv(req.vmId, req.src.diskId) : snapLv(req.vmId, req.src.diskId, req.snapId);
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name);
  if (!o)
    throw notFound(
      `${env.vg}/${name} does not exist`,
      req.snapId < 0
        ? 'the disk is not a cowstack disk of this VM'
        : `disk ${req.src.diskId} has no snapshot ${req.snapId}`,
    );
  if (o.kind !== 'clone') throw usageError(`${lvRef(o)} is a volatile disk: save-as copies image-backed disks`);
  const r =
    o.state === 'live' ? await saveLiveAsImage(ctx, name, req.dst.lv) : await flattenClone(ctx, name, req.dst.lv);
  env.info(`saved ${name} as image ${env.vg}/${req.dst.lv}${r.sha256 ? ` (sha256 ${r.sha256})` : ''}`);
}

// ---- delete / mv ----------------------------------------------------------------------------------

/** The first of `hosts` that answers, with its observation. */
async function reachable(env: TmEnv, hosts: string[]): Promise<{ host: string; state: NodeState } | undefined> {
  let last: unknown;
  for (const host of hosts) {
    try {
      const ctx = ctxOf(env, host);
      return { host, state: await observeNode(ctx, { caches: 'auto' }) };
    } catch (e) {
      if (!(e instanceof CowstackError && e.exitCode === EXIT.UNREACHABLE)) throw e;
      env.info(`host ${host} is unreachable`);
      last = e;
    }
  }
  if (last) throw last;
  return undefined;
}

async function del(env: TmEnv, req: Extract<TmRequest, { action: 'delete' }>): Promise<void> {
  const t = req.target;
  const fe = isFrontend(env, t.host);
  const candidates = fe ? env.hosts : [t.host, ...env.hosts.filter((h) => h !== t.host)];
  if (!candidates.length)
    throw usageError(
      `tm delete on the front-end ${t.host} needs a cluster node to remove LVs`,
      'list the nodes in tm.hosts in /etc/cowstack/cowstack.yaml',
    );
  const found = await reachable(env, candidates);
  const via = found!.host;
  const ctx = ctxOf(env, via);
  const state = found!.state;
  const names = new Set(t.diskId !== undefined ? diskLvs(state, diskLv(t.vmId, t.diskId)) : vmLvs(state, t.vmId));
  if (via !== t.host && !fe)
    env.info(`${t.host} is unreachable: removing ${names.size} LV(s) of VM ${t.vmId} through ${via}`);
  try {
    const removed = await removeLvs(ctx, names, state);
    if (removed.length) env.info(`removed ${removed.join(', ')}`);
  } catch (e) {
    if (e instanceof CowstackError && e.exitCode === EXIT.LOCK_CONFLICT && via !== t.host) {
      throw new CowstackError(EXIT.LOCK_CONFLICT, `${e.message} (${t.host} is unreachable and still holds the lease)`, {
        hint:
          'the lease of a dead host expires about 2-3 minutes after it stopped (sanlock); ' +
          `retry the delete then, or fence ${t.host} first`,
        data: e.data,
      });
    }
    throw e;
  }
  // The directory or link on a dead host goes with the host; on a live one it is removed.
  if (via === t.host || fe) {
    const r = fe ? env.runnerFor('localhost') : ctx.runner;
    await r.run(t.diskId === undefined ? fsReq.removeReq(t.vmDir, { recursive: true }) : fsReq.removeReq(t.path));
  }
}

/** Copy the regular files of a VM directory (context ISO, checkpoint) from one host to another. */
async function copyFiles(env: TmEnv, src: TmPath, dst: TmPath, only?: string): Promise<number> {
  const a = env.runnerFor(isFrontend(env, src.host) ? 'localhost' : src.host);
  const b = env.runnerFor(isFrontend(env, dst.host) ? 'localhost' : dst.host);
  const list = await a.run(fsReq.listFilesReq(src.vmDir));
  const files =
    list.exitCode === 0 ? list.stdout.split('\n').filter((f) => /^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$/.test(f)) : [];
  const chosen = only ? files.filter((f) => f === only) : files;
  if (!chosen.length) return 0;
  await b.run(fsReq.mkdirReq(dst.vmDir));
  const tmp = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-tm-'));
  try {
    for (const f of chosen) {
      const local = path.join(tmp, f);
      await a.run(fsReq.fetchFileReq(`${src.vmDir}/${f}`, local));
      await b.run(fsReq.storeFileReq(`${dst.vmDir}/${f}`, createReadStream(local), { timeout: 'data' }));
    }
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return chosen.length;
}

async function mv(env: TmEnv, req: Extract<TmRequest, { action: 'mv' }>): Promise<void> {
  const { src, dst } = req;
  if (src.host === dst.host) {
    if (src.path !== dst.path)
      throw usageError(
        `tm mv within ${src.host} from ${src.path} to ${dst.path} is not supported`,
        'cowstack disks move between hosts, not between directories',
      );
    return;
  }
  const feA = isFrontend(env, src.host);
  const feB = isFrontend(env, dst.host);
  const node = feA ? dst.host : src.host;
  const state = await observeNode(ctxOf(env, node));
  const tops = disksOf(state, req.vmId).filter(
    (o) => /^one-\d+-\d+$/.test(o.name) && (src.diskId === undefined || o.name === diskLv(req.vmId, src.diskId)),
  );
  // Source first: a live COW can be active on one host only.
  if (!feA) {
    const ctxA = ctxOf(env, src.host);
    for (const o of tops) await release(ctxA, state, o);
  }
  const moved = await copyFiles(env, src, dst, src.diskId === undefined ? undefined : `disk.${src.diskId}`);
  if (moved) env.info(`copied ${moved} file(s) from ${src.host} to ${dst.host}`);
  if (!feB) {
    const ctxB = ctxOf(env, dst.host);
    // attach decides from the disk's activation on B: `state` is A's when A is a node, where
    // a volatile disk was active (and is no longer) and would be linked on B unactivated.
    const onB = feA ? state : await observeNode(ctxB);
    for (const o of tops) {
      const device = await attach(ctxB, onB.repo.byName.get(o.name) ?? o);
      await link(ctxB.runner, device, { ...dst, path: `${dst.vmDir}/disk.${o.name.split('-')[2]}` });
    }
  }
  const a = env.runnerFor(feA ? 'localhost' : src.host);
  await a.run(src.diskId === undefined ? fsReq.removeReq(src.vmDir, { recursive: true }) : fsReq.removeReq(src.path));
  env.info(`moved ${tops.map((o) => o.name).join(', ') || 'no disks'} from ${src.host} to ${dst.host}`);
}

// ---- volatile disks, context, resize ---------------------------------------------------------------

async function mkimage(env: TmEnv, d: Disk, vmId: number, sizeMb: number, format: string): Promise<void> {
  const ctx = ctxOf(env, d.host);
  const name = diskLv(vmId, d.diskId);
  const r = await createImage(ctx, name, `${sizeMb}M`);
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name)!;
  if (o.kind !== 'image' || o.state !== 'writable')
    throw refused(`${lvRef(o)} exists and is not a volatile disk`, 'remove it, or check which VM owns it');
  const device = await attach(ctx, o);
  // Formatting only a disk this run created keeps a re-run from wiping a disk in use.
  if (r.action === 'created' && format !== 'raw') {
    if (format === 'swap') await ctx.runner.run({ ...blockData.mkswapReq(device), title: `format ${name} as swap` });
    else await ctx.runner.run({ ...blockData.mkfsReq(device, format), title: `format ${name} as ${format}` });
  }
  await link(ctx.runner, device, d);
  env.info(`volatile disk ${env.vg}/${name} (${sizeMb} MiB, ${format}) at ${d.path}`);
}

async function context(env: TmEnv, req: Extract<TmRequest, { action: 'context' }>): Promise<void> {
  for (const f of req.files)
    if (!existsSync(f.path)) throw notFound(`context file ${f.path} does not exist on the front-end`);
  const r = env.runnerFor(req.dst.host);
  const dir = `${req.dst.vmDir}/.context.${req.dst.diskId}`;
  await r.run(fsReq.removeReq(dir, { recursive: true }));
  await r.run(fsReq.mkdirReq(dir));
  for (const f of req.files) await r.run(fsReq.storeFileReq(`${dir}/${f.name}`, createReadStream(f.path)));
  // As fs_lvm does: an ISO 9660 image labelled CONTEXT, placed at D as a file.
  await r.run(fsReq.removeReq(req.dst.path));
  await r.run(fsReq.isoImageReq(req.dst.path, 'CONTEXT', dir));
  await r.run(fsReq.removeReq(dir, { recursive: true }));
  env.info(`context ISO with ${req.files.length} file(s) at ${req.dst.path} on ${req.dst.host}`);
}

async function resize(env: TmEnv, req: Extract<TmRequest, { action: 'resize' }>): Promise<void> {
  const ctx = ctxOf(env, req.target.host);
  const state = await observeNode(ctx);
  const o = topOf(state, req.target);
  if (!o)
    throw notFound(
      `disk ${req.target.diskId} of VM ${req.vmId} is not a cowstack disk ` +
        `(${env.vg}/${diskLv(req.vmId, req.target.diskId)} missing)`,
    );
  const bytes = req.sizeMb * 1024 * 1024;
  if (o.kind === 'clone') {
    const virtual = state.repo.chain(o).at(-1)!.sizeBytes;
    if (bytes > virtual) {
      throw refused(
        `disk ${req.target.diskId} of VM ${req.vmId} is a COW clone of a ${virtual / 1048576} MiB image and cannot ` +
          `grow to ${req.sizeMb} MiB`,
        "a copy-on-write disk has its image's size; save it as a new, larger image (or use a volatile disk) to grow it",
      );
    }
    // The COW can then hold a rewrite of the whole size asked for (plus dm-snapshot metadata).
    const cow = roundUp(bytes + Math.ceil(bytes / 64) + EXTENT, EXTENT);
    const r = await growClone(ctx, o.name, `${cow}`);
    env.info(
      `${lvRef(o)}: COW ${r.action === 'grown' ? 'grown' : 'already'} ${Math.round((r.cowBytes ?? 0) / 1048576)} MiB`,
    );
    return;
  }
  if ((await growVolatile(ctx, o, bytes)) === 'grown') env.info(`${lvRef(o)} grown to ${req.sizeMb} MiB`);
}

// ---- snapshots --------------------------------------------------------------------------------------

/**
 * Map a chain whose LVs this host has just released (commit, rename). Under a slow path to
 * the LUN, sanlock's release of the exclusive lease may still be in flight when the shared
 * activation asks for it, which lvmlockd reports as "locked by other host" although the
 * holder is this very host: ask again a few times before calling it a conflict.
 */
async function mapOwnRelease(env: TmEnv, ctx: NodeSession, name: string) {
  return withLockRetry(ctx, () => mapClone(ctx, name), {
    on: 'own-release',
    onRetry: (e, next, attempts) =>
      env.info(`${(e as Error).message}: this host released it moments ago, asking again (${next}/${attempts})`),
  });
}

async function snapshot(
  env: TmEnv,
  req: Extract<TmRequest, { action: 'snap_create' | 'snap_delete' | 'snap_revert' | 'snap_create_live' }>,
): Promise<void> {
  const d = req.target;
  if (req.action === 'snap_create_live') {
    throw refused(
      `live disk snapshots are not supported by cowstack (VM ${req.vmId} disk ${d.diskId})`,
      "power the VM off and take the snapshot then: a snapshot commits the disk's COW, which needs it closed",
    );
  }
  const ctx = ctxOf(env, d.host);
  const top = diskLv(req.vmId, d.diskId);
  const snap = snapLv(req.vmId, d.diskId, req.snapId);
  const state = await observeNode(ctx);
  const sd: DiskSnapshot = {
    top,
    snap,
    snapId: req.snapId,
    disk: `disk ${d.diskId} of VM ${req.vmId}`,
    snapshot: `snapshot ${req.snapId} of disk ${d.diskId} (VM ${req.vmId})`,
  };
  const relink = async () => link(ctx.runner, (await mapOwnRelease(env, ctx, top)).device!, d);
  if (req.action === 'snap_delete') {
    if ((await deleteSnapshot(ctx, state, sd)) === 'none') return env.info(`${snap} does not exist: nothing to delete`);
    return env.info(`deleted snapshot ${snap}`);
  }
  if (req.action === 'snap_revert') {
    await revertSnapshot(ctx, state, sd, cowOpts(env));
    await relink();
    return env.info(`disk ${d.diskId} reverted to snapshot ${req.snapId}`);
  }
  if ((await takeSnapshot(ctx, state, sd, cowOpts(env))) === 'done') return relink();
  await relink();
  env.info(`snapshot ${req.snapId} of disk ${d.diskId}: ${snap}`);
}

// ---- backups -----------------------------------------------------------------------------------------

type BackupRequest = Extract<TmRequest, { action: 'prebackup' | 'prebackup_live' | 'postbackup' | 'postbackup_live' }>;

/**
 * Fill `<vm_dir>/backup` as OpenNebula's drivers do, for the backup datastore's driver to
 * take: `vm.xml` (the VM XML, base64) and `disk.<id>.<N>` per disk (core/backups.ts). In
 * incremental mode the backup point is a commit, so the disk is linked again to its new top.
 * prebackup_live (a running VM) takes the point without closing the disk (core/livePoint.ts),
 * also in full mode, so that the file is one consistent point of the disk.
 */
async function prebackup(env: TmEnv, req: BackupRequest): Promise<void> {
  const increment = backupIncrement(req.xml);
  const ctx = ctxOf(env, req.host);
  const dir = `${req.vmDir}/backup`;
  await ctx.runner.run(backupFiles.removeTreeReq(dir));
  await ctx.runner.run(backupFiles.mkdirReq(dir));
  await ctx.runner.run(installFileReq(`${dir}/vm.xml`, Buffer.from(req.xml).toString('base64'), '0600'));
  for (const diskId of req.diskIds) {
    const top = diskLv(req.vmId, diskId);
    const file = `${dir}/disk.${diskId}.${increment ?? 0}`;
    const live = req.action === 'prebackup_live';
    const b = await backupDisk(ctx, { top, file, increment, cow: cowOpts(env), live, keepMapped: true });
    // After a backup point the disk is its new top, left mapped by backupDisk: the link follows it.
    if (b.point) {
      const d = parseTmPath(`${req.host}:${req.vmDir}/disk.${diskId}`, 'disk', { vmId: req.vmId, dir: 'no' });
      await link(ctx.runner, b.device ?? (await mapClone(ctx, top)).device!, d);
    }
    const what = b.kind === 'full' ? 'full backup' : `increment ${increment} (${b.ranges!.length} changed range(s))`;
    const cached = b.writeback
      ? `; write-back cache drained (${b.writeback.drainedBlocks} block(s) before the pause), ` +
        `new one ${b.writeback.cache}`
      : '';
    const pause = b.pauseMs === undefined ? '' : ` (VM disk paused ${b.pauseMs} ms${cached})`;
    // The depth, where a point was taken: each one deepens the disk (points are not merged).
    const depth = b.point && b.levels !== undefined ? `; the disk now stands on ${b.levels} snapshot level(s)` : '';
    env.info(
      `disk ${diskId}: ${what} of ${b.bytes} bytes in ${file}${b.point ? ` at point ${b.point}` : ''}${pause}${depth}`,
    );
  }
}

/** oned's restore of a powered-off VM's disks from a backup image: src/tm/restore.ts. */
async function restoreVm(env: TmEnv, req: RestoreRequest): Promise<void> {
  const ctx = ctxOf(env, req.host);
  const remotes = validateBackupPath(env.oneRemotes ?? DEFAULT_ONE_REMOTES, 'OpenNebula remotes directory');
  await restore(
    {
      ctx,
      local: env.runnerFor('localhost'),
      remotes,
      cow: cowOpts(env),
      dryRun: env.dryRun,
      info: env.info,
      link: (device, p) => link(ctx.runner, device, parseTmPath(`${req.host}:${p}`, 'disk', { vmId: req.vmId })),
    },
    req,
  );
}

async function backup(env: TmEnv, req: BackupRequest): Promise<void> {
  if (req.action === 'prebackup' || req.action === 'prebackup_live') return prebackup(env, req);
  // After the datastore driver took the files (or failed to): they go, the backup points stay.
  await env.runnerFor(req.host).run(backupFiles.removeTreeReq(`${req.vmDir}/backup`));
}

// ---- monitor, migration hooks, activate ----------------------------------------------------------------

async function monitor(env: TmEnv, req: Extract<TmRequest, { action: 'monitor' }>): Promise<void> {
  const bridges = (xmlValue(req.xml, 'BRIDGE_LIST') ?? '')
    .split(/\s+/)
    .filter((h) => /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(h));
  const hosts = [...new Set([...bridges, ...env.hosts])];
  if (!hosts.length)
    throw usageError(
      `tm monitor of datastore ${req.dsId} needs a cluster node to ask`,
      'set BRIDGE_LIST on the datastore, or tm.hosts in /etc/cowstack/cowstack.yaml',
    );
  const found = await reachable(env, hosts);
  const [vg] = await lvm.vgs(env.runnerFor(found!.host), env.vg, env.scope);
  if (!vg) throw notFound(`repository VG ${env.vg} is not visible on ${found!.host}`);
  // oned sets MONITOR_VM_DISKS=1 only every DS_MONITOR_VM_DISK cycles, and 0 otherwise: the
  // per-host round trips are spared then. Without the element (run by hand) they are reported.
  const disks = xmlValue(req.xml, 'MONITOR_VM_DISKS') === '0' ? [] : await vmDiskUsage(env, found!.state, hosts);
  env.out(totalsText(vg) + vmDisksText(disks));
}

/**
 * Each VM disk's real use. A volatile disk is a plain LV, allocated whole. A COW clone holds
 * only what was written to it: the allocated sectors in its snapshot's status, which only the
 * kernel of a host that maps it knows (one `dmsetup status` per host, and only when there are
 * clones to look for). A clone mapped nowhere reachable has no figure: oned keeps the last one.
 */
async function vmDiskUsage(env: TmEnv, state: NodeState, hosts: string[]): Promise<DiskUsage[]> {
  const disks = [...state.repo.byName.values()].flatMap((o) => {
    const id = parseVmLv(o.name);
    return id ? [{ o, id }] : [];
  });
  const out: DiskUsage[] = disks.filter((d) => d.o.kind === 'image').map((d) => ({ ...d.id, bytes: d.o.sizeBytes }));
  const clones = disks.filter((d) => d.o.kind === 'clone');
  if (!clones.length) return out;
  const used = new Map<string, number>();
  for (const host of hosts) {
    let statuses: Map<string, dmsetup.DmLine[]>;
    try {
      statuses = await dmsetup.statusAll(env.runnerFor(host));
    } catch (e) {
      if (!(e instanceof CowstackError && e.exitCode === EXIT.UNREACHABLE)) throw e;
      env.info(`host ${host} is unreachable: its VM disks are not measured`);
      continue;
    }
    for (const { o } of clones) {
      if (used.has(o.name)) continue;
      // The writable device of a running disk; a snapshot is mapped read-only under it.
      const u = usageOf((statuses.get(dmName('rw', o.uuid)) ?? statuses.get(dmName('ro', o.uuid)))?.[0], 100);
      // An overflowed COW reports no counts: it is full, its whole LV is used.
      if (u?.allocatedBytes !== undefined) used.set(o.name, u.allocatedBytes);
      else if (u?.state === 'overflow') used.set(o.name, o.sizeBytes);
    }
  }
  for (const { o, id } of clones) if (used.has(o.name)) out.push({ ...id, bytes: used.get(o.name)! });
  return out;
}

async function activate(env: TmEnv, host: string): Promise<void> {
  const ctx = ctxOf(env, host);
  const rec = await recover(ctx);
  env.info(`recover on ${host}: ${rec.actions.length} action(s)`);
  const found = await ctx.runner.run(fsReq.findLinksReq(DS_LOCATION, 3, 'disk.*'));
  const links = found.exitCode === 0 ? found.stdout.split('\n').filter(Boolean) : [];
  const state = await observeNode(ctx);
  let failed: unknown;
  for (const l of links) {
    let d: TmPath;
    try {
      d = parseTmPath(`${host}:${l}`, 'disk link', { dir: 'no' });
    } catch {
      continue; // not a disk path of ours
    }
    if (env.vgOf && env.vgOf(d.dsId) !== env.vg) continue; // another repository's disk: its own pass
    const o = state.repo.byName.get(diskLv(d.vmId, d.diskId!));
    if (!o || (o.kind === 'clone' && o.state !== 'live')) continue;
    try {
      const device = await attach(ctx, o);
      await link(ctx.runner, device, d);
      env.info(`${d.path} -> ${device}`);
    } catch (e) {
      // One disk that cannot come up (e.g. a stale link of a VM another host runs since a
      // failover, its COW locked there) must not keep the other VMs' disks down: go on, fail after.
      env.info(`${d.path}: ${(e as Error).message}`);
      failed ??= e;
    }
  }
  if (failed) throw failed;
}

// ---- live migration (README "Live migration"; the hand-over itself: vmm/kvm/migrate) -----------

type MigrateRequest = Extract<TmRequest, { action: 'premigrate' | 'postmigrate' | 'failmigrate' }>;

/** The VM's disks that live migration hands over: its live clones. A volatile disk has no hand-over: refused. */
async function migratingDisks(ctx: NodeSession, req: MigrateRequest): Promise<Array<{ name: string; diskId: number }>> {
  const state = await observeNode(ctx);
  const tops = disksOf(state, req.vmId).filter((o) => /^one-\d+-\d+$/.test(o.name));
  const volatile = tops.filter((o) => o.kind === 'image');
  if (volatile.length && req.action === 'premigrate')
    throw refused(
      `VM ${req.vmId} has volatile disk(s) ${volatile.map((o) => o.name).join(', ')}: live migration hands over ` +
        'image-backed (clone) disks only',
      'use cold migration for this VM (poweroff, migrate, resume)',
    );
  return tops
    .filter((o) => o.kind === 'clone' && o.state === 'live')
    .map((o) => ({ name: o.name, diskId: Number(o.name.split('-')[2]) }));
}

const diskLink = (req: MigrateRequest, diskId: number) => `${req.vmDir}/disk.${diskId}`;

/**
 * Destination, before the VMM migrate: the VM directory's files (context ISO...) copied over,
 * each clone disk prepared (ancestors mapped, an EIO placeholder under the disk's final device
 * name) and linked where qemu opens it. The hand-over happens in the VMM migrate action.
 */
async function premigrate(env: TmEnv, req: MigrateRequest): Promise<void> {
  const ctx = ctxOf(env, req.dstHost);
  const disks = await migratingDisks(ctx, req);
  const dir = { host: req.srcHost, path: req.vmDir, vmDir: req.vmDir, vmId: req.vmId, dsId: req.dsId };
  const copied = await copyFiles(env, dir, { ...dir, host: req.dstHost });
  if (copied) env.info(`copied ${copied} file(s) of ${req.vmDir} from ${req.srcHost} to ${req.dstHost}`);
  for (const d of disks) {
    const r = await prepareMigration(ctx, d.name);
    await link(ctx.runner, r.device!, { ...dir, host: req.dstHost, path: diskLink(req, d.diskId) });
    env.info(`${req.dstHost}: ${d.name} prepared (${r.action}), ${diskLink(req, d.diskId)} -> ${r.device}`);
  }
}

/**
 * After the VMM migrate: the source releases what it still holds (a no-op after the VMM
 * action's release, apart from the ancestors nothing uses any more), the destination acquires
 * (a no-op when the VMM action did).
 */
async function postmigrate(env: TmEnv, req: MigrateRequest): Promise<void> {
  const src = ctxOf(env, req.srcHost);
  const dst = ctxOf(env, req.dstHost);
  for (const d of await migratingDisks(src, req)) {
    const released = await releaseMigration(src, d.name);
    const acquired = await acquireMigration(dst, d.name);
    env.info(`${d.name}: ${req.srcHost} ${released.action}, ${req.dstHost} ${acquired.action}`);
    await src.runner.run(fsReq.removeReq(diskLink(req, d.diskId)));
  }
}

/** The migration failed: the destination's placeholders and links go; the source kept running untouched. */
async function failmigrate(env: TmEnv, req: MigrateRequest): Promise<void> {
  const ctx = ctxOf(env, req.dstHost);
  for (const d of await migratingDisks(ctx, req)) {
    const r = await abortMigration(ctx, d.name);
    env.info(`${req.dstHost}: ${d.name} ${r.action}${r.warnings ? ` (${r.warnings.join('; ')})` : ''}`);
    // A destination that holds the disk (the hand-over completed) keeps its link.
    if (!r.warnings?.length) await ctx.runner.run(fsReq.removeReq(diskLink(req, d.diskId)));
  }
}

export async function runTm(env: TmEnv, req: TmRequest): Promise<void> {
  switch (req.action) {
    case 'clone':
      return clone(env, req);
    case 'ln':
      return ln(env, req);
    case 'mvds':
      return mvds(env, req);
    case 'cpds':
      return cpds(env, req);
    case 'mv':
      return mv(env, req);
    case 'delete':
      return del(env, req);
    case 'mkimage':
      return mkimage(env, req.dst, req.vmId, req.sizeMb, req.format);
    case 'mkswap':
      return mkimage(env, req.dst, req.vmId, req.sizeMb, 'swap');
    case 'context':
      return context(env, req);
    case 'resize':
      return resize(env, req);
    case 'premigrate':
      return premigrate(env, req);
    case 'postmigrate':
      return postmigrate(env, req);
    case 'failmigrate':
      return failmigrate(env, req);
    case 'snap_create':
    case 'snap_create_live':
    case 'snap_delete':
    case 'snap_revert':
      return snapshot(env, req);
    case 'monitor':
      return monitor(env, req);
    case 'activate':
      return activate(env, req.host);
    case 'prebackup':
    case 'prebackup_live':
    case 'postbackup':
    case 'postbackup_live':
      return backup(env, req);
    case 'restore':
      return restoreVm(env, req);
  }
}

/** Transient lock manager errors (see core/locks.ts): every TM action is idempotent, so it is run again. */
export { isTransientLockError };

/** Runs the action, again from a fresh observation on a transient lock error (lockPolicy.action). */
export async function runTmWithRetry(env: TmEnv, req: TmRequest): Promise<void> {
  return retryAction(env.lockPolicy, env.info, () => runTm(env, req));
}

export const defaultFrontends = (): string[] => [hostname(), hostname().split('.')[0]!];
