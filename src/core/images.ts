/**
 * Image lifecycle: create (empty, zeroed, writable until sealed), import (raw/gzip/zstd/
 * qcow2, sealed with its checksum), seal, rename, rm, export. An image is written only
 * while it is "initializing" or "writable" and held exclusively; once sealed it is LVM
 * read-only on every node and is only ever mapped read-only.
 */
import { notFound, refused, usageError } from '../exec/errors.js';
import * as blockData from '../tools/blockData.js';
import * as lvm from '../tools/lvm.js';
import { lvMapperName, lvMapperPath } from './dmNames.js';
import { beginStep, endStep } from './journal.js';
import { roleTag, shaTag, sourceShaTag, stateTag, type ImageObj, type ImageState } from './metadata.js';
import { findImage, observeNode } from './observe.js';
import type { Step } from './plan.js';
import { activateStep, deactivateStep, lvRef } from './stack.js';
import { collectGarbage } from './clones.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { paddedStream, prepareSource, type SourceFormat } from './imageSource.js';
import { formatSize, parseSize, validateLvName, EXTENT, roundUp } from './validate.js';
import { whoHolds } from './holders.js';
import { refuseIfNoRoom } from './capacity.js';

export interface ImageResult {
  name: string;
  vg: string;
  uuid?: string;
  action: 'created' | 'imported' | 'sealed' | 'renamed' | 'removed' | 'exported' | 'none';
  sizeBytes?: number;
  /** The image's checksum: the whole LV, the content zero-padded to whole extents. */
  sha256?: string;
  /** import: the source file's checksum as given (what `sha256sum FILE` prints), and its format. */
  sourceSha256?: string;
  sourceFormat?: SourceFormat;
  state?: string;
  bytes?: number;
  seconds?: number;
}

export const newLvStep = (ctx: NodeSession, name: string, bytes: number): Step => ({
  title: `create image LV ${ctx.vg}/${name} (${formatSize(bytes)})`,
  req: lvm.createLvReq({ vg: ctx.vg, name, bytes, tags: [roleTag('image'), stateTag('initializing')] }, ctx.scope),
  undo: [lvm.removeLvReq(`${ctx.vg}/${name}`, ctx.scope)],
});

export const placeholder = (ctx: NodeSession, name: string) => ({ vg: ctx.vg, name }) as ImageObj;

/** sha256 of a whole LV, read on the node (nothing to read under --dry-run). */
export async function lvChecksum(ctx: NodeSession, name: string): Promise<string> {
  if (ctx.dryRun) return '';
  return blockData.parseChecksum((await ctx.runner.run(blockData.checksumReq(lvMapperPath(ctx.vg, name)))).stdout);
}

/** The one metadata change that seals an image: LVM read-only, state sealed, checksum recorded. */
export function sealStep(ctx: NodeSession, name: string, from: ImageState, sha: string, tags: string[] = []): Step {
  const ref = `${ctx.vg}/${name}`;
  const add = [stateTag('sealed'), ...(sha ? [shaTag(sha)] : []), ...tags];
  return {
    title: `seal ${ref} (read-only${sha ? ', sha256 recorded' : ''})`,
    req: lvm.changeLvReq(ref, { readOnly: true, tags: { del: [stateTag(from)], add } }, ctx.scope),
  };
}

/** The image of that name (undefined if none), and the repository's LVs as observed (their VG space). */
async function refuseExisting(
  ctx: NodeSession,
  name: string,
): Promise<{ existing?: ImageObj; lvs: readonly lvm.LvInfo[] }> {
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name);
  if (o?.kind === 'image') return { existing: o, lvs: state.repo.lvs };
  if (o || state.repo.foreign.some((l) => l.name === name))
    throw refused(
      `${ctx.vg}/${name} already exists${o ? ` (a ${o.kind})` : ' and is not managed by cowstack'}`,
      'pick another name',
    );
  return { lvs: state.repo.lvs };
}

