/**
 * iSCSI initiator: idempotent login (an existing session is success), a bounded wait with
 * rescans until the LUN's stable by-path link appears, and a logout that refuses while
 * anything still sits on the disk. A failed login removes the node record it created.
 */
import { CowstackError, EXIT, commandFailed, notFound, refused, usageError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import { holders, readFile, realpath } from '../tools/files.js';
import { validateChap } from './target.js';
import * as iscsi from '../tools/iscsiadm.js';
import { settleReq } from '../tools/udevadm.js';
import type { SessionBase } from './node.js';
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

export interface LoginOptions {
  lun?: number;
  waitSeconds?: number;
  /** CHAP credentials; the secret reaches the node record on stdin only. */
  chap?: { user: string; secret: string };
  /** node.startup of the record: automatic logs in again at boot. Unchanged when undefined. */
  startup?: 'automatic' | 'manual';
}

export async function login(
  ctx: SessionBase,
  portalIn: string,
  iqnIn: string,
  opts: LoginOptions = {},
): Promise<LoginResult> {
  const { runner } = ctx;
  const portal = validatePortal(portalIn);
  const iqn = validateIqn(iqnIn, 'target IQN');
  if (opts.startup !== undefined && opts.startup !== 'automatic' && opts.startup !== 'manual')
    throw usageError(`startup "${opts.startup}" is not automatic or manual`);
  if (opts.chap) validateChap(opts.chap.user, opts.chap.secret);
  const lun = opts.lun ?? 1;
  const existing = (await sessions(runner)).find((s) => s.iqn === iqn && samePortal(s.portal, portal));
  const link = iscsi.byPathLink(portal, iqn, lun);
  if (!existing) {
    const record = await runner.run(iscsi.nodeShowReq(iqn, portal));
    let created = false;
    if (record.exitCode !== 0) {
      // A new portal: ask it first. A dead portal fails discovery in seconds, while a login
      // would retry for minutes; and an IQN the portal does not offer needs no record.
      await probePortal(runner, portal, iqn);
      const r = await runner.run(iscsi.nodeNewReq(iqn, portal));
      if (r.exitCode !== 0) throw commandFailed(runner.target, r);
      created = true;
    }
    try {
      if (opts.chap && !ctx.dryRun) await setChapOnRecord(runner, portal, iqn, opts.chap);
      const r = await runner.run(iscsi.loginReq(iqn, portal));
      if (r.exitCode !== 0 && r.exitCode !== iscsi.ISCSI_ERR.SESS_EXISTS) throw loginError(runner, portal, iqn, r);
    } catch (e) {
      // Whatever failed (a refusal, a timeout), a record made here must not log in at boot.
      if (created) await runner.run(iscsi.nodeDeleteReq(iqn, portal));
      throw e;
    }
  }
  if (
    opts.startup &&
    recordValue((await runner.run(iscsi.nodeShowReq(iqn, portal))).stdout, 'node.startup') !== opts.startup
  ) {
    const r = await runner.run(iscsi.nodeUpdateReq(iqn, portal, 'node.startup', opts.startup));
    if (r.exitCode !== 0) throw commandFailed(runner.target, r);
  }
  if (ctx.dryRun) return { portal, iqn, lun, device: link, disk: '', alreadyLoggedIn: Boolean(existing) };
  const disk = await waitForDevice(runner, portal, iqn, link, opts.waitSeconds ?? 30);
  return { portal, iqn, lun, device: link, disk, alreadyLoggedIn: Boolean(existing) };
}

/** `key = value` from `iscsiadm -m node -T IQN -p PORTAL` output. */
export function recordValue(text: string, key: string): string | undefined {
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && line.slice(0, i).trim() === key) return line.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * The node record of IQN at PORTAL and its text. `iscsiadm -o new` without a TPGT writes the
 * file ADDR,PORT; discovery writes ADDR,PORT,TPGT/default. The directories are root-only, so
 * the candidates are read (as root) rather than listed.
 */
async function recordFile(runner: Runner, portal: string, iqn: string): Promise<{ file: string; text: string }> {
  const i = portal.lastIndexOf(':');
  const base = `${portal.slice(0, i).replace(/^\[|\]$/g, '')},${portal.slice(i + 1)}`;
  for (const dir of iscsi.NODE_DIRS) {
    for (const file of [`${dir}/${iqn}/${base}`, `${dir}/${iqn}/${base},1/default`]) {
      const text = await readFile(runner, file);
      if (text !== undefined) return { file, text };
    }
  }
  throw new CowstackError(
    EXIT.FAILED,
    `cannot find the node record of ${iqn} at ${portal} under ${iscsi.NODE_DIRS.join(' or ')}`,
    {
      hint: 'this open-iscsi keeps records elsewhere; set CHAP in /etc/iscsi/iscsid.conf instead',
    },
  );
}

/** SendTargets as a fast reachability and existence check before a first login. */
async function probePortal(runner: Runner, portal: string, iqn: string): Promise<void> {
  const r = await runner.run(iscsi.discoverReq(portal));
  if (r.exitCode === 0) {
    if (iscsi.parseDiscovery(r.stdout).some((d) => d.iqn === iqn)) return;
    throw notFound(
      `the portal ${portal} does not offer ${iqn} to this initiator`,
      'check the IQN (cowstack initiator discover PORTAL lists what it offers) and, on tgt, the target ACL',
    );
  }
  if (r.exitCode === iscsi.ISCSI_ERR.NO_OBJS_FOUND) {
    throw notFound(`the portal ${portal} offers no targets to this initiator`, 'check the IQN and the target ACL');
  }
  if (
    ([iscsi.ISCSI_ERR.TRANS, iscsi.ISCSI_ERR.TRANS_TIMEOUT, iscsi.ISCSI_ERR.PDU_TIMEOUT] as number[]).includes(
      r.exitCode,
    )
  ) {
    throw new CowstackError(EXIT.UNREACHABLE, `cannot connect to the iSCSI portal ${portal}`, {
      hint: 'check the portal address, the target service and the firewall',
      data: { stderr: r.stderr.trim() },
    });
  }
  // Discovery may need its own authentication: leave the verdict to the login.
}

async function setChapOnRecord(
  runner: Runner,
  portal: string,
  iqn: string,
  chap: { user: string; secret: string },
): Promise<void> {
  for (const [name, value] of [
    ['node.session.auth.authmethod', 'CHAP'],
    ['node.session.auth.username', chap.user],
  ] as const) {
    const r = await runner.run(iscsi.nodeUpdateReq(iqn, portal, name, value));
    if (r.exitCode !== 0) throw commandFailed(runner.target, r);
  }
  const { file, text } = await recordFile(runner, portal, iqn);
  await runner.run({
    ...iscsi.writeRecordReq(file, iscsi.setRecordValues(text, { 'node.session.auth.password': chap.secret })),
    title: `CHAP secret of ${iqn} (record ${file})`,
  });
}

export interface DiscoveredTarget {
  iqn: string;
  /** The portal the target announced (behind NAT it may not be reachable from here). */
  announced: string;
  tpgt: number;
  /** The portal to log in through: the one that answered. */
  portal: string;
}

export async function discover(ctx: SessionBase, portalIn: string): Promise<DiscoveredTarget[]> {
  const { runner } = ctx;
  const portal = validatePortal(portalIn);
  const r = await runner.run(iscsi.discoverReq(portal));
  if (r.exitCode !== 0) {
    if (r.exitCode === iscsi.ISCSI_ERR.NO_OBJS_FOUND) return [];
    throw loginError(runner, portal, '(discovery)', r);
  }
  return iscsi.parseDiscovery(r.stdout).map((d) => ({ iqn: d.iqn, announced: d.portal, tpgt: d.tpgt, portal }));
}

export async function rescan(ctx: SessionBase): Promise<{ sessions: iscsi.IscsiSession[] }> {
  const { runner } = ctx;
  const list = await sessions(runner);
  if (list.length) {
    const r = await runner.run(iscsi.rescanAllReq());
    if (r.exitCode !== 0 && r.exitCode !== iscsi.ISCSI_ERR.NO_OBJS_FOUND) throw commandFailed(runner.target, r);
    await runner.run(settleReq(30));
  }
  return { sessions: await sessions(runner) };
}

function loginError(
  runner: Runner,
  portal: string,
  iqn: string,
  r: { argv: readonly string[]; exitCode: number; stderr: string },
): CowstackError {
  const base = commandFailed(runner.target, r);
  if (r.exitCode === iscsi.ISCSI_ERR.LOGIN_AUTH_FAILED || /authorization failure|auth/i.test(r.stderr)) {
    return new CowstackError(
      EXIT.PERMISSION,
      `the target ${iqn} at ${portal} refused this initiator (authorization failure)`,
      {
        hint:
          "check the target ACL for this node's initiator name (/etc/iscsi/initiatorname.iscsi) " +
          'and the CHAP settings',
        data: base.data,
        cause: base,
      },
    );
  }
  if (
    r.exitCode === iscsi.ISCSI_ERR.TRANS_TIMEOUT ||
    /timed out|connection refused|No route|unreachable/i.test(r.stderr)
  ) {
    return new CowstackError(EXIT.UNREACHABLE, `cannot connect to the iSCSI portal ${portal}`, {
      hint: 'check the portal address, the target service and the firewall',
      data: base.data,
      cause: base,
    });
  }
  if (/target not found|does not exist|non-existent/i.test(r.stderr)) {
    return new CowstackError(EXIT.NOT_FOUND, `the portal ${portal} has no target ${iqn}`, {
      hint: 'check the IQN (cowstack initiator discover PORTAL lists what the portal offers)',
      data: base.data,
      cause: base,
    });
  }
  return base;
}

async function waitForDevice(
  runner: Runner,
  portal: string,
  iqn: string,
  link: string,
  seconds: number,
): Promise<string> {
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

export async function logout(
  ctx: SessionBase,
  portalIn: string,
  iqnIn: string,
  opts: { force?: boolean; forget?: boolean } = {},
): Promise<LogoutResult> {
  const { runner } = ctx;
  const portal = validatePortal(portalIn);
  const iqn = validateIqn(iqnIn, 'target IQN');
  const session = (await sessions(runner)).find((s) => s.iqn === iqn && samePortal(s.portal, portal));
  let action: LogoutResult['action'] = 'none';
  if (session) {
    const users = (await Promise.all(session.disks.map((d) => holders(runner, d.device)))).flat();
    if (users.length && !opts.force) {
      throw refused(
        `the iSCSI disk of ${iqn} is in use by ${users.map((u) => u.name).join(', ')}; refusing to log out`,
        'deactivate the LVs and stop the lockspace first (vgchange --lockstop VG), or pass --force',
        { holders: users },
      );
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
