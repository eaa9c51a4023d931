/**
 * open-iscsi adapter. Exit codes from iscsiadm(8): 15 = session exists (already logged
 * in), 21 = no objects found (no session/record), 24 = login failed (auth), 8 = timeout,
 * 4 = transport error, 11 = PDU timeout (what discovery of a refused connection returns).
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { sbin } from './program.js';
import { STDIN_PATH } from './files.js';

export const ISCSI_ERR = {
  SESS_EXISTS: 15,
  NO_OBJS_FOUND: 21,
  LOGIN_AUTH_FAILED: 24,
  TRANS_TIMEOUT: 8,
  SESS_NOT_FOUND: 2,
  TRANS: 4,
  PDU_TIMEOUT: 11,
} as const;

const req = (args: string[], kind: RunRequest['kind'], extra: Partial<RunRequest> = {}): RunRequest => ({
  argv: ['iscsiadm', ...args],
  kind,
  root: true,
  timeout: 'iscsi',
  allowFailure: true,
  ...extra,
});

export const nodeShowReq = (iqn: string, portal: string) => req(['-m', 'node', '-T', iqn, '-p', portal], 'read');
export const nodeNewReq = (iqn: string, portal: string) =>
  req(['-m', 'node', '-o', 'new', '-T', iqn, '-p', portal], 'write');
export const nodeUpdateReq = (iqn: string, portal: string, name: string, value: string) =>
  req(['-m', 'node', '-T', iqn, '-p', portal, '-o', 'update', '-n', name, '-v', value], 'write');
export const nodeDeleteReq = (iqn: string, portal: string) =>
  req(['-m', 'node', '-o', 'delete', '-T', iqn, '-p', portal], 'write');
export const loginReq = (iqn: string, portal: string) =>
  req(['-m', 'node', '-T', iqn, '-p', portal, '--login'], 'write');
export const logoutReq = (iqn: string, portal: string) =>
  req(['-m', 'node', '-T', iqn, '-p', portal, '--logout'], 'write');
export const rescanReq = (iqn: string, portal: string) =>
  req(['-m', 'node', '-T', iqn, '-p', portal, '--rescan'], 'read');
export const sessionsReq = () => req(['-m', 'session', '-P', '3'], 'read');
/** Rescan every session for new or resized LUNs. */
export const rescanAllReq = () => req(['-m', 'session', '--rescan'], 'write');
/** SendTargets discovery that prints the offer without writing node records. */
export const discoverReq = (portal: string) =>
  req(['-m', 'discovery', '-t', 'sendtargets', '-p', portal, '-o', 'nonpersistent'], 'read');

/**
 * Where open-iscsi keeps node records: Debian/Ubuntu /etc/iscsi/nodes, RHEL /var/lib/iscsi/nodes.
 * A record is the file `default` in a directory named ADDR,PORT,TPGT.
 */
export const NODE_DIRS = ['/etc/iscsi/nodes', '/var/lib/iscsi/nodes'] as const;

/** `iscsiadm -m discovery ... -o nonpersistent` lines: "ADDR:PORT,TPGT IQN". */
export function parseDiscovery(stdout: string): Array<{ portal: string; tpgt: number; iqn: string }> {
  const out: Array<{ portal: string; tpgt: number; iqn: string }> = [];
  for (const line of stdout.split('\n')) {
    const m = /^(\S+),(-?\d+)\s+(\S+)$/.exec(line.trim());
    if (m) out.push({ portal: m[1]!, tpgt: Number(m[2]), iqn: m[3]! });
  }
  return out;
}

/**
 * A node record with `key = value` set (added when missing). Used for the CHAP password:
 * `iscsiadm -o update -v SECRET` would put the secret in an argv.
 */
export function setRecordValues(record: string, values: Record<string, string>): string {
  const lines = record.split('\n');
  for (const [key, value] of Object.entries(values)) {
    const i = lines.findIndex((l) => l.split('=')[0]!.trim() === key);
    const line = `${key} = ${value}`;
    if (i >= 0) lines[i] = line;
    else {
      const end = lines.findIndex((l) => l.trim() === '# END RECORD');
      lines.splice(end >= 0 ? end : lines.length, 0, line);
    }
  }
  return lines.join('\n');
}

export interface IscsiSession {
  id: number;
  portal: string;
  iqn: string;
  state: string;
  disks: Array<{ lun: number; device: string; state: string }>;
}

/** The by-path link udev creates for a LUN: /dev/disk/by-path/ip-PORTAL-iscsi-IQN-lun-N. */
export const byPathLink = (portal: string, iqn: string, lun = 1): string =>
  `/dev/disk/by-path/ip-${portal}-iscsi-${iqn}-lun-${lun}`;

/** `iscsiadm -m session -P 3`: target blocks with portal, SID, state and attached disks. */
export function parseSessions(stdout: string): IscsiSession[] {
  const out: IscsiSession[] = [];
  let cur: IscsiSession | undefined;
  let pendingLun: number | undefined;
  for (const raw of stdout.split('\n')) {
    const line = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^Target:\s+(\S+)/.exec(line))) {
      cur = { id: 0, portal: '', iqn: m[1]!, state: '', disks: [] };
      out.push(cur);
      pendingLun = undefined;
    } else if (!cur) {
      continue;
    } else if ((m = /^Current Portal:\s+(\S+?)(,\d+)?$/.exec(line))) {
      if (cur.id) {
        // iscsiadm prints "Target:" once per target: another portal of it is another session.
        cur = { id: 0, portal: '', iqn: cur.iqn, state: '', disks: [] };
        out.push(cur);
      }
      cur.portal = m[1]!;
      pendingLun = undefined;
    } else if ((m = /^SID:\s+(\d+)/.exec(line))) {
      if (cur.id) {
        // A second session to the same target: a new entry that inherits the target.
        cur = { id: 0, portal: cur.portal, iqn: cur.iqn, state: '', disks: [] };
        out.push(cur);
      }
      pendingLun = undefined;
      cur.id = Number(m[1]);
    } else if ((m = /^iSCSI Session State:\s+(\S+)/.exec(line))) {
      cur.state = m[1]!;
    } else if ((m = /^scsi\d+ Channel \d+ Id \d+ Lun: (\d+)/.exec(line))) {
      pendingLun = Number(m[1]);
    } else if ((m = /^Attached scsi disk (\S+)\s+State: (\S+)/.exec(line)) && pendingLun !== undefined) {
      cur.disks.push({ lun: pendingLun, device: `/dev/${m[1]}`, state: m[2]! });
      pendingLun = undefined;
    }
  }
  return out;
}

/** doctor's probe: prints "iscsiadm version ...". */
export const versionReq = (): RunRequest => ({
  argv: ['iscsiadm', '--version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** Rewrite a node record from stdin, root's only: it holds the CHAP secret, which never goes into argv. */
export const writeRecordReq = (file: string, content: string): RunRequest => ({
  argv: ['install', '-m', '0600', STDIN_PATH, file],
  kind: 'write',
  root: true,
  input: content,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('iscsiadm', 'open-iscsi', 'node records, login/logout, rescan, sessions'),
];