export async function createImage(
  ctx: NodeSession,
  name: string,
  sizeText: string,
  opts: { zero?: boolean } = {},
): Promise<ImageResult> {
  validateLvName(name, 'image name');
  const bytes = roundUp(parseSize(sizeText, 'image size'), EXTENT);
  const { existing, lvs } = await refuseExisting(ctx, name);
  if (existing) {
    if (existing.state === 'initializing')
      throw refused(
        `${lvRef(existing)} exists from an interrupted create or import`,
        'run cowstack recover on the node that made it, or cowstack image rm it',
      );
    return {
      name,
      vg: ctx.vg,
      uuid: existing.uuid,
      sizeBytes: existing.sizeBytes,
      state: existing.state,
      action: 'none',
    };
  }
  refuseIfNoRoom(ctx.vg, lvs, bytes, `image ${name}`);
  const ref = `${ctx.vg}/${name}`;
  const journal = { op: 'create-image' as const, vg: ctx.vg, name };
  const steps: Step[] = [
    beginStep(journal),
    newLvStep(ctx, name, bytes),
    activateStep(placeholder(ctx, name), 'exclusive', ctx.scope),
  ];
  // A new LV holds whatever deleted LVs left on the LUN: zero it, or a VM could read another
  // tenant's data. Synchronous 4 MiB direct writes keep one request in flight: bulk zeroing
  // (blkdiscard --zeroout) queued so much on a slow path that sanlock's lease renewals on
  // the same LUN timed out and the node lost its lockspace.
  if (opts.zero !== false) {
    steps.push({
      title: `zero ${ref}`,
      req: blockData.zeroReq(lvMapperPath(ctx.vg, name), bytes / EXTENT),
    });
  }
  steps.push(deactivateStep(placeholder(ctx, name), ctx.scope));
  steps.push({
    title: `mark ${ref} writable`,
    req: lvm.tagLvReq(ref, { del: [stateTag('initializing')], add: [stateTag('writable')] }, ctx.scope),
  });
  steps.push(endStep(journal));
  await runGuarded(ctx, steps);
  const lv = ctx.dryRun ? undefined : await lvm.findLv(ctx.runner, ctx.vg, name, ctx.scope);
  return { name, vg: ctx.vg, uuid: lv?.uuid, sizeBytes: bytes, state: 'writable', action: 'created' };
}

export interface ImportOptions {
  seal?: boolean;
  /** Force the source format (`raw`: the bytes as they are); detected from the content by default. */
  format?: SourceFormat | 'auto';
  onProgress?: (bytes: number, total: number) => void;
}

