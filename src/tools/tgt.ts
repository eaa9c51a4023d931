/**
 * tgt, the userspace iSCSI target, through tgtadm. Targets are numbered (tid); cowstack
 * finds a target by its IQN in `tgtadm --op show` and takes the next free tid for a new one.
 * Backing stores are opened with O_DIRECT (`--bsoflags direct`), so the target keeps no
 * page cache of the LUN: what one initiator wrote is what another reads.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin, sbin, SERVER } from './program.js';

const adm = (args: string[], kind: RunRequest['kind'], title?: string): RunRequest => ({
  argv: ['tgtadm', '--lld', 'iscsi', ...args],
  kind,
  root: true,
  timeout: 'change',
  ...(title ? { title } : {}),
});

export const showReq = (): RunRequest => ({ ...adm(['--op', 'show', '--mode', 'target'], 'read'), allowFailure: true });
export const newTargetReq = (tid: number, iqn: string) =>
  adm(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn], 'write', `target ${iqn} (tid ${tid})`);
export const deleteTargetReq = (tid: number, force = false) =>
  adm(
    ['--op', 'delete', '--mode', 'target', '--tid', String(tid), ...(force ? ['--force'] : [])],
    'write',
    `delete target tid ${tid}`,
  );
export const newLunReq = (tid: number, lun: number, backing: string) =>
  adm(
    [
      '--op',
      'new',
      '--mode',
      'logicalunit',
      '--tid',
      String(tid),
      '--lun',
      String(lun),
      '-b',
      backing,
      '--bsoflags',
      'direct',
    ],
    'write',
    `LUN ${lun} on ${backing}`,
  );
export const bindInitiatorReq = (tid: number, initiator: string) =>
  adm(
    ['--op', 'bind', '--mode', 'target', '--tid', String(tid), '--initiator-name', initiator],
    'write',
    `allow ${initiator}`,
  );
export const unbindInitiatorReq = (tid: number, initiator: string) =>
  adm(
    ['--op', 'unbind', '--mode', 'target', '--tid', String(tid), '--initiator-name', initiator],
    'write',
    `revoke ${initiator}`,
  );
/** The running configuration as a tgt config file (what `target save` persists). */
export const dumpReq = (): RunRequest => ({
  argv: ['tgt-admin', '--dump'],
  kind: 'read',
  root: true,
  timeout: 'query',
});

export interface TgtLun {
  lun: number;
  type: string;
  path: string;
  flags: string[];
  sizeBytes?: number;
}

export interface TgtTarget {
  tid: number;
  iqn: string;
  luns: TgtLun[];
  /** Initiator names and address ACLs ("ALL", "192.0.2.0/24"). */
  acls: string[];
  accounts: string[];
  /** Initiators with an I_T nexus (a session) now. */
  sessions: string[];
}

/** Parses `tgtadm --lld iscsi --op show --mode target`. Indentation marks the sections. */
export function parseShow(stdout: string): TgtTarget[] {
  const out: TgtTarget[] = [];
  let cur: TgtTarget | undefined;
  let section = '';
  let lun: TgtLun | undefined;
  for (const raw of stdout.split('\n')) {
    if (!raw.trim()) continue;
    const indent = raw.length - raw.trimStart().length;
    const line = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^Target (\d+): (\S+)$/.exec(line)) && indent === 0) {
      cur = { tid: Number(m[1]), iqn: m[2]!, luns: [], acls: [], accounts: [], sessions: [] };
      out.push(cur);
      section = '';
      continue;
    }
    if (!cur) continue;
    if (indent === 4 && line.endsWith(':')) {
      section = line.slice(0, -1);
      lun = undefined;
      continue;
    }
    if (section === 'LUN information') {
      if ((m = /^LUN: (\d+)$/.exec(line))) {
        lun = { lun: Number(m[1]), type: '', path: '', flags: [] };
        cur.luns.push(lun);
      } else if (lun && (m = /^Type: (.*)$/.exec(line))) lun.type = m[1]!.trim();
      else if (lun && (m = /^Backing store path: (.*)$/.exec(line)))
        lun.path = m[1]!.trim() === 'None' ? '' : m[1]!.trim();
      else if (lun && (m = /^Backing store flags:(.*)$/.exec(line)))
        lun.flags = m[1]!
          .trim()
          .split(/[\s|,]+/)
          .filter(Boolean);
      else if (lun && (m = /^Size: (\d+) MB/.exec(line))) lun.sizeBytes = Number(m[1]) * 1_000_000;
    } else if (section === 'ACL information') {
      cur.acls.push(line);
    } else if (section === 'Account information') {
      cur.accounts.push(line.replace(/\s*\(outgoing\)$/, ''));
    } else if (section === 'I_T nexus information' && (m = /^Initiator: (\S+)/.exec(line))) {
      if (!cur.sessions.includes(m[1]!)) cur.sessions.push(m[1]!);
    }
  }
  return out;
}

/** tgt does not create a file LUN's backing file: a sparse one of at least `bytes` (never shrinks one). */
export const sparseFileReq = (file: string, bytes: number): RunRequest => ({
  argv: ['truncate', '--size', `>${bytes}`, '--', file],
  kind: 'write',
  root: true,
  timeout: 'change',
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('tgtadm', 'tgt', 'tgt targets, LUNs, initiator ACLs', SERVER),
  sbin('tgt-admin', 'tgt', 'dump the running tgt configuration (target save)', SERVER),
  bin('truncate', 'coreutils', 'create a sparse backing file for a tgt file LUN; empty a journal log'),
];
