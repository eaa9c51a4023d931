/**
 * Bringing a node into the cluster: lvm.conf/lvmlocal.conf settings, the lock daemons,
 * the shared repository VG (init) or its lockspace (join), and a status report.
 * Every step checks first and changes only what differs, so re-running is a no-op.
 */
import { CowstackError, EXIT, notFound, refused } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as blockData from '../tools/blockData.js';
import * as blockdev from '../tools/blockdev.js';
import { readFile, realpath, pidof, writeFileReqs } from '../tools/files.js';
import * as host from '../tools/host.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import { hasSystemd, startDaemonReq } from '../tools/service.js';
import { hostMapFromTags, hostTag, HOST_TAG_PREFIX } from './hostMap.js';
import { DEFAULT_MAX_LVS, sizingFor, type Sizing } from './capacity.js';
import { compactUuid } from './dmNames.js';
import { leaseOwners } from './locks.js';
import { getConfValue, setConfValue } from './lvmConf.js';
import type { NodeSession } from './node.js';
import { runGuarded } from './executor.js';
import type { Step } from './plan.js';
import { validateDevicePath, validateHostId, validateVgName } from './validate.js';

export const LVM_CONF = '/etc/lvm/lvm.conf';
export const LVMLOCAL_CONF = '/etc/lvm/lvmlocal.conf';

export interface NodeSetup {
  vg: string;
  hostId: number;
  lockType: 'sanlock' | 'dlm';
  /** Name recorded for this host id (defaults to the node's hostname). */
  hostName?: string;
}

export interface ClusterReport {
  vg: string;
  hostId: number;
  hostName: string;
  changed: string[];
  lockspace: string;
  /** cluster init only: how the new VG was sized and what lease space it will need. */
  sizing?: Sizing;
}

/** Steps that make lvm.conf use lvmlockd and lvmlocal.conf carry this host's id. */
export async function configSteps(runner: Runner, setup: NodeSetup): Promise<{ steps: Step[]; changed: string[] }> {
  const steps: Step[] = [];
  const changed: string[] = [];
  const lvmConf = (await readFile(runner, LVM_CONF)) ?? '';
  if (getConfValue(lvmConf, 'global', 'use_lvmlockd') !== '1') {
    changed.push(`${LVM_CONF}: global/use_lvmlockd = 1`);
    steps.push(...fileSteps(LVM_CONF, lvmConf, setConfValue(lvmConf, 'global', 'use_lvmlockd', 1)));
  }
  const local = (await readFile(runner, LVMLOCAL_CONF)) ?? '';
  const current = getConfValue(local, 'local', 'host_id');
  if (current !== String(setup.hostId)) {
    if (current && current !== '0' && (await lockspaceStarted(runner, setup.vg))) {
      throw refused(
        `this node already runs the lockspace of ${setup.vg} with host_id ${current}; ` +
          `refusing to change it to ${setup.hostId}`,
        `stop the lockspace first: vgchange --lockstop ${setup.vg}`,
      );
    }
    changed.push(`${LVMLOCAL_CONF}: local/host_id = ${setup.hostId}`);
    steps.push(...fileSteps(LVMLOCAL_CONF, local, setConfValue(local, 'local', 'host_id', setup.hostId)));
  }
  return { steps, changed };
}

/** Back up the original once, then replace the file. */
function fileSteps(path: string, before: string, after: string): Step[] {
  const [write, rename] = writeFileReqs(path, after);
  return [
    {
      title: `back up ${path}`,
      req: host.backupOnceReq(path),
    },
    { title: `update ${path}`, req: write!, undo: [...writeFileReqs(path, before)] },
    { title: `install ${path}`, req: rename! },
  ];
}

export async function daemonSteps(runner: Runner, lockType: 'sanlock' | 'dlm'): Promise<Step[]> {
  const steps: Step[] = [];
  const systemd = await hasSystemd(runner);
  if (lockType === 'sanlock' && !(await pidof(runner, 'sanlock')).length) {
    steps.push({ title: 'start sanlock', req: startDaemonReq('sanlock', systemd) });
  }
  if (!(await pidof(runner, 'lvmlockd')).length) {
    steps.push({ title: 'start lvmlockd', req: startDaemonReq('lvmlockd', systemd, lockType) });
  }
  return steps;
}

export async function lockspaceStarted(runner: Runner, vg: string): Promise<boolean> {
  const r = await runner.run(sanlock.clientGetsReq());
  return r.exitCode === 0 && sanlock.parseGets(r.stdout).some((l) => l.name === sanlock.lockspaceName(vg));
}

async function waitForLvmlockd(runner: Runner): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const r = await runner.run(sanlock.lvmlockctlInfoReq());
    if (r.exitCode === 0) return;
    await new Promise((res) => setTimeout(res, 500));
  }
  throw new CowstackError(EXIT.TIMEOUT, 'lvmlockd did not answer within 30s after starting', {
    hint: 'check the lvmlockd log (journalctl -u lvmlockd) and that sanlock runs',
  });
}

