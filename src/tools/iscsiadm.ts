/**
 * open-iscsi adapter. Exit codes from iscsiadm(8): 15 = session exists (already logged
 * in), 21 = no objects found (no session/record), 24 = login failed (auth), 8 = timeout.
 */
import type { RunRequest } from '../exec/types.js';

export const ISCSI_ERR = { SESS_EXISTS: 15, NO_OBJS_FOUND: 21, LOGIN_AUTH_FAILED: 24, TRANS_TIMEOUT: 8, SESS_NOT_FOUND: 2 } as const;

const req = (args: string[], kind: RunRequest['kind'], extra: Partial<RunRequest> = {}): RunRequest => ({
  argv: ['iscsiadm', ...args],
  kind,
  root: true,
  timeout: 'iscsi',
  allowFailure: true,
  ...extra,
});

export const nodeShowReq = (iqn: string, portal: string) => req(['-m', 'node', '-T', iqn, '-p', portal], 'read');
export const nodeNewReq = (iqn: string, portal: string) => req(['-m', 'node', '-o', 'new', '-T', iqn, '-p', portal], 'write');
export const nodeUpdateReq = (iqn: string, portal: string, name: string, value: string) =>
  req(['-m', 'node', '-T', iqn, '-p', portal, '-o', 'update', '-n', name, '-v', value], 'write');
export const nodeDeleteReq = (iqn: string, portal: string) => req(['-m', 'node', '-o', 'delete', '-T', iqn, '-p', portal], 'write');
export const loginReq = (iqn: string, portal: string) => req(['-m', 'node', '-T', iqn, '-p', portal, '--login'], 'write');
export const logoutReq = (iqn: string, portal: string) => req(['-m', 'node', '-T', iqn, '-p', portal, '--logout'], 'write');
export const rescanReq = (iqn: string, portal: string) => req(['-m', 'node', '-T', iqn, '-p', portal, '--rescan'], 'read');
export const sessionsReq = () => req(['-m', 'session', '-P', '3'], 'read');

export interface IscsiSession {
  id: number;
  portal: string;
  iqn: string;
  state: string;
  disks: Array<{ lun: number; device: string; state: string }>;
}

/** The by-path link udev creates for a LUN: /dev/disk/by-path/ip-PORTAL-iscsi-IQN-lun-N. */
export const byPathLink = (portal: string, iqn: string, lun = 1): string => `/dev/disk/by-path/ip-${portal}-iscsi-${iqn}-lun-${lun}`;

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
