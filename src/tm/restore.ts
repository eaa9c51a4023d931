/**
 * TM `restore HOST:VM_DIR VM_ID IMG_ID INC_ID DISK_ID` (OpenNebula's `onevm restore` of a
 * powered-off VM), as OpenNebula's own drivers do it (src/tm_mad/lvm/restore): the VM, backup
 * image and backup datastore XML from oned (here its CLI, `one* show -x`), the backup
 * datastore driver's `ls -i INC_ID` for the URL of each disk's backup up to that increment,
 * `downloader.sh --nodecomp URL -` for the disk's content at that point (the datastore merges
 * a full backup and its increments into one qcow2), copied into the VM directory on the host.
 * There it becomes the disk: core/restoreDisk.ts. See ../shared/reference/opennebula-tm.md.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { notFound, refused, usageError } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as backupFiles from '../tools/backupFiles.js';
import * as fsReq from '../tools/host.js';
import * as one from '../tools/one.js';
import { validateBackupPath } from '../core/backups.js';
import type { NodeSession } from '../core/node.js';
import { observeNode } from '../core/observe.js';
import { planDiskRestore, refuseOpenDisk, restoreDisk, type DiskRestorePlan } from '../core/restoreDisk.js';
import { restoredName, type CowOptions } from '../core/vmDisks.js';
import { diskLv, parseId, xmlValue, type TmRequest } from './args.js';

export type RestoreRequest = Extract<TmRequest, { action: 'restore' }>;

/** OpenNebula's remotes directory on the front-end (the TM script's ../..): where `datastore/` is. */
export const DEFAULT_ONE_REMOTES = '/var/lib/one/remotes';

export interface RestoreDeps {
  /** The VM's host. */
  ctx: NodeSession;
  /** The front-end, where oned's CLI and the datastore drivers run. */
  local: Runner;
  remotes: string;
  cow: CowOptions;
  /** --dry-run: the plan is said (INFO lines) and nothing is downloaded or changed. */
  dryRun?: boolean;
  info(msg: string): void;
  /** D becomes a symlink to the disk's device (the TM's link). */
  link(device: string, diskPath: string): Promise<void>;
}

/**
 * The URL of each disk's backup, from the backup datastore's `ls` (`tpm`, a TPM state and not
 * a disk, is left), and the VM's XML.
 */
export async function listBackup(
  local: Runner,
  remotes: string,
  req: Pick<RestoreRequest, 'vmId' | 'imgId' | 'incId' | 'diskId'>,
): Promise<{ urls: Map<number, string>; vmXml: string }> {
  const vmXml = (await local.run(one.showXmlReq('onevm', req.vmId))).stdout.trim();
  const imgXml = (await local.run(one.showXmlReq('oneimage', req.imgId))).stdout.trim();
  const dsId = parseId(xmlValue(imgXml, 'DATASTORE_ID'), `DATASTORE_ID of backup image ${req.imgId}`);
  const dsXml = (await local.run(one.showXmlReq('onedatastore', dsId))).stdout.trim();
  const mad = xmlValue(dsXml, 'DS_MAD') ?? '';
  if (!/^[a-z0-9_]+$/.test(mad))
    throw usageError(`DS_MAD "${mad}" of datastore ${dsId} is not a driver name`, 'check the backup datastore');
  // As OpenNebula's TM drivers call it: the datastore, then the VM and the image (lib/datastore.rb).
  const action = `<DS_DRIVER_ACTION_DATA>\n${dsXml}\n${vmXml}\n${imgXml}\n</DS_DRIVER_ACTION_DATA>\n`;
  const out = (await local.run(one.backupLsReq(remotes, mad, req.incId, action))).stdout;
  let listed: unknown;
  try {
    listed = JSON.parse(out);
  } catch {
    throw usageError(`the ${mad} datastore's ls printed no JSON: ${out.slice(0, 200)}`);
  }
  if (!listed || typeof listed !== 'object' || Array.isArray(listed))
    throw usageError(`the ${mad} datastore's ls printed ${out.slice(0, 200)}, not an object of disk URLs`);
  const urls = new Map<number, string>();
  for (const [id, url] of Object.entries(listed as Record<string, unknown>)) {
    if (id === 'tpm') continue;
    const diskId = parseId(id, `disk id listed by the ${mad} datastore`);
    // Handed to downloader.sh as one argument, never to a shell: no spaces or control characters.
    if (typeof url !== 'string' || !/^[a-z0-9+]+:\/\/[\x21-\x7e]+$/.test(url))
      throw usageError(`the ${mad} datastore listed disk ${id} as ${JSON.stringify(url)}, not a URL`);
    if (req.diskId === -1 || diskId === req.diskId) urls.set(diskId, url);
  }
  return { urls, vmXml };
}