export async function importImage(
  ctx: NodeSession,
  name: string,
  source: string,
  opts: ImportOptions = {},
): Promise<ImageResult> {
  validateLvName(name, 'image name');
  const { existing, lvs } = await refuseExisting(ctx, name);
  if (existing && existing.state !== 'initializing' && !existing.sourceSha256) {
    throw refused(
      `image ${lvRef(existing)} already exists (${existing.state})`,
      'remove it first or import under another name',
    );
  }
  const src = await prepareSource(source, { format: opts.format });
  let cleanupStream = () => {};
  try {
    if (existing && existing.state !== 'initializing') {
      // The import that made it completed: the same file again is done already.
      const sourceSha256 = await src.sourceSha256();
      if (existing.sourceSha256 === sourceSha256) {
        return {
          name,
          vg: ctx.vg,
          uuid: existing.uuid,
          sizeBytes: existing.sizeBytes,
          sha256: existing.sha256,
          sourceSha256,
          sourceFormat: src.format,
          state: existing.state,
          action: 'none',
        };
      }
      throw refused(
        `image ${lvRef(existing)} already exists (${existing.state}), imported from another file ` +
          `(source sha256 ${existing.sourceSha256}, this one ${sourceSha256})`,
        'remove it first or import under another name',
      );
    }
    const bytes = roundUp(src.bytes, EXTENT);
    // An interrupted import of the same name is removed first: its extents count as free.
    refuseIfNoRoom(ctx.vg, lvs, bytes - (existing?.sizeBytes ?? 0), `image ${name}`);
    const ref = `${ctx.vg}/${name}`;
    const journal = { op: 'import' as const, vg: ctx.vg, name };
    const started = Date.now();
    const data = paddedStream(src.path, src.bytes, bytes, (n) => opts.onProgress?.(n, bytes));
    data.digest.catch(() => undefined); // a failure before dd reads it is reported by the step
    cleanupStream = () => data.stream.destroy();
    const steps: Step[] = [beginStep(journal)];
    // A leftover from an interrupted import of the same name is ours to replace.
    if (existing)
      steps.push({
        title: `remove interrupted import ${ref}`,
        req: lvm.removeLvReq(ref, ctx.scope),
      });
    steps.push(newLvStep(ctx, name, bytes), activateStep(placeholder(ctx, name), 'exclusive', ctx.scope), {
      title: `write ${formatSize(bytes)} into ${ref}`,
      req: blockData.writeFromStdinReq(lvMapperPath(ctx.vg, name), data.stream),
    });
    await runGuarded(ctx, steps);
    const sha = ctx.dryRun ? '' : await data.digest;
    // A raw source was hashed on its way to dd; a compressed one is hashed as given.
    const sourceSha256 = ctx.dryRun ? '' : src.format === 'raw' ? await data.fileDigest : await src.sourceSha256();
    const seal = opts.seal !== false;
    const tags = sourceSha256 ? [sourceShaTag(sourceSha256)] : [];
    const finish: Step[] = [
      seal
        ? sealStep(ctx, name, 'initializing', sha, tags)
        : {
            title: `mark ${ref} writable`,
            req: lvm.tagLvReq(
              ref,
              { del: [stateTag('initializing')], add: [stateTag('writable'), ...(sha ? [shaTag(sha)] : []), ...tags] },
              ctx.scope,
            ),
          },
      deactivateStep(placeholder(ctx, name), ctx.scope),
      endStep(journal),
    ];
    await runGuarded(ctx, finish);
    const lv = ctx.dryRun ? undefined : await lvm.findLv(ctx.runner, ctx.vg, name, ctx.scope);
    return {
      name,
      vg: ctx.vg,
      uuid: lv?.uuid,
      sizeBytes: bytes,
      bytes: src.bytes,
      sha256: sha,
      sourceSha256,
      sourceFormat: src.format,
      state: seal ? 'sealed' : 'writable',
      action: 'imported',
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    cleanupStream();
    await src.cleanup();
  }
}

export async function sealImage(ctx: NodeSession, name: string): Promise<ImageResult> {
  const state = await observeNode(ctx);
  const o = findImage(state, name);
  if (o.state === 'sealed') return { name, vg: ctx.vg, uuid: o.uuid, sha256: o.sha256, state: o.state, action: 'none' };
  if (o.state !== 'writable')
    throw refused(`${lvRef(o)} is ${o.state}`, 'its create or import did not finish: run cowstack recover');
  const dev = state.devices.get(lvMapperName(o.vg, o.name));
  if (dev && dev.open > 0) {
    const users = await whoHolds(ctx.runner, lvMapperPath(o.vg, o.name));
    throw refused(
      `${lvRef(o)} is open on this node${users.length ? ` (${users.join(', ')})` : ''}; refusing to seal it`,
      'stop whatever writes it first',
    );
  }
  const steps: Step[] = [];
  // Holding it exclusively proves no other node is writing it while it is sealed.
  if (!o.lv.activeLocally) steps.push(activateStep(o, 'exclusive', ctx.scope));
  else if (!o.lv.activeExclusively)
    throw refused(`${lvRef(o)} is active shared on this node`, `cowstack deactivate ${lvRef(o)}`);
  await runGuarded(ctx, steps, o);
  const sha = await lvChecksum(ctx, o.name);
  await runGuarded(ctx, [sealStep(ctx, o.name, 'writable', sha), deactivateStep(o, ctx.scope)], o);
  return { name, vg: ctx.vg, uuid: o.uuid, sha256: sha, state: 'sealed', action: 'sealed' };
}

export async function renameImage(ctx: NodeSession, from: string, to: string): Promise<ImageResult> {
  validateLvName(to, 'new name');
  const state = await observeNode(ctx);
  const src = state.repo.byName.get(from);
  const dst = state.repo.byName.get(to);
  if (!src && dst?.kind === 'image') return { name: to, vg: ctx.vg, uuid: dst.uuid, action: 'none' };
  const o = findImage(state, from);
  if (dst || state.repo.foreign.some((l) => l.name === to))
    throw refused(`${ctx.vg}/${to} already exists`, 'pick another name');
  // Children point at the image's UUID and dm names derive from UUIDs: a rename breaks nothing.
  await runGuarded(
    ctx,
    [{ title: `rename ${lvRef(o)} to ${to}`, req: lvm.renameLvReq(ctx.vg, from, to, ctx.scope) }],
    o,
  );
  return { name: to, vg: ctx.vg, uuid: o.uuid, action: 'renamed' };
}

export async function removeImage(ctx: NodeSession, name: string): Promise<ImageResult> {
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name);
  if (!o) {
    validateLvName(name, 'image name');
    return { name, vg: ctx.vg, action: 'none' };
  }
  if (o.kind !== 'image') throw usageError(`${name} is a clone`, `use cowstack clone rm ${name}`);
  const kids = state.repo.childrenOf(o);
  if (kids.length)
    throw refused(
      `image ${lvRef(o)} has ${kids.length} clone(s): ${kids.map((k) => k.name).join(', ')}`,
      'remove or flatten the clones first',
      { children: kids.map((k) => k.name) },
    );
  const dev = state.devices.get(lvMapperName(o.vg, o.name));
  if (dev && dev.open > 0) throw refused(`image ${lvRef(o)} is open on this node`, 'stop what uses it first');
  const steps: Step[] = [];
  if (o.lv.activeLocally) steps.push(deactivateStep(o, ctx.scope));
  steps.push({
    title: `remove image ${lvRef(o)}`,
    req: lvm.removeLvReq(lvRef(o), ctx.scope),
  });
  await runGuarded(ctx, steps, o);
  return { name, vg: ctx.vg, uuid: o.uuid, action: 'removed' };
}

