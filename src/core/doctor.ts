/**
 * `cowstack doctor`: every check runs even when others fail, and each one says how to
 * fix what it found. Reads only: doctor never changes a node.
 */
import { CowstackError } from '../exec/errors.js';
import type { RunRequest, Runner } from '../exec/types.js';
import * as blockdev from '../tools/blockdev.js';
import * as cacheCheck from '../tools/cacheCheck.js';
import { listDirReq, pidof, readFile, readOwnFileReq, realpathReq } from '../tools/files.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as host from '../tools/host.js';
import * as iscsi from '../tools/iscsiadm.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import * as udevadm from '../tools/udevadm.js';
import { repoCapacity } from './capacity.js';
import { LVMLOCAL_CONF } from './cluster.js';
import { CONFIG_PATH, SUDOERS_PATH, UDEV_RULE_PATH } from './install.js';
import { hostMapFromTags } from './hostMap.js';
import { getConfValue } from './lvmConf.js';
import { JOURNAL_DIR } from '../tools/flock.js';
import { readJournalSync, type JournalSync } from './journalSync.js';
import type { NodeSession } from './node.js';
import { formatSize } from './validate.js';

export type CheckStatus = 'ok' | 'warning' | 'error';
export interface Check {
  id: string;
  status: CheckStatus;
  message: string;
  fix?: string;
  /** The repository VG a repository check is about. */
  vg?: string;
}
export interface DoctorReport {
  host: string;
  /** The repository VGs checked. */
  vgs: string[];
  ok: boolean;
  errors: number;
  warnings: number;
  checks: Check[];
}

/** Programs cowstack drives, how to ask each for its version, and the package that ships it. */
const PROGRAMS: Array<{ name: string; req: RunRequest; pkg: string; pattern: RegExp; optional?: boolean }> = [
  { name: 'lvm', req: lvm.versionReq(), pkg: 'lvm2', pattern: /LVM version:\s*(\S+)/ },
  { name: 'dmsetup', req: dmsetup.versionReq(), pkg: 'dmsetup', pattern: /Library version:\s*(\S+)/ },
  { name: 'blockdev', req: blockdev.versionReq(), pkg: 'util-linux', pattern: /util-linux\s+(\S+)/ },
  { name: 'iscsiadm', req: iscsi.versionReq(), pkg: 'open-iscsi', pattern: /version\s+(\S+)/ },
  { name: 'sanlock', req: sanlock.versionReq(), pkg: 'sanlock', pattern: /(\d+\.\d+[\w.-]*)/ },
  { name: 'lvmlockctl', req: sanlock.lvmlockctlProbeReq(), pkg: 'lvm2-lockd', pattern: /()/ },
  { name: 'udevadm', req: udevadm.versionReq(), pkg: 'udev', pattern: /(\d+)/ },
  {
    name: 'cache_check',
    req: cacheCheck.versionReq(),
    pkg: 'thin-provisioning-tools',
    pattern: /(\d+\.\d+\.\d+)/,
    optional: true,
  },
];

const REQUIRED_TARGETS = ['linear', 'snapshot', 'cache', 'writecache'];

export interface DoctorOptions {
  /** Capacity warnings at this percentage (config capacity.warnPercent). */
  warnPercent?: number;
  /** The repository VGs to check (default: the session's VG). */
  vgs?: readonly string[];
}