async function hostName(runner: Runner, given?: string): Promise<string> {
  if (given) return given;
  return host.nodeName(runner);
}

async function prepareNode(ctx: NodeSession, setup: NodeSetup): Promise<string[]> {
  const { runner } = ctx;
  validateVgName(setup.vg);
  validateHostId(setup.hostId);
  const { steps, changed } = await configSteps(runner, setup);
  await runGuarded(ctx, steps);
  const daemons = await daemonSteps(runner, setup.lockType);
  await runGuarded(ctx, daemons);
  if (daemons.length && !ctx.dryRun) await waitForLvmlockd(runner);
  return [...changed, ...daemons.map((d) => d.title)];
}

async function lockstartAndRegister(ctx: NodeSession, setup: NodeSetup, name: string): Promise<string[]> {
  const { runner } = ctx;
  const changed: string[] = [];
  if (!(await lockspaceStarted(runner, setup.vg))) {
    await runGuarded(ctx, [
      {
        title: `start lockspace of ${setup.vg} (sanlock joins: tens of seconds)`,
        req: lvm.lockStartReq(setup.vg),
      },
    ]);
    changed.push(`lockspace ${sanlock.lockspaceName(setup.vg)} started`);
  }
  // Record host_id -> name so lock conflicts can name the holder; replace a stale entry.
  const vg = (await lvm.vgs(runner, setup.vg))[0];
  const wanted = hostTag(setup.hostId, name);
  const tags = vg?.tags ?? [];
  if (!tags.includes(wanted)) {
    const owner = hostMapFromTags(tags).get(setup.hostId);
    if (owner && owner !== name) {
      throw refused(
        `host_id ${setup.hostId} is already registered to ${owner} in ${setup.vg}`,
        `give this node another --host-id, or if ${owner} is gone for good: ` +
          `vgchange --deltag ${hostTag(setup.hostId, owner)} ${setup.vg}`,
      );
    }
    const stale = tags.filter(
      (t) =>
        t.startsWith(HOST_TAG_PREFIX) && hostMapFromTags([t]).get(setup.hostId) === undefined && t.endsWith(`:${name}`),
    );
    await runGuarded(ctx, [
      {
        title: `register host_id ${setup.hostId} as ${name}`,
        req: lvm.tagVgReq(setup.vg, { del: stale, add: [wanted] }),
      },
    ]);
    changed.push(`registered host_id ${setup.hostId} = ${name}`);
  }
  return changed;
}

export interface InitOptions extends NodeSetup {
  device: string;
  force?: boolean;
  /** LVs the VG's metadata area is sized for (default DEFAULT_MAX_LVS). */
  maxLvs?: number;
}

export async function clusterInit(ctx: NodeSession, o: Omit<InitOptions, 'vg'>): Promise<ClusterReport> {
  const { runner, dryRun = false } = ctx;
  const opts: InitOptions = { ...o, vg: ctx.vg };
  validateDevicePath(opts.device);
  const name = await hostName(runner, opts.hostName);
  const real = await realpath(runner, opts.device);
  if (!real)
    throw notFound(
      `device ${opts.device} does not exist on ${runner.target}`,
      'log in to the repository LUN first: cowstack initiator login PORTAL IQN',
    );
  const changed = await prepareNode(ctx, opts);
  let sizing: Sizing | undefined;
  const existing = (await lvm.vgs(runner, opts.vg))[0];
  if (existing) {
    if (!existing.shared || existing.lockType !== opts.lockType) {
      throw refused(
        `VG ${opts.vg} exists but is not a shared ${opts.lockType} VG (lock type "${existing.lockType || 'none'}")`,
        `convert it with vgchange --lock-type ${opts.lockType}, or pick another --vg`,
      );
    }
    const pv = (await lvm.pvs(runner)).find((p) => p.vg === opts.vg);
    const pvReal = pv && (await realpath(runner, pv.name));
    if (pvReal !== real)
      throw refused(
        `VG ${opts.vg} already exists on ${pv?.name ?? 'another device'}, not on ${opts.device}`,
        'use cowstack cluster join on this node, or pick another --vg',
      );
  } else {
    let pv: lvm.PvInfo | undefined;
    for (const p of await lvm.pvs(runner)) if ((await realpath(runner, p.name)) === real) pv = p;
    if (pv && pv.vg)
      throw refused(
        `${opts.device} already belongs to VG ${pv.vg}`,
        'pick another device; cowstack never reuses a PV of another VG',
      );
    const sig = await runner.run(blockData.signaturesReq(real));
    if (sig.exitCode === 0 && sig.stdout.trim() && !opts.force) {
      throw refused(
        `${opts.device} is not empty: ${sig.stdout.trim().split('\n').join(', ')}`,
        'wipe it yourself (wipefs -a) or pass --force to let cowstack wipe it',
      );
    }
    // The lease spacing follows the LUN's physical sector size: part of the sizing explained.
    sizing = sizingFor(opts.maxLvs ?? DEFAULT_MAX_LVS, await blockdev.physicalBlockSize(runner, real));
    const steps: Step[] = [];
    if (sig.exitCode === 0 && opts.force)
      steps.push({
        title: `wipe signatures on ${opts.device}`,
        req: blockData.wipeSignaturesReq(real),
      });
    steps.push({
      title: `create shared VG ${opts.vg} on ${opts.device} (${opts.lockType})`,
      req: lvm.createVgReq(opts.vg, opts.device, { lockType: opts.lockType, metadataMiB: sizing.metadataMiB }),
      undo: [lvm.removeVgReq(opts.vg)],
    });
    await runGuarded(ctx, steps);
    changed.push(`created VG ${opts.vg} (metadata area ${sizing.metadataMiB} MiB for ${sizing.maxLvs} LVs)`);
  }
  if (!dryRun) changed.push(...(await lockstartAndRegister(ctx, opts, name)));
  return {
    vg: opts.vg,
    hostId: opts.hostId,
    hostName: name,
    changed,
    lockspace: sanlock.lockspaceName(opts.vg),
    ...(sizing ? { sizing } : {}),
  };
}

