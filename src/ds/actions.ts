/**
 * OpenNebula datastore (DS_MAD) actions mapped onto cowstack's core operations. They run on
 * the front-end and act on the repository VG through one cluster node (the datastore's
 * BRIDGE_LIST, then tm.hosts: the first that answers), whose node lock they hold while they
 * change anything. Each is idempotent: oned may run an action again. What oned reads from
 * stdout (SOURCE and FORMAT, a size, monitor lines, export XML) is all they print there.
 * See README "OpenNebula datastore driver".
 */
import { CowstackError, EXIT, refused, usageError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as lvm from '../tools/lvm.js';
import { copyImage } from '../core/flatten.js';
import { copyImageToVg } from '../core/imageCopy.js';
import { removeImageAndLineage } from '../core/gc.js';
import { prepareSource } from '../core/imageSource.js';
import { createImage, exposeImage, importImage, sealImage } from '../core/images.js';
import { nodeSession, type NodeSession } from '../core/node.js';
import { retryAction, type LockPolicy } from '../core/plan.js';
import { formatSize } from '../core/validate.js';
import { sizeMb, totalsText } from '../tm/monitorFormat.js';
import { imageLv, type DsRequest } from './args.js';

export interface DsEnv {
  vg: string;
  scope: lvm.LvmScope;
  /** The runner for a host (cached: one ssh control connection per host). */
  runnerFor(host: string): Runner;
  /** Cluster nodes to use after the datastore's BRIDGE_LIST (config tm.hosts). */
  hosts: string[];
  /**
   * Runs `fn` holding `host`'s node lock of `vg` (core/nodeLock.ts), and of `also` (another
   * repository VG the action reads from) when given; `change`: the action writes there.
   */
  locked<T>(host: string, change: boolean, fn: () => Promise<T>, also?: string): Promise<T>;
  /** Every configured repository VG (config repositories): clone copies an image from any of them. */
  repositories?: readonly string[];
  info(msg: string): void;
  out(text: string): void;
  observer?: NodeSession['observer'];
  lockPolicy?: LockPolicy;
}

type Req<A extends DsRequest['action']> = Extract<DsRequest, { action: A }>;

const ctxOf = (env: DsEnv, host: string): NodeSession =>
  nodeSession({
    runner: env.runnerFor(host),
    vg: env.vg,
    scope: env.scope,
    observer: env.observer,
    lockPolicy: env.lockPolicy,
  });

function checkVg(env: DsEnv, src: { vg: string; lv: string }, dsId: number): void {
  if (src.vg !== env.vg)
    throw usageError(
      `image SOURCE ${src.vg}/${src.lv} is not in VG ${env.vg}, the repository of datastore ${dsId}`,
      `map datastore ${dsId} to ${src.vg} in config repositories (or repository.vg); to use the image in ` +
        `${env.vg}, copy it there: cowstack image copy ${src.lv} --vg ${src.vg} --to-vg ${env.vg}`,
    );
}

/** Runs `fn` on the first node that answers: BRIDGE_LIST first, then tm.hosts. */
async function onNode<T>(
  env: DsEnv,
  req: DsRequest,
  change: boolean,
  fn: (ctx: NodeSession) => Promise<T>,
  also?: string,
) {
  const hosts = [...new Set([...req.ds.bridges, ...env.hosts])];
  if (!hosts.length)
    throw usageError(
      `ds ${req.action} of datastore ${req.ds.id} needs a cluster node that sees the repository VG`,
      'set BRIDGE_LIST on the datastore, or tm.hosts in /etc/cowstack/cowstack.yaml',
    );
  let last: unknown;
  for (const host of hosts) {
    try {
      return await env.locked(host, change, () => fn(ctxOf(env, host)), also);
    } catch (e) {
      if (!(e instanceof CowstackError && e.exitCode === EXIT.UNREACHABLE)) throw e;
      env.info(`host ${host} is unreachable`);
      last = e;
    }
  }
  throw last;
}

async function cp(env: DsEnv, req: Req<'cp'>): Promise<void> {
  const name = imageLv(req.image);
  const r = await onNode(env, req, true, (ctx) => importImage(ctx, name, req.path));
  env.info(
    `image ${req.image}: ${r.action === 'none' ? 'already imported' : 'imported'} as ${env.vg}/${name} ` +
      `(${r.sourceFormat}, ${formatSize(r.sizeBytes ?? 0)}, source sha256 ${r.sourceSha256}, image sha256 ${r.sha256})`,
  );
  env.out(`${env.vg}/${name} raw\n`);
}

async function stat(env: DsEnv, req: Req<'stat'>): Promise<void> {
  // The size the image will have: a compressed or qcow2 source is expanded to know it.
  const src = await prepareSource(req.path);
  try {
    env.out(`${sizeMb(src.bytes)}\n`);
  } finally {
    await src.cleanup();
  }
}

async function mkfs(env: DsEnv, req: Req<'mkfs'>): Promise<void> {
  const name = imageLv(req.image);
  // Save-as: the TM's cpds creates this image from the VM's disk; only its name is wanted now.
  if (req.saveAs) return env.out(`${env.vg}/${name}\n`);
  if (req.fs)
    throw refused(
      `image ${req.image}: cowstack makes raw, unformatted datablocks and cannot make a ${req.fs} file system`,
      'create the datablock without FS and format it inside the VM',
    );
  if (req.format !== 'raw')
    throw refused(
      `image ${req.image}: FORMAT ${req.format} is not supported: cowstack images are raw LVs`,
      'create the datablock with FORMAT raw (or without FORMAT)',
    );
  // Zeroed (a new LV holds what deleted ones left) and sealed, so VMs can clone it at once.
  await onNode(env, req, true, async (ctx) => {
    await createImage(ctx, name, `${req.sizeMb}M`);
    await sealImage(ctx, name);
  });
  env.info(`image ${req.image}: empty ${req.sizeMb} MiB datablock ${env.vg}/${name}`);
  env.out(`${env.vg}/${name}\n`);
}

async function rm(env: DsEnv, req: Req<'rm'>): Promise<void> {
  checkVg(env, req.source, req.ds.id);
  const removed = await onNode(env, req, true, (ctx) => removeImageAndLineage(ctx, req.source.lv));
  env.info(
    removed.length ? `removed ${removed.join(', ')}` : `${env.vg}/${req.source.lv} does not exist: nothing to do`,
  );
}

/**
 * OpenNebula's image clone. Into the same repository: copyImage. From another configured
 * repository (`oneimage clone IMG NAME --datastore ID` onto a datastore mapped to another VG):
 * the image is copied across (core/imageCopy.ts, verified against its recorded sha256): how
 * an image reaches a second repository (README "Growing a site: several repositories").
 */
async function clone(env: DsEnv, req: Req<'clone'>): Promise<void> {
  const name = imageLv(req.image);
  if (req.from.vg !== env.vg && env.repositories?.includes(req.from.vg)) {
    const c = await onNode(
      env,
      req,
      true,
      (ctx) => copyImageToVg({ ...ctx, vg: req.from.vg }, ctx, req.from.lv, name),
      req.from.vg,
    );
    env.info(
      `image ${req.image}: ${c.action === 'none' ? 'already copied' : 'copied'} from ${req.from.vg}/${req.from.lv} ` +
        `into repository ${env.vg} (sha256 ${c.sha256} verified)`,
    );
    return env.out(`${env.vg}/${name} raw\n`);
  }
  checkVg(env, req.from, req.ds.id);
  const r = await onNode(env, req, true, (ctx) => copyImage(ctx, req.from.lv, name));
  env.info(
    `image ${req.image}: ${r.action === 'none' ? 'already copied' : 'copied'} from ${req.from.lv} (sha256 ${r.sha256})`,
  );
  env.out(`${env.vg}/${name} raw\n`);
}

const cdata = (s: string) => `<![CDATA[${s.replace(/]]>/g, ']]]]><![CDATA[>')}]]>`;

/**
 * What the marketplace needs to fetch the image (OpenNebula's IMPORT_INFO): an ssh:// source
 * its downloader reads with `cat` on the node where the image is active, its size and format,
 * its MD5 (read on the node, as OpenNebula's own export does: the marketplace records it) and
 * the sha256 recorded when it was sealed (cowstack's checksum of the whole LV).
 */
async function exportInfo(env: DsEnv, req: Req<'export'>): Promise<void> {
  checkVg(env, req.source, req.ds.id);
  let host = '';
  const x = await onNode(env, req, true, (ctx) => {
    host = ctx.runner.target;
    return exposeImage(ctx, req.source.lv, { md5: true });
  });
  env.info(`${env.vg}/${x.name} is readable at ${x.device} on ${host}`);
  env.out(
    '<IMPORT_INFO>' +
      `<IMPORT_SOURCE>${cdata(`ssh://${host}:${x.device}`)}</IMPORT_SOURCE>` +
      (x.md5 ? `<MD5>${cdata(x.md5)}</MD5>` : '') +
      (x.sha256 ? `<SHA256>${cdata(x.sha256)}</SHA256>` : '') +
      `<SIZE>${cdata(String(req.sizeMb ?? sizeMb(x.sizeBytes)))}</SIZE>` +
      `<FORMAT>${cdata('raw')}</FORMAT>` +
      '<DISPOSE>NO</DISPOSE></IMPORT_INFO>\n',
  );
}

async function monitor(env: DsEnv, req: Req<'monitor'>): Promise<void> {
  const vg = await onNode(env, req, false, async (ctx) => (await lvm.vgs(ctx.runner, env.vg, env.scope))[0]);
  if (!vg) throw refused(`repository VG ${env.vg} is not visible`, 'check repository.vg and the nodes in BRIDGE_LIST');
  env.out(totalsText(vg));
}

export async function runDs(env: DsEnv, req: DsRequest): Promise<void> {
  switch (req.action) {
    case 'cp':
      return cp(env, req);
    case 'stat':
      return stat(env, req);
    case 'mkfs':
      return mkfs(env, req);
    case 'rm':
      return rm(env, req);
    case 'clone':
      return clone(env, req);
    case 'export':
      return exportInfo(env, req);
    case 'monitor':
      return monitor(env, req);
    case 'snap_flatten':
      throw refused(
        `image ${req.image} has no image snapshots to flatten: the cowstack datastore keeps none`,
        "a persistent image's history is its lineage of sync-backs; " +
          'save a VM disk snapshot as a new image (disk-saveas) instead',
      );
  }
}

/** Runs the action, again from a fresh observation on a transient lock error: each is idempotent. */
export async function runDsWithRetry(env: DsEnv, req: DsRequest): Promise<void> {
  return retryAction(env.lockPolicy, env.info, () => runDs(env, req));
}