/** Checks the session's node and its repository VGs. */
export async function doctor(ctx: NodeSession, o: DoctorOptions = {}): Promise<DoctorReport> {
  const { runner } = ctx;
  const opts = { ...o, vgs: o.vgs?.length ? [...new Set(o.vgs)] : [ctx.vg] };
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  const guard = async (id: string, fn: () => Promise<void>, vg?: string) => {
    try {
      await fn();
    } catch (e) {
      const err = e as CowstackError;
      add({ id, status: 'error', message: err.message, fix: err.hint, ...(vg ? { vg } : {}) });
    }
  };

  for (const p of PROGRAMS) {
    const id = `program:${p.name}`;
    try {
      const r = await runner.run(p.req);
      const version = p.pattern.exec(`${r.stdout}\n${r.stderr}`)?.[1];
      add({ id, status: 'ok', message: `${p.name} ${version || 'present'}` });
    } catch (e) {
      add({
        id,
        status: p.optional ? 'warning' : 'error',
        message: (e as Error).message,
        fix: `apt-get install ${p.pkg}   (or dnf install ${p.pkg})`,
      });
    }
  }

  await guard('kernel:dm-targets', async () => {
    const targets = await dmsetup.targets(runner);
    const missing = REQUIRED_TARGETS.filter((t) => !targets.has(t));
    add(
      missing.length
        ? {
            id: 'kernel:dm-targets',
            status: 'error',
            message: `device-mapper targets not loaded: ${missing.join(', ')}`,
            fix: `modprobe ${missing.map((t) => `dm-${t}`).join(' ')}`,
          }
        : {
            id: 'kernel:dm-targets',
            status: 'ok',
            message: REQUIRED_TARGETS.map((t) => `${t} ${targets.get(t)}`).join(', '),
          },
    );
  });

  for (const [daemon, fix] of [
    ['iscsid', 'systemctl enable --now iscsid'],
    ['sanlock', 'cowstack cluster join (starts sanlock), or systemctl enable --now sanlock'],
    ['lvmlockd', 'cowstack cluster join (starts lvmlockd), or systemctl enable --now lvmlockd'],
  ] as const) {
    await guard(`daemon:${daemon}`, async () => {
      const pids = await pidof(runner, daemon);
      add(
        pids.length
          ? { id: `daemon:${daemon}`, status: 'ok', message: `${daemon} running (pid ${pids.join(' ')})` }
          : { id: `daemon:${daemon}`, status: 'error', message: `${daemon} is not running`, fix },
      );
    });
  }

  await guard('lvm:use_lvmlockd', async () => {
    const v = await lvm.lvmconfigValue(runner, 'global/use_lvmlockd');
    add(
      v === '1'
        ? { id: 'lvm:use_lvmlockd', status: 'ok', message: 'lvm.conf global/use_lvmlockd = 1' }
        : {
            id: 'lvm:use_lvmlockd',
            status: 'error',
            message: `lvm.conf global/use_lvmlockd is ${v ?? 'unset'}`,
            fix: 'cowstack cluster join --host-id N (sets it), or edit /etc/lvm/lvm.conf',
          },
    );
  });

  await guard('journal:synchronous', async () => {
    add(journalCheck(await readJournalSync(runner)));
  });

  let hostId: number | undefined;
  await guard('lvm:host_id', async () => {
    const local = (await readFile(runner, LVMLOCAL_CONF)) ?? '';
    const v = Number(getConfValue(local, 'local', 'host_id') ?? 0);
    if (v >= 1 && v <= 2000) {
      hostId = v;
      add({ id: 'lvm:host_id', status: 'ok', message: `lvmlocal.conf local/host_id = ${v}` });
    } else {
      add({
        id: 'lvm:host_id',
        status: 'error',
        message: `lvmlocal.conf local/host_id is ${v || 'unset'} (must be 1..2000, unique per host)`,
        fix: 'cowstack cluster join --host-id N',
      });
    }
  });

  // Each repository VG of the node (config repositories: several on a site that grew), each
  // check naming its VG: a full second repository is as urgent as a full first one.
  // Asked once for all VGs.
  let lockspaces: ReturnType<Runner['run']> | undefined;
  let pvs: ReturnType<typeof lvm.pvs> | undefined;
  let nodeName: Promise<string> | undefined;
  for (const vg of opts.vgs) {
    const add = (c: Check) => checks.push({ ...c, vg });
    const guardVg = (id: string, fn: () => Promise<void>) => guard(id, fn, vg);
    await guardVg('repository:vg', async () => {
      const info = (await lvm.vgs(runner, vg))[0];
      if (!info) {
        add({
          id: 'repository:vg',
          status: 'error',
          message: `repository VG ${vg} is not visible`,
          fix: 'cowstack initiator login PORTAL IQN, then cowstack cluster join',
        });
        return;
      }
      add(
        info.shared
          ? {
              id: 'repository:vg',
              status: 'ok',
              message: `VG ${vg} visible, shared (${info.lockType}), ${info.lvCount} LVs`,
            }
          : {
              id: 'repository:vg',
              status: 'error',
              message: `VG ${vg} is visible but not shared (lock type "${info.lockType || 'none'}")`,
              fix: `vgchange --lock-type sanlock ${vg}`,
            },
      );
      if (hostId !== undefined) {
        const owner = hostMapFromTags(info.tags).get(hostId);
        const me = await (nodeName ??= host.nodeName(runner));
        if (owner && owner !== me) {
          add({
            id: 'cluster:host_id-unique',
            status: 'error',
            message: `host_id ${hostId} is registered to ${owner}, not to this host (${me})`,
            fix: 'give this host a unique id: cowstack cluster join --host-id N',
          });
        } else {
          add({
            id: 'cluster:host_id-unique',
            status: owner ? 'ok' : 'warning',
            message: owner ? `host_id ${hostId} registered to this host` : `host_id ${hostId} not registered in ${vg}`,
            fix: owner ? undefined : 'cowstack cluster join',
          });
        }
      }
    });

    await guardVg('repository:lockspace', async () => {
      const r = await (lockspaces ??= runner.run(sanlock.clientGetsReq()));
      const ls =
        r.exitCode === 0 ? sanlock.parseGets(r.stdout).find((l) => l.name === sanlock.lockspaceName(vg)) : undefined;
      add(
        ls
          ? {
              id: 'repository:lockspace',
              status: 'ok',
              message: `lockspace ${ls.name} started with host_id ${ls.hostId}`,
            }
          : {
              id: 'repository:lockspace',
              status: 'error',
              message: `lockspace ${sanlock.lockspaceName(vg)} is not started on this host`,
              fix: `cowstack cluster join (or vgchange --lockstart ${vg})`,
            },
      );
    });

    await guardVg('repository:single-path', async () => {
      const pv = (await (pvs ??= lvm.pvs(runner))).find((p) => p.vg === vg);
      if (!pv) return; // repository:vg already says the VG is missing
      add(await pathCheck(runner, pv.name));
    });

    // Before an lvcreate fails: metadata area, lease space and extents, each with its fix.
    await guardVg('repository:capacity', async () => {
      const pv = (await (pvs ??= lvm.pvs(runner))).find((p) => p.vg === vg)?.name;
      const c = await repoCapacity(runner, vg, { warnPercent: opts.warnPercent, ...(pv ? { pvDevice: pv } : {}) });
      if (!c) return; // repository:vg already says the VG is missing
      const warned = new Map(c.warnings.map((w) => [w.what, w]));
      const check = (what: 'metadata' | 'leases' | 'extents', message: string) => {
        const w = warned.get(what);
        add({
          id: `capacity:${what}`,
          status: w ? 'warning' : 'ok',
          message: w ? w.message : message,
          ...(w ? { fix: w.fix } : {}),
        });
      };
      const m = c.metadata;
      check(
        'metadata',
        `metadata area ${m.usedPercent}% used (${c.lvCount} LVs, ` +
          `${formatSize(m.freeBytes)} of ${formatSize(m.usableBytes)} free` +
          `, room for about ${m.lvsLeft} more LVs)`,
      );
      if (c.leases)
        check(
          'leases',
          `lease space: ${c.leases.inUse} of ${c.leases.slots} leases ` +
            `in a ${formatSize(c.leases.lvmlockBytes)} lvmlock ` +
            `(${formatSize(c.leases.alignBytes)} each; grows by ${formatSize(c.leases.growBytes)} from free extents)`,
        );
      if (c.leases) add(lockIo(c.leases.alignBytes));
      check(
        'extents',
        `${c.extents.usedPercent}% allocated, ${c.extents.free} of ${c.extents.total} extents free ` +
          `(${formatSize(c.extents.freeBytes)})`,
      );
    });
  }

  // What `cowstack install` puts in place. Warnings: a root-only node works without them.
  for (const [id, file, what] of [
    ['install:sudoers', SUDOERS_PATH, 'the service user cannot run cowstack through sudo'],
    ['install:udev-rule', UDEV_RULE_PATH, 'the hypervisor user cannot open the VM disks after a reboot or re-map'],
    ['install:config', CONFIG_PATH, 'every command needs --vg'],
  ] as const) {
    const r = await runner.run(host.existsReq(file, 'file'));
    add(
      r.exitCode === 0
        ? { id, status: 'ok', message: `${file} present` }
        : {
            id,
            status: 'warning',
            message: `${file} is missing (or not readable by this user): ${what}`,
            fix: 'cowstack install --node (as root)',
          },
    );
  }

  const errors = checks.filter((c) => c.status === 'error').length;
  const warnings = checks.filter((c) => c.status === 'warning').length;
  return { host: runner.target, vgs: opts.vgs, ok: errors === 0, errors, warnings, checks };
}

