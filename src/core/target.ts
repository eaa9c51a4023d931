/**
 * The repository server: one iSCSI target per exported LUN, behind one interface for two
 * backends. LIO (kernel, through targetcli) is the default where it is installed; tgt
 * (userspace, tgtadm) is the fallback and what small labs start with. Both export the
 * device itself without the target's page cache (LIO block backstore, tgt O_DIRECT), both
 * allow only initiators named in an ACL, and both number the LUN 1.
 *
 * CHAP secrets arrive on stdin or from a file and reach LIO through configfs on stdin;
 * they never appear in an argv, a log line or the JSON result. tgt accepts secrets only on
 * tgtadm's command line (readable by every local user in ps), so cowstack refuses CHAP on tgt.
 */
import { createHash } from 'node:crypto';
import { CowstackError, EXIT, commandFailed, notFound, refused, usageError } from '../exec/errors.js';
import type { RunRequest, Runner } from '../exec/types.js';
import { rootProgram } from '../tools/rootPrograms.js';
import * as lio from '../tools/lio.js';
import * as tgt from '../tools/tgt.js';
import { writeFileReqs } from '../tools/files.js';
import * as host from '../tools/host.js';
import { runGuarded } from './executor.js';
import type { SessionBase } from './node.js';
import type { Step } from './plan.js';
import { parseSize, validateDevicePath, validateIqn } from './validate.js';

export type TargetBackend = 'lio' | 'tgt';
export type BackendChoice = TargetBackend | 'auto';

export interface TargetLun {
  lun: number;
  /** Device or file the LUN exports. */
  backing: string;
  /** block (LIO iblock), fileio (LIO file), rdwr (tgt). */
  store: string;
  /** True when the target bypasses its page cache for this LUN. */
  direct: boolean;
}

export interface TargetView {
  iqn: string;
  backend: TargetBackend;
  luns: TargetLun[];
  acls: string[];
  chap: boolean;
  sessions: string[];
}

/** A session on the repository server: no VG, the target software to drive. */
export interface TargetSession extends SessionBase {
  backend: BackendChoice;
}

export const TGT_CONF = '/etc/tgt/conf.d/cowstack.conf';

// ---- backend choice ------------------------------------------------------------------------

/** Installed where the distribution puts it (the path sudoers names); no python start-up. */
async function has(runner: Runner, program: 'targetcli' | 'tgtadm'): Promise<boolean> {
  const r = await runner.run(host.existsReq(rootProgram(program)!.path, 'executable'));
  return r.exitCode === 0;
}

export async function resolveBackend(runner: Runner, choice: BackendChoice): Promise<TargetBackend> {
  if (choice !== 'auto' && choice !== 'lio' && choice !== 'tgt')
    throw usageError(`backend "${choice}" is not lio, tgt or auto`);
  const lioThere = choice !== 'tgt' && (await has(runner, 'targetcli'));
  if (choice === 'lio' || (choice === 'auto' && lioThere)) {
    if (!lioThere)
      throw new CowstackError(EXIT.MISSING, `targetcli is not installed on ${runner.target}`, {
        hint: 'apt-get install targetcli-fb (LIO), or use --backend tgt',
      });
    return 'lio';
  }
  if (!(await has(runner, 'tgtadm'))) {
    throw new CowstackError(EXIT.MISSING, `neither targetcli (LIO) nor tgtadm (tgt) is installed on ${runner.target}`, {
      hint: 'apt-get install targetcli-fb, or apt-get install tgt',
    });
  }
  return 'tgt';
}

// ---- observation ---------------------------------------------------------------------------

async function tgtTargets(runner: Runner): Promise<tgt.TgtTarget[]> {
  const r = await runner.run(tgt.showReq());
  if (r.exitCode !== 0) {
    throw new CowstackError(EXIT.MISSING, `tgtd is not running on ${runner.target}`, {
      hint: 'start it: systemctl enable --now tgt (or run tgtd)',
      data: { stderr: r.stderr.trim() },
    });
  }
  return tgt.parseShow(r.stdout);
}

const fromTgt = (t: tgt.TgtTarget): TargetView => ({
  iqn: t.iqn,
  backend: 'tgt',
  luns: t.luns
    .filter((l) => l.type !== 'controller')
    .map((l) => ({ lun: l.lun, backing: l.path, store: 'rdwr', direct: l.flags.includes('direct') })),
  acls: t.acls,
  chap: t.accounts.length > 0,
  sessions: t.sessions,
});

const fromLio = (t: lio.LioTarget): TargetView => ({
  iqn: t.iqn,
  backend: 'lio',
  // iblock submits bios to the device; fileio was created with write_back=false.
  luns: t.luns.map((l) => ({ lun: l.lun, backing: l.device, store: l.type, direct: l.type === 'block' })),
  acls: t.acls,
  chap: t.authentication,
  sessions: t.sessions,
});

