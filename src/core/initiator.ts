/**
 * iSCSI initiator: idempotent login (an existing session is success), a bounded wait with
 * rescans until the LUN's stable by-path link appears, and a logout that refuses while
 * anything still sits on the disk. A failed login removes the node record it created.
 */
import { CowstackError, EXIT, commandFailed, refused } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import { holders, realpath } from '../tools/files.js';
import * as iscsi from '../tools/iscsiadm.js';
import { settleReq } from '../tools/udevadm.js';
import { validateIqn, validatePortal } from './validate.js';

export interface LoginResult {
  portal: string;
  iqn: string;
  lun: number;
  device: string;
  disk: string;
  alreadyLoggedIn: boolean;
}

export async function sessions(runner: Runner): Promise<iscsi.IscsiSession[]> {
  const r = await runner.run(iscsi.sessionsReq());
  if (r.exitCode === iscsi.ISCSI_ERR.NO_OBJS_FOUND) return [];
  if (r.exitCode !== 0) throw commandFailed(runner.target, r);
  return iscsi.parseSessions(r.stdout);
}

const samePortal = (a: string, b: string) => a.replace(/^\[|\]/g, '') === b.replace(/^\[|\]/g, '');

export async function login(runner: Runner, portalIn: string, iqnIn: string, opts: { lun?: number; waitSeconds?: number; dryRun?: boolean } = {}): Promise<LoginResult> {
  const portal = validatePortal(portalIn);
  const iqn = validateIqn(iqnIn, 'target IQN');
  const lun = opts.lun ?? 1;
  const existing = (await sessions(runner)).find((s) => s.iqn === iqn && samePortal(s.portal, portal));
  const link = iscsi.byPathLink(portal, iqn, lun);
  if (!existing) {
    const record = await runner.run(iscsi.nodeShowReq(iqn, portal));
    let created = false;
    if (record.exitCode !== 0) {
      const r = await runner.run(iscsi.nodeNewReq(iqn, portal));
      if (r.exitCode !== 0) throw commandFailed(runner.target, r);
      created = true;
    }
    const r = await runner.run(iscsi.loginReq(iqn, portal));
    if (r.exitCode !== 0 && r.exitCode !== iscsi.ISCSI_ERR.SESS_EXISTS) {
      if (created) await runner.run(iscsi.nodeDeleteReq(iqn, portal));
      throw loginError(runner, portal, iqn, r);
    }
  }
  if (opts.dryRun) return { portal, iqn, lun, device: link, disk: '', alreadyLoggedIn: Boolean(existing) };
  const disk = await waitForDevice(runner, portal, iqn, link, opts.waitSeconds ?? 30);
  return { portal, iqn, lun, device: link, disk, alreadyLoggedIn: Boolean(existing) };
}

function loginError(runner: Runner, portal: string, iqn: string, r: { argv: readonly string[]; exitCode: number; stderr: string }): CowstackError {
  const base = commandFailed(runner.target, r);
  if (r.exitCode === iscsi.ISCSI_ERR.LOGIN_AUTH_FAILED || /authorization failure|auth/i.test(r.stderr)) {
    return new CowstackError(EXIT.PERMISSION, `the target ${iqn} at ${portal} refused this initiator (authorization failure)`, {
      hint: 'check the target ACL for this node\'s initiator name (/etc/iscsi/initiatorname.iscsi) and the CHAP settings',
      data: base.data, cause: base,
    });
  }
  if (r.exitCode === iscsi.ISCSI_ERR.TRANS_TIMEOUT || /timed out|connection refused|No route|unreachable/i.test(r.stderr)) {
    return new CowstackError(EXIT.UNREACHABLE, `cannot connect to the iSCSI portal ${portal}`, { hint: 'check the portal address, the target service and the firewall', data: base.data, cause: base });
  }
  if (/target not found|does not exist|non-existent/i.test(r.stderr)) {
    return new CowstackError(EXIT.NOT_FOUND, `the portal ${portal} has no target ${iqn}`, { hint: 'check the IQN (cowstack initiator discover PORTAL lists what the portal offers)', data: base.data, cause: base });
  }
  return base;
}

async function waitForDevice(runner: Runner, portal: string, iqn: string, link: string, seconds: number): Promise<string> {
  const deadline = Date.now() + seconds * 1000;
  for (let attempt = 0; ; attempt++) {
    const disk = await realpath(runner, link);
    if (disk) return disk;
    if (Date.now() > deadline) {
      throw new CowstackError(EXIT.TIMEOUT, `logged in to ${iqn} but ${link} did not appear within ${seconds}s`, {
        hint: 'check that the target exports a LUN with that number and that udev runs (udevadm settle)',
        data: { portal, iqn, link },
      });
    }
    if (attempt % 3 === 2) await runner.run(iscsi.rescanReq(iqn, portal));
    await runner.run(settleReq(5));
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface LogoutResult {
  portal: string;
  iqn: string;
  action: 'logged-out' | 'none';
  forgotten: boolean;
}

export async function logout(runner: Runner, portalIn: string, iqnIn: string, opts: { force?: boolean; forget?: boolean } = {}): Promise<LogoutResult> {
  const portal = validatePortal(portalIn);
  const iqn = validateIqn(iqnIn, 'target IQN');
  const session = (await sessions(runner)).find((s) => s.iqn === iqn && samePortal(s.portal, portal));
  let action: LogoutResult['action'] = 'none';
  if (session) {
    const users = (await Promise.all(session.disks.map((d) => holders(runner, d.device)))).flat();
    if (users.length && !opts.force) {
      throw refused(`the iSCSI disk of ${iqn} is in use by ${users.map((u) => u.name).join(', ')}; refusing to log out`, 'deactivate the LVs and stop the lockspace first (vgchange --lockstop VG), or pass --force', { holders: users });
    }
    const r = await runner.run(iscsi.logoutReq(iqn, portal));
    if (r.exitCode !== 0 && r.exitCode !== iscsi.ISCSI_ERR.NO_OBJS_FOUND) throw commandFailed(runner.target, r);
    action = 'logged-out';
  }
  let forgotten = false;
  if (opts.forget) {
    const r = await runner.run(iscsi.nodeDeleteReq(iqn, portal));
    forgotten = r.exitCode === 0;
  }
  return { portal, iqn, action, forgotten };
}