const sysRead = async (runner: Runner, file: string): Promise<string | undefined> => {
  const r = await runner.run(readOwnFileReq(file));
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
};

/** Whether a record the node lock wrote survives a power cut (core/journalSync.ts). */
export function journalCheck(j: JournalSync): Check {
  const id = 'journal:synchronous';
  const dir = JOURNAL_DIR;
  if (j.state === 'synchronous')
    return { id, status: 'ok', message: `${dir} and its logs are synchronous (chattr +S)` };
  if (j.state === 'absent')
    return { id, status: 'ok', message: `${dir} not made yet: the first operation makes it synchronous` };
  if (j.state === 'lacking')
    return {
      id,
      status: 'warning',
      message:
        `journal records can be lost in a power cut: ${j.paths.join(', ')} lack(s) the synchronous attribute ` +
        '(made by an older cowstack)',
      fix: `cowstack install --node --user USER (as root), or: chattr +S ${j.paths.join(' ')}`,
    };
  return {
    id,
    status: 'warning',
    message: `cannot tell whether journal records survive a power cut: ${j.error}`,
    fix: 'keep /var/lib/cowstack on a disk file system with attributes (ext4, XFS, btrfs)',
  };
}

/**
 * The repository PV must be reached through exactly one path, or through multipath: with two
 * plain paths LVM sees the same PV twice and may pick either, and a lost path fails I/O
 * instead of failing over. SCSI disks of one LUN share the wwid in sysfs.
 */