export async function exportImage(ctx: NodeSession, name: string, target: string): Promise<ImageResult> {
  const state = await observeNode(ctx);
  const o = state.repo.byName.get(name);
  if (!o) throw notFound(`no image named ${name} in ${ctx.vg}`);
  if (o.kind !== 'image')
    throw usageError(
      `${name} is a clone`,
      `flatten it into an image first: cowstack clone flatten ${name} --to NEWIMAGE`,
    );
  if (o.state === 'initializing') throw refused(`${lvRef(o)} is still initializing`);
  const mine = !o.lv.activeLocally;
  const started = Date.now();
  if (mine) await runGuarded(ctx, [activateStep(o, o.state === 'sealed' ? 'shared' : 'exclusive', ctx.scope)], o);
  try {
    await runGuarded(ctx, [
      {
        title: `read ${lvRef(o)}`,
        req: blockData.readToFileReq(lvMapperPath(o.vg, o.name), target),
      },
    ]);
  } finally {
    if (mine) await collectGarbage(ctx, name);
  }
  return {
    name,
    vg: ctx.vg,
    uuid: o.uuid,
    sizeBytes: o.sizeBytes,
    sha256: o.sha256,
    action: 'exported',
    seconds: (Date.now() - started) / 1000,
  };
}

export interface ExposedImage {
  name: string;
  vg: string;
  uuid: string;
  /** The device on the session's node that reads the image. */
  device: string;
  sizeBytes: number;
  sha256?: string;
  /** With `md5`: the device's MD5, read on the node (what OpenNebula's marketplace records). */
  md5?: string;
  action: 'activated' | 'none';
}

/**
 * A sealed image made readable on this node for someone else to stream out (the datastore
 * driver's export: the marketplace reads the device over ssh). Activated shared, since a
 * sealed image is never written, and left so: the reader comes after this command has ended.
 */
export async function exposeImage(ctx: NodeSession, name: string, opts: { md5?: boolean } = {}): Promise<ExposedImage> {
  const o = findImage(await observeNode(ctx), name);
  const activate = await readSealed(ctx, o, 'export');
  const device = lvMapperPath(o.vg, o.name);
  // A sealed image never changes, so its MD5 read now is the MD5 of what is streamed later.
  const md5 =
    opts.md5 && !ctx.dryRun
      ? blockData.parseChecksum((await ctx.runner.run(blockData.md5Req(device))).stdout)
      : undefined;
  return {
    name,
    vg: ctx.vg,
    uuid: o.uuid,
    device,
    sizeBytes: o.sizeBytes,
    sha256: o.sha256,
    ...(md5 ? { md5 } : {}),
    action: activate ? 'activated' : 'none',
  };
}

/**
 * A sealed image made readable on this node: activated shared unless it is active here
 * already. Anything else is refused: only a sealed image has content that stays as read.
 * Returns whether this call activated it (the caller's to release).
 */
export async function readSealed(ctx: NodeSession, o: ImageObj, purpose: string): Promise<boolean> {
  if (o.state !== 'sealed')
    throw refused(
      `${lvRef(o)} is ${o.state}; only a sealed image has stable content to ${purpose}`,
      `seal it first: cowstack image seal ${o.name}`,
    );
  if (o.lv.activeLocally) return false;
  await runGuarded(ctx, [activateStep(o, 'shared', ctx.scope)], o);
  return true;
}