export async function clusterJoin(ctx: NodeSession, o: Omit<NodeSetup, 'vg'>): Promise<ClusterReport> {
  const { runner, dryRun = false } = ctx;
  const opts: NodeSetup = { ...o, vg: ctx.vg };
  const name = await hostName(runner, opts.hostName);
  const changed = await prepareNode(ctx, opts);
  if (!dryRun) {
    const vg = (await lvm.vgs(runner, opts.vg))[0];
    if (!vg)
      throw notFound(
        `VG ${opts.vg} is not visible on ${runner.target}`,
        'log in to the repository LUN first (cowstack initiator login PORTAL IQN), ' +
          'or create the VG with cowstack cluster init',
      );
    if (!vg.shared)
      throw refused(`VG ${opts.vg} is not a shared (lvmlockd) VG`, 'create it with cowstack cluster init');
    changed.push(...(await lockstartAndRegister(ctx, opts, name)));
  }
  return { vg: opts.vg, hostId: opts.hostId, hostName: name, changed, lockspace: sanlock.lockspaceName(opts.vg) };
}

export interface ClusterStatus {
  vg: string;
  visible: boolean;
  shared: boolean;
  lockType: string;
  thisHost: { name: string; hostId?: number; lockspaceStarted: boolean };
  hosts: Array<{ hostId: number; name?: string; live: boolean; timestamp?: number }>;
  locks: Array<{ lv: string; uuid: string; ownerHostId: number; owner?: string; mode: 'exclusive' | 'shared' }>;
}

export async function clusterStatus(ctx: NodeSession): Promise<ClusterStatus> {
  const { runner, vg: vgName } = ctx;
  validateVgName(vgName);
  const name = await hostName(runner);
  const local = (await readFile(runner, LVMLOCAL_CONF)) ?? '';
  const hostIdText = getConfValue(local, 'local', 'host_id');
  const vg = (await lvm.vgs(runner, vgName))[0];
  const gets = await runner.run(sanlock.clientGetsReq());
  const ls =
    gets.exitCode === 0
      ? sanlock.parseGets(gets.stdout).find((l) => l.name === sanlock.lockspaceName(vgName))
      : undefined;
  const names = hostMapFromTags(vg?.tags ?? []);
  const hosts = new Map<number, ClusterStatus['hosts'][number]>();
  for (const [id, n] of names) hosts.set(id, { hostId: id, name: n, live: false });
  for (const h of ls?.hosts ?? []) {
    hosts.set(h.hostId, {
      hostId: h.hostId,
      name: names.get(h.hostId),
      live: /LIVE/i.test(h.flags),
      timestamp: h.timestamp,
    });
  }
  const locks: ClusterStatus['locks'] = [];
  if (vg && ls) {
    const lvs = await lvm.lvs(runner, vgName);
    const owners = await leaseOwners(runner, vgName, lvs, vg.tags);
    for (const lv of lvs) {
      const o = owners.get(compactUuid(lv.uuid));
      if (o) locks.push({ lv: lv.name, uuid: lv.uuid, ownerHostId: o.hostId, owner: o.host, mode: 'exclusive' });
    }
  }
  return {
    vg: vgName,
    visible: Boolean(vg),
    shared: Boolean(vg?.shared),
    lockType: vg?.lockType ?? '',
    thisHost: { name, hostId: hostIdText ? Number(hostIdText) : undefined, lockspaceStarted: Boolean(ls) },
    hosts: [...hosts.values()].sort((a, b) => a.hostId - b.hostId),
    locks,
  };
}
