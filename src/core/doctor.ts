/**
 * `cowstack doctor`: every check runs even when others fail, and each one says how to
 * fix what it found. Reads only: doctor never changes a node.
 */
import { CowstackError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import { pidof, readFile } from '../tools/files.js';
import * as dmsetup from '../tools/dmsetup.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import { LVMLOCAL_CONF } from './cluster.js';
import { hostMapFromTags } from './hostMap.js';
import { getConfValue } from './lvmConf.js';

export type CheckStatus = 'ok' | 'warning' | 'error';
export interface Check {
  id: string;
  status: CheckStatus;
  message: string;
  fix?: string;
}
export interface DoctorReport {
  host: string;
  ok: boolean;
  errors: number;
  warnings: number;
  checks: Check[];
}

/** Programs cowstack drives, how to ask each for its version, and the package that ships it. */
const PROGRAMS: Array<{ name: string; argv: string[]; pkg: string; pattern: RegExp; optional?: boolean }> = [
  { name: 'lvm', argv: ['lvm', 'version'], pkg: 'lvm2', pattern: /LVM version:\s*(\S+)/ },
  { name: 'dmsetup', argv: ['dmsetup', 'version'], pkg: 'dmsetup', pattern: /Library version:\s*(\S+)/ },
  { name: 'blockdev', argv: ['blockdev', '--version'], pkg: 'util-linux', pattern: /util-linux\s+(\S+)/ },
  { name: 'iscsiadm', argv: ['iscsiadm', '--version'], pkg: 'open-iscsi', pattern: /version\s+(\S+)/ },
  { name: 'sanlock', argv: ['sanlock', 'version'], pkg: 'sanlock', pattern: /(\d+\.\d+[\w.-]*)/ },
  { name: 'lvmlockctl', argv: ['lvmlockctl', '--help'], pkg: 'lvm2-lockd', pattern: /()/ },
  { name: 'udevadm', argv: ['udevadm', '--version'], pkg: 'udev', pattern: /(\d+)/ },
  { name: 'cache_check', argv: ['cache_check', '--version'], pkg: 'thin-provisioning-tools', pattern: /(\d+\.\d+\.\d+)/, optional: true },
];

const REQUIRED_TARGETS = ['linear', 'snapshot', 'cache', 'writecache'];

export interface DoctorOptions {
  vg: string;
}

export async function doctor(runner: Runner, opts: DoctorOptions): Promise<DoctorReport> {
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  const guard = async (id: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      const err = e as CowstackError;
      add({ id, status: 'error', message: err.message, fix: err.hint });
    }
  };

  for (const p of PROGRAMS) {
    const id = `program:${p.name}`;
    try {
      const r = await runner.run({ argv: p.argv, kind: 'read', root: true, allowFailure: true });
      const version = p.pattern.exec(`${r.stdout}\n${r.stderr}`)?.[1];
      add({ id, status: 'ok', message: `${p.name} ${version || 'present'}` });
    } catch (e) {
      add({ id, status: p.optional ? 'warning' : 'error', message: (e as Error).message, fix: `apt-get install ${p.pkg}   (or dnf install ${p.pkg})` });
    }
  }

  await guard('kernel:dm-targets', async () => {
    const targets = await dmsetup.targets(runner);
    const missing = REQUIRED_TARGETS.filter((t) => !targets.has(t));
    add(
      missing.length
        ? { id: 'kernel:dm-targets', status: 'error', message: `device-mapper targets not loaded: ${missing.join(', ')}`, fix: `modprobe ${missing.map((t) => `dm-${t}`).join(' ')}` }
        : { id: 'kernel:dm-targets', status: 'ok', message: REQUIRED_TARGETS.map((t) => `${t} ${targets.get(t)}`).join(', ') },
    );
  });

  for (const [daemon, fix] of [
    ['iscsid', 'systemctl enable --now iscsid'],
    ['sanlock', 'cowstack cluster join (starts sanlock), or systemctl enable --now sanlock'],
    ['lvmlockd', 'cowstack cluster join (starts lvmlockd), or systemctl enable --now lvmlockd'],
  ] as const) {
    await guard(`daemon:${daemon}`, async () => {
      const pids = await pidof(runner, daemon);
      add(pids.length ? { id: `daemon:${daemon}`, status: 'ok', message: `${daemon} running (pid ${pids.join(' ')})` } : { id: `daemon:${daemon}`, status: 'error', message: `${daemon} is not running`, fix });
    });
  }

  await guard('lvm:use_lvmlockd', async () => {
    const v = await lvm.lvmconfigValue(runner, 'global/use_lvmlockd');
    add(v === '1' ? { id: 'lvm:use_lvmlockd', status: 'ok', message: 'lvm.conf global/use_lvmlockd = 1' } : { id: 'lvm:use_lvmlockd', status: 'error', message: `lvm.conf global/use_lvmlockd is ${v ?? 'unset'}`, fix: 'cowstack cluster join --host-id N (sets it), or edit /etc/lvm/lvm.conf' });
  });

  let hostId: number | undefined;
  await guard('lvm:host_id', async () => {
    const local = (await readFile(runner, LVMLOCAL_CONF)) ?? '';
    const v = Number(getConfValue(local, 'local', 'host_id') ?? 0);
    if (v >= 1 && v <= 2000) {
      hostId = v;
      add({ id: 'lvm:host_id', status: 'ok', message: `lvmlocal.conf local/host_id = ${v}` });
    } else {
      add({ id: 'lvm:host_id', status: 'error', message: `lvmlocal.conf local/host_id is ${v || 'unset'} (must be 1..2000, unique per host)`, fix: 'cowstack cluster join --host-id N' });
    }
  });

  await guard('repository:vg', async () => {
    const vg = (await lvm.vgs(runner, opts.vg))[0];
    if (!vg) {
      add({ id: 'repository:vg', status: 'error', message: `repository VG ${opts.vg} is not visible`, fix: 'cowstack initiator login PORTAL IQN, then cowstack cluster join' });
      return;
    }
    add(
      vg.shared
        ? { id: 'repository:vg', status: 'ok', message: `VG ${opts.vg} visible, shared (${vg.lockType}), ${vg.lvCount} LVs` }
        : { id: 'repository:vg', status: 'error', message: `VG ${opts.vg} is visible but not shared (lock type "${vg.lockType || 'none'}")`, fix: `vgchange --lock-type sanlock ${opts.vg}` },
    );
    if (hostId !== undefined) {
      const owner = hostMapFromTags(vg.tags).get(hostId);
      const me = (await runner.run({ argv: ['uname', '-n'], kind: 'read' })).stdout.trim();
      if (owner && owner !== me) {
        add({ id: 'cluster:host_id-unique', status: 'error', message: `host_id ${hostId} is registered to ${owner}, not to this host (${me})`, fix: 'give this host a unique id: cowstack cluster join --host-id N' });
      } else {
        add({ id: 'cluster:host_id-unique', status: owner ? 'ok' : 'warning', message: owner ? `host_id ${hostId} registered to this host` : `host_id ${hostId} not registered in ${opts.vg}`, fix: owner ? undefined : 'cowstack cluster join' });
      }
    }
  });

  await guard('repository:lockspace', async () => {
    const r = await runner.run(sanlock.clientGetsReq());
    const ls = r.exitCode === 0 ? sanlock.parseGets(r.stdout).find((l) => l.name === sanlock.lockspaceName(opts.vg)) : undefined;
    add(
      ls
        ? { id: 'repository:lockspace', status: 'ok', message: `lockspace ${ls.name} started with host_id ${ls.hostId}` }
        : { id: 'repository:lockspace', status: 'error', message: `lockspace ${sanlock.lockspaceName(opts.vg)} is not started on this host`, fix: `cowstack cluster join (or vgchange --lockstart ${opts.vg})` },
    );
  });

  const errors = checks.filter((c) => c.status === 'error').length;
  const warnings = checks.filter((c) => c.status === 'warning').length;
  return { host: runner.target, ok: errors === 0, errors, warnings, checks };
}