export async function listTargets(ctx: TargetSession): Promise<TargetView[]> {
  const backend = await resolveBackend(ctx.runner, ctx.backend);
  if (backend === 'tgt') return (await tgtTargets(ctx.runner)).map(fromTgt);
  const out: TargetView[] = [];
  for (const iqn of await lio.listTargetNames(ctx.runner)) {
    const t = await lio.readTarget(ctx.runner, iqn);
    if (t) out.push(fromLio(t));
  }
  return out;
}

export async function showTarget(ctx: TargetSession, iqnIn: string): Promise<TargetView> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  const found = await findTarget(ctx, iqn);
  if (!found) throw notFound(`no target ${iqn} on ${ctx.runner.target}`, 'list them with: cowstack target list');
  return found.view;
}

async function findTarget(
  ctx: TargetSession,
  iqn: string,
): Promise<{ backend: TargetBackend; view: TargetView; tid?: number } | undefined> {
  const backend = await resolveBackend(ctx.runner, ctx.backend);
  if (backend === 'tgt') {
    const t = (await tgtTargets(ctx.runner)).find((x) => x.iqn === iqn);
    return t && { backend, view: fromTgt(t), tid: t.tid };
  }
  const t = await lio.readTarget(ctx.runner, iqn);
  return t && { backend, view: fromLio(t) };
}

// ---- create / delete -------------------------------------------------------------------------

export interface CreateOptions {
  device?: string;
  file?: string;
  size?: string;
}

export interface TargetResult {
  iqn: string;
  backend: TargetBackend;
  action: 'created' | 'deleted' | 'changed' | 'none' | 'saved';
  target?: TargetView;
  detail?: string;
}

/** Backstore name derived from the IQN: the same target always gets the same backstore. */
export const storeName = (iqn: string) => `cowstack_${createHash('sha256').update(iqn).digest('hex').slice(0, 12)}`;

function validateFilePath(p: string): string {
  if (!/^\/[A-Za-z0-9._:@+/-]+$/.test(p ?? '') || p.split('/').includes('..')) {
    throw usageError(
      `file "${p}" is not a plain absolute path`,
      'give an absolute path without spaces or "..", e.g. /srv/cowstack/repo.img',
    );
  }
  return p;
}

export async function createTarget(ctx: TargetSession, iqnIn: string, o: CreateOptions): Promise<TargetResult> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  if (Boolean(o.device) === Boolean(o.file))
    throw usageError(
      'say --device DEV or --file FILE (one of them)',
      "a block device (an LV, a disk) is exported without the target's page cache",
    );
  const device = o.device ? validateDevicePath(o.device) : undefined;
  const file = o.file ? validateFilePath(o.file) : undefined;
  const sizeBytes = o.size ? parseSize(o.size, '--size') : undefined;
  if (file && sizeBytes === undefined)
    throw usageError('--file needs --size (the LUN size)', 'e.g. --file /srv/cowstack/repo.img --size 100G');
  if (device && o.size) throw usageError('--size applies to --file only: a device LUN has the size of the device');
  const backing = (device ?? file)!;
  const existing = await findTarget(ctx, iqn);
  if (existing) {
    const lun = existing.view.luns.find((l) => l.lun === 1);
    if (lun && lun.backing === backing)
      return { iqn, backend: existing.backend, action: 'none', target: existing.view };
    throw refused(
      `target ${iqn} already exists and exports ${lun?.backing || 'no LUN 1'}, not ${backing}`,
      `delete it first: cowstack target delete ${iqn}`,
      { target: existing.view },
    );
  }
  const backend = await resolveBackend(ctx.runner, ctx.backend);
  if (backend === 'lio' && !/^(iqn\.\d{4}-\d{2}\.[^.:]+\.[^:]+|eui\.)/.test(iqn)) {
    // rtslib wants a naming authority of at least two labels ("WWN not valid as: iqn, naa, eui").
    throw usageError(
      `LIO refuses the target name "${iqn}": its domain part needs at least two labels`,
      'e.g. iqn.2003-01.org.example.repo:lun1',
    );
  }
  const steps =
    backend === 'lio'
      ? await lioCreateSteps(ctx, iqn, device, file, sizeBytes)
      : await tgtCreateSteps(ctx, iqn, device, file, sizeBytes);
  await runGuarded(ctx, steps);
  if (ctx.dryRun) return { iqn, backend, action: 'created' };
  return { iqn, backend, action: 'created', target: (await findTarget(ctx, iqn))?.view };
}

