/**
 * sanlock and lvmlockctl adapters: daemon liveness, lockspaces, and who owns a lease.
 * lvmlockd names its sanlock lockspace `lvm_<VG>` and keeps leases in the VG's hidden
 * `lvmlock` LV; the resource name of an LV's lease is the LV's UUID.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { sbin } from './program.js';

export const clientStatusReq = (): RunRequest => ({
  argv: ['sanlock', 'client', 'status'],
  kind: 'read',
  root: true,
  allowFailure: true,
});
export const clientGetsReq = (): RunRequest => ({
  argv: ['sanlock', 'client', 'gets', '-h', '1'],
  kind: 'read',
  root: true,
  allowFailure: true,
});
export const hostStatusReq = (lockspace: string): RunRequest => ({
  argv: ['sanlock', 'client', 'host_status', '-s', lockspace],
  kind: 'read',
  root: true,
  allowFailure: true,
});
export const directDumpReq = (path: string): RunRequest => ({
  argv: ['sanlock', 'direct', 'dump', path],
  kind: 'read',
  root: true,
  allowFailure: true,
  timeout: 'change',
});
export const lvmlockctlInfoReq = (): RunRequest => ({
  argv: ['lvmlockctl', '--info'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const lockspaceName = (vg: string): string => `lvm_${vg}`;

export interface Lockspace {
  name: string;
  hostId: number;
  path: string;
  /** Hosts sanlock currently sees in the lockspace (from `gets -h 1`). */
  hosts: Array<{ hostId: number; generation: number; timestamp: number; flags: string }>;
}

/**
 * `sanlock client gets -h 1`:
 *   s lvm_repo:1:/dev/mapper/repo-lvmlock:0
 *   h 1 gen 1 timestamp 1234 LIVE
 */
export function parseGets(stdout: string): Lockspace[] {
  const out: Lockspace[] = [];
  for (const line of stdout.split('\n').map((l) => l.trim())) {
    let m: RegExpExecArray | null;
    if ((m = /^s\s+([^:]+):(\d+):(.+):(\d+)/.exec(line))) {
      out.push({ name: m[1]!, hostId: Number(m[2]), path: m[3]!, hosts: [] });
    } else if ((m = /^h\s+(\d+)\s+gen\s+(\d+)\s+timestamp\s+(\d+)\s*(.*)$/.exec(line)) && out.length) {
      out[out.length - 1]!.hosts.push({
        hostId: Number(m[1]),
        generation: Number(m[2]),
        timestamp: Number(m[3]),
        flags: m[4]!.trim(),
      });
    }
  }
  return out;
}

export interface LeaseRecord {
  offset: number;
  lockspace: string;
  resource: string;
  timestamp: number;
  owner: number;
  generation: number;
  lver: number;
}

/**
 * `sanlock direct dump PATH`: header line then rows
 *   offset lockspace resource timestamp own gen lver
 * Rows with only 6 columns are delta leases (host slots). A paxos lease row has an owner
 * host id and lver; owner 0 or timestamp 0 means free.
 */
export function parseDirectDump(stdout: string): LeaseRecord[] {
  const rows: LeaseRecord[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.trim().split(/\s+/);
    // rindex_header/rentry rows also start with an offset; leases have numeric timestamp/own/gen.
    if (f.length < 6 || ![f[0], f[3], f[4], f[5]].every((x) => /^\d+$/.test(x!))) continue;
    rows.push({
      offset: Number(f[0]),
      lockspace: f[1]!,
      resource: f[2]!,
      timestamp: Number(f[3]),
      owner: Number(f[4]),
      generation: Number(f[5]),
      lver: Number(f[6] ?? 0),
    });
  }
  return rows;
}

/** lvmlockd's lock_args of an LV in a sanlock VG: "VERSION:OFFSET" of its lease on the lvmlock LV. */
export function leaseOffset(lockArgs: string): number | undefined {
  const m = /^\d+\.\d+\.\d+:(\d+)$/.exec(lockArgs.trim());
  return m ? Number(m[1]) : undefined;
}

/**
 * The lock mode lvmlockd holds on this host for each LV ("LK LV ex|sh UUID" lines of
 * `lvmlockctl --info`). LVM's own lv_active_exclusively cannot tell shared from exclusive
 * activation in a lockd VG; lvmlockd can.
 */
export function parseLvLockModes(stdout: string): Map<string, 'ex' | 'sh'> {
  const out = new Map<string, 'ex' | 'sh'>();
  for (const line of stdout.split('\n')) {
    const m = /^\s*LK LV (ex|sh) (\S+)/.exec(line);
    if (m) out.set(m[2]!, m[1] as 'ex' | 'sh');
  }
  return out;
}

/** Lock modes of this host's LV locks; empty when lvmlockd is not in use or not running. */
export async function lvLockModes(runner: import('../exec/types.js').Runner): Promise<Map<string, 'ex' | 'sh'>> {
  const r = await runner.run(lvmlockctlInfoReq());
  return r.exitCode === 0 ? parseLvLockModes(r.stdout) : new Map();
}

/** Apply lvmlockd's view of exclusivity to LVs reported by lvs. */
export function withLockModes<T extends { uuid: string; activeLocally: boolean; activeExclusively: boolean }>(
  lvs: T[],
  modes: Map<string, 'ex' | 'sh'>,
): T[] {
  if (!modes.size) return lvs;
  return lvs.map((lv) => {
    const mode = modes.get(lv.uuid);
    return mode && lv.activeLocally ? { ...lv, activeExclusively: mode === 'ex' } : lv;
  });
}

/** doctor's probe: prints the sanlock version. */
export const versionReq = (): RunRequest => ({
  argv: ['sanlock', 'version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** doctor's probe of lvmlockctl (it has no version option: --help shows it is there). */
export const lvmlockctlProbeReq = (): RunRequest => ({
  argv: ['lvmlockctl', '--help'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('lvmlockctl', 'lvm2-lockd', 'is lvmlockd up (--info)'),
  sbin('sanlock', 'sanlock', 'lockspaces, lease owners (client status/gets/host_status, direct dump)'),
];