export async function pathCheck(runner: Runner, pvDevice: string): Promise<Check> {
  const id = 'repository:single-path';
  const kname = (await runner.run(realpathReq(pvDevice))).stdout.trim().replace(/^\/dev\//, '');
  if (!kname) return { id, status: 'warning', message: `cannot resolve the repository PV ${pvDevice}` };
  if (kname.startsWith('dm-')) {
    const uuid = (await sysRead(runner, `/sys/class/block/${kname}/dm/uuid`)) ?? '';
    if (uuid.startsWith('mpath-'))
      return { id, status: 'ok', message: `repository PV ${pvDevice} is a multipath device` };
  }
  const wwid = await sysRead(runner, `/sys/class/block/${kname}/device/wwid`);
  if (!wwid) return { id, status: 'ok', message: `repository PV ${pvDevice} (${kname}) has no SCSI wwid to compare` };
  const disks = (await runner.run(listDirReq('/sys/class/block', false))).stdout
    .split('\n')
    .filter((d) => /^sd[a-z]+$/.test(d));
  const same: string[] = [];
  for (const d of disks) if ((await sysRead(runner, `/sys/class/block/${d}/device/wwid`)) === wwid) same.push(d);
  return same.length <= 1
    ? { id, status: 'ok', message: `repository PV ${pvDevice} (${kname}) is reached through one path` }
    : {
        id,
        status: 'error',
        message:
          `the repository LUN is reached through ${same.length} paths without multipath ` +
          `(${same.join(', ')}): LVM sees its PV more than once`,
        fix: 'configure dm-multipath for it, or log out of the extra portal (cowstack initiator logout PORTAL IQN)',
      };
}

/**
 * What sanlock reads from the LUN for this VG (README, Lock-manager I/O). lvmlockd aligns the
 * leases to the block of 2048 host slots of one sector each, so the alignment tells the sector
 * size; each lease operation reads every slot's block, and each delta-lease renewal (every
 * 20 s at lvmlockd's 10 s io timeout) reads the host slots. Measured on the testbed: 56-97 MiB
 * per clone map with 8 MiB alignment, 8-15 MiB with 1 MiB.
 */
export function lockIo(alignBytes: number): Check {
  const sector = alignBytes / 2048;
  const idleKBs = Math.round(alignBytes / 20 / 1000);
  return {
    id: 'repository:lock-io',
    status: 'ok',
    message:
      `sanlock leases on ${sector}-byte sectors: each lease operation reads about ${formatSize(alignBytes)} ` +
      `from the LUN and an idle host about ${idleKBs} kB/s` +
      (sector > 512 ? ' (a LUN with 512-byte physical sectors reads 8x less: README, Lock-manager I/O)' : ''),
  };
}