async function lioCreateSteps(
  ctx: TargetSession,
  iqn: string,
  device: string | undefined,
  file: string | undefined,
  sizeBytes: number | undefined,
): Promise<Step[]> {
  const name = storeName(iqn);
  const type: lio.LioStore = device ? 'block' : 'fileio';
  const stores = await lio.listStores(ctx.runner);
  const clash = stores.find((s) => s.device === (device ?? file) && s.name !== name);
  if (clash)
    throw refused(
      `${device ?? file} is already exported by the LIO backstore ${clash.name}`,
      'a LUN exported twice is a LUN written by two targets: remove the other export first',
    );
  const steps: Step[] = [];
  if (!stores.some((s) => s.name === name)) {
    steps.push({
      title: `backstore ${name}`,
      req: device ? lio.createBlockReq(name, device) : lio.createFileReq(name, file!, sizeBytes!),
      undo: [lio.deleteStoreReq(type, name)],
    });
  }
  steps.push(
    { title: `target ${iqn}`, req: lio.createTargetReq(iqn), undo: [lio.deleteTargetReq(iqn)] },
    { title: `LUN 1 of ${iqn}`, req: lio.createLunReq(iqn, type, name) },
    { title: `ACL-only access to ${iqn}`, req: lio.tpgAttributesReq(iqn, false) },
  );
  return steps;
}

async function tgtCreateSteps(
  ctx: TargetSession,
  iqn: string,
  device: string | undefined,
  file: string | undefined,
  sizeBytes: number | undefined,
): Promise<Step[]> {
  const targets = await tgtTargets(ctx.runner);
  const backing = (device ?? file)!;
  const clash = targets.find((t) => t.luns.some((l) => l.path === backing));
  if (clash)
    throw refused(
      `${backing} is already exported by the tgt target ${clash.iqn}`,
      'a LUN exported twice is a LUN written by two targets: remove the other export first',
    );
  const tid = Math.max(0, ...targets.map((t) => t.tid)) + 1;
  const steps: Step[] = [];
  if (file) {
    // tgt does not create its backing file: make a sparse one of the asked size (never shrink one).
    steps.push({
      title: `backing file ${file}`,
      req: tgt.sparseFileReq(file, sizeBytes!),
    });
  }
  steps.push(
    { title: `target ${iqn}`, req: tgt.newTargetReq(tid, iqn), undo: [tgt.deleteTargetReq(tid, true)] },
    { title: `LUN 1 of ${iqn}`, req: tgt.newLunReq(tid, 1, backing) },
  );
  return steps;
}

export async function deleteTarget(
  ctx: TargetSession,
  iqnIn: string,
  opts: { force?: boolean } = {},
): Promise<TargetResult> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  const found = await findTarget(ctx, iqn);
  const backend = found?.backend ?? (await resolveBackend(ctx.runner, ctx.backend));
  if (!found) return { iqn, backend, action: 'none' };
  if (found.view.sessions.length && !opts.force) {
    throw refused(
      `target ${iqn} has sessions from ${found.view.sessions.join(', ')}; refusing to delete it`,
      'log those initiators out first (cowstack initiator logout), or pass --force (they get I/O errors)',
      { sessions: found.view.sessions },
    );
  }
  const steps: Step[] = [];
  if (found.backend === 'tgt') {
    steps.push({ title: `delete target ${iqn}`, req: tgt.deleteTargetReq(found.tid!, Boolean(opts.force)) });
  } else {
    steps.push({ title: `delete target ${iqn}`, req: lio.deleteTargetReq(iqn) });
    for (const l of found.view.luns) {
      if (l.store === 'block' || l.store === 'fileio')
        steps.push({ title: `delete backstore ${storeName(iqn)}`, req: lio.deleteStoreReq(l.store, storeName(iqn)) });
    }
  }
  await runGuarded(ctx, steps);
  return { iqn, backend, action: 'deleted' };
}

// ---- ACLs and CHAP ---------------------------------------------------------------------------

async function mustFind(ctx: TargetSession, iqn: string) {
  const found = await findTarget(ctx, iqn);
  if (!found)
    throw notFound(
      `no target ${iqn} on ${ctx.runner.target}`,
      `create it first: cowstack target create ${iqn} --device DEV`,
    );
  return found;
}

export async function aclAdd(ctx: TargetSession, iqnIn: string, initiatorIn: string): Promise<TargetResult> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  const initiator = validateIqn(initiatorIn, 'initiator IQN');
  const found = await mustFind(ctx, iqn);
  if (found.view.acls.includes(initiator)) return { iqn, backend: found.backend, action: 'none', target: found.view };
  const req = found.backend === 'lio' ? lio.createAclReq(iqn, initiator) : tgt.bindInitiatorReq(found.tid!, initiator);
  await runGuarded(ctx, [{ title: `allow ${initiator} on ${iqn}`, req }]);
  return {
    iqn,
    backend: found.backend,
    action: 'changed',
    target: ctx.dryRun ? found.view : (await findTarget(ctx, iqn))?.view,
  };
}