/** The ids of the VM's persistent disks (TEMPLATE/DISK with PERSISTENT=YES in its XML). */
export function persistentDisks(vmXml: string): Set<number> {
  const ids = new Set<number>();
  for (const [, disk] of vmXml.matchAll(/<DISK>([\s\S]*?)<\/DISK>/g)) {
    const id = xmlValue(disk!, 'DISK_ID');
    if (id !== undefined && (xmlValue(disk!, 'PERSISTENT') ?? '').toUpperCase() === 'YES') ids.add(Number(id));
  }
  return ids;
}

/** The point's short name in the restored image's name: same URL, same content. */
const pointKey = (url: string) => createHash('sha256').update(url).digest('hex').slice(0, 8);

export async function restore(deps: RestoreDeps, req: RestoreRequest): Promise<void> {
  const { ctx, info } = deps;
  const { urls, vmXml } = await listBackup(deps.local, deps.remotes, req);
  const what = `backup image ${req.imgId}${req.incId === -1 ? '' : ` up to increment ${req.incId}`}`;
  if (!urls.size)
    throw notFound(
      `${what} has ${req.diskId === -1 ? 'no disks' : `no disk ${req.diskId}`}`,
      'check the backup (oneimage show) and the disk id',
    );
  // A persistent disk's top is a COW on its image's lineage, which undeploy syncs back into
  // (mvds): a top made on a restored image could not go back there.
  const persistent = [...urls.keys()].filter((d) => persistentDisks(vmXml).has(d));
  if (persistent.length)
    throw refused(
      `disk(s) ${persistent.join(', ')} of VM ${req.vmId} are persistent: cowstack restores non-persistent disks`,
      'restore the backup as new images (oneimage restore) and attach those, or restore the other disks by id',
    );
  let state = await observeNode(ctx);
  const plans: Array<{ diskId: number; url: string; file: string; plan: DiskRestorePlan }> = [];
  for (const [diskId, url] of urls) {
    const top = diskLv(req.vmId, diskId);
    const file = validateBackupPath(`${req.vmDir}/disk.${diskId}.backup`, 'backup file');
    plans.push({ diskId, url, file, plan: planDiskRestore(state, top, restoredName(top, req.imgId, pointKey(url))) });
  }
  // Every disk is checked before any is touched: a running VM is refused as a whole.
  for (const p of plans) state = await refuseOpenDisk(ctx, state, p.plan.top);
  for (const { diskId, url, file, plan } of plans) {
    const gone = plan.remove.length ? `, replacing ${plan.remove.join(', ')}` : '';
    const src = plan.fill ? ` from ${url} via ${file}` : ' (restored already)';
    info(`disk ${diskId}: ${plan.top} becomes a clone of ${plan.image}${src}${gone}`);
  }
  if (deps.dryRun) return;
  for (const { diskId, url, file, plan } of plans) {
    if (plan.fill) await download(deps, url, file);
    try {
      const r = await restoreDisk(ctx, plan, [file], deps.cow);
      await deps.link(r.device, `${req.vmDir}/disk.${diskId}`);
      info(`disk ${diskId} restored from ${what}${r.sha256 ? ` (sha256 ${r.sha256})` : ''}: -> ${r.device}`);
    } finally {
      await ctx.runner.run(backupFiles.removeFileReq(file));
    }
  }
}

/** The disk's content at the backup point into `file` on the host, through a local temporary file. */
async function download(deps: RestoreDeps, url: string, file: string): Promise<void> {
  const tmp = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-restore-'));
  try {
    const local = path.join(tmp, 'disk.backup');
    await deps.local.run(one.downloadReq(deps.remotes, url, local));
    await deps.ctx.runner.run(fsReq.mkdirReq(path.posix.dirname(file)));
    await deps.ctx.runner.run(fsReq.storeFileReq(file, createReadStream(local), { timeout: 'data' }));
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