export async function aclRm(
  ctx: TargetSession,
  iqnIn: string,
  initiatorIn: string,
  opts: { force?: boolean } = {},
): Promise<TargetResult> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  const initiator = validateIqn(initiatorIn, 'initiator IQN');
  const found = await mustFind(ctx, iqn);
  if (!found.view.acls.includes(initiator)) return { iqn, backend: found.backend, action: 'none', target: found.view };
  if (found.view.sessions.includes(initiator) && !opts.force) {
    throw refused(
      `${initiator} is logged in to ${iqn}; refusing to revoke its access`,
      'log it out first (cowstack initiator logout on that node), or pass --force',
    );
  }
  const req =
    found.backend === 'lio' ? lio.deleteAclReq(iqn, initiator) : tgt.unbindInitiatorReq(found.tid!, initiator);
  await runGuarded(ctx, [{ title: `revoke ${initiator} on ${iqn}`, req }]);
  return {
    iqn,
    backend: found.backend,
    action: 'changed',
    target: ctx.dryRun ? found.view : (await findTarget(ctx, iqn))?.view,
  };
}

/** RFC 3720 wants at least 96 bits of secret; many initiators cap it at 16 characters' worth of entropy plus. */
export function validateChap(user: string, secret: string): void {
  if (!/^[A-Za-z0-9._:@-]{1,64}$/.test(user ?? ''))
    throw usageError(`CHAP user "${user}" is not 1-64 of A-Z a-z 0-9 . _ : @ -`);
  if (secret.length < 12 || secret.length > 255 || /[\s"'\\]/.test(secret) || /[^\x21-\x7e]/.test(secret)) {
    // The secret is never echoed, not even in this error.
    throw usageError(
      `the CHAP secret must be 12 to 255 printable characters without spaces or quotes (got ${secret.length} ` +
        'characters)',
      'RFC 3720 asks for at least 12; generate one with: openssl rand -base64 12',
    );
  }
}

/**
 * CHAP for every ACL of the target (each node logs in with the same user and secret).
 * Only LIO: see the module comment for why tgt is refused.
 */
export async function setChap(ctx: TargetSession, iqnIn: string, user: string, secret: string): Promise<TargetResult> {
  const iqn = validateIqn(iqnIn, 'target IQN');
  validateChap(user, secret);
  const found = await mustFind(ctx, iqn);
  if (found.backend === 'tgt') {
    throw refused(
      `tgt takes CHAP secrets only on tgtadm's command line, where every local user can read them (ps); ` +
        'cowstack does not put secrets in an argv',
      'export the LUN with LIO (cowstack target create --backend lio) for CHAP, ' +
        'or restrict tgt to ACLs on a private network',
    );
  }
  if (!found.view.acls.length)
    throw refused(
      `target ${iqn} has no ACLs: CHAP is set per ACL`,
      `add the nodes first: cowstack target acl add ${iqn} INITIATOR_IQN`,
    );
  const steps: Step[] = [];
  for (const acl of found.view.acls) {
    steps.push({ title: `CHAP user for ${acl}`, req: lio.aclAuthReq(iqn, acl, 'userid', user) });
    steps.push({ title: `CHAP secret for ${acl}`, req: lio.aclAuthReq(iqn, acl, 'password', secret) });
  }
  steps.push({ title: `require CHAP on ${iqn}`, req: lio.tpgAttributesReq(iqn, true) });
  await runGuarded(ctx, steps);
  return {
    iqn,
    backend: 'lio',
    action: 'changed',
    detail: `CHAP user ${user} on ${found.view.acls.length} ACL(s)`,
    target: ctx.dryRun ? found.view : (await findTarget(ctx, iqn))?.view,
  };
}

// ---- persistence ---------------------------------------------------------------------------

/** Persist the running configuration so the target comes back after a reboot of the server. */
export async function saveTargets(ctx: TargetSession): Promise<TargetResult & { file: string }> {
  const backend = await resolveBackend(ctx.runner, ctx.backend);
  if (backend === 'lio') {
    await runGuarded(ctx, [{ title: 'save LIO configuration', req: lio.saveReq() }]);
    return { iqn: '', backend, action: 'saved', file: '/etc/rtslib-fb-target/saveconfig.json' };
  }
  const dump = await ctx.runner.run(tgt.dumpReq());
  if (dump.exitCode !== 0) throw commandFailed(ctx.runner.target, dump);
  const steps: Step[] = writeFileReqs(
    TGT_CONF,
    `# written by cowstack target save: the running tgt configuration\n${dump.stdout}`,
    '0600',
  ).map((req: RunRequest) => ({ title: req.title ?? `save ${TGT_CONF}`, req }));
  await runGuarded(ctx, steps);
  return { iqn: '', backend, action: 'saved', file: TGT_CONF };
}
