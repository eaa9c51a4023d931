/**
 * One catalogue image into the repository: a new LV of the list's size, the bytes streamed
 * in (stream.ts), and only when both the sha512 and the sha256 the list endorsed match
 * what went through is it sealed, tagged with where it came from. On any mismatch, or a
 * source that fails half-way, the LV is removed again: nothing of it is left, sealed or not.
 * A crash in between leaves an "initializing" LV under an `import` journal entry, which
 * `cowstack recover` removes as it does for `image import`.
 */
import { refused } from '../../exec/errors.js';
import * as blockData from '../../tools/blockData.js';
import * as lvm from '../../tools/lvm.js';
import { lvMapperPath } from '../dmNames.js';
import { runGuarded } from '../executor.js';
import { newLvStep, placeholder, sealStep } from '../images.js';
import { beginStep, endStep } from '../journal.js';
import { catalogTag, endorsedTag, sha512Tag } from '../metadata.js';
import type { NodeSession } from '../node.js';
import type { Step } from '../plan.js';
import { deactivateStep } from '../stack.js';
import { activateStep } from '../stack.js';
import { EXTENT, roundUp } from '../validate.js';
import { lvNameOf, type ImageList, type ListImage } from './list.js';
import type { Digests } from './stream.js';
import { verifyingStream } from './stream.js';
import type { Readable } from 'node:stream';

export interface VerifiedImport {
  lv: string;
  bytes: number;
  sha512: string;
  sha256: string;
  seconds: number;
}

export const endorsedUntil = (list: Pick<ImageList, 'expires'>): number => Math.floor(Date.parse(list.expires) / 1000);

export async function importVerified(
  ctx: NodeSession,
  list: ImageList,
  image: ListImage,
  source: Readable,
  o: { replace?: boolean; onProgress?: (bytes: number, total: number) => void } = {},
): Promise<VerifiedImport> {
  const name = lvNameOf(image);
  const ref = `${ctx.vg}/${name}`;
  const total = roundUp(image.size, EXTENT);
  const started = Date.now();
  const journal = { op: 'import' as const, vg: ctx.vg, name };
  const data = verifyingStream(source, {
    format: image.format,
    size: image.size,
    total,
    onProgress: (n) => o.onProgress?.(n, image.size),
  });
  let digests: Digests | Error = new Error('not read');
  const settled = data.digests.then(
    (d) => (digests = d),
    (e: Error) => (digests = e),
  );
  const steps: Step[] = [beginStep(journal)];
  if (o.replace) steps.push({ title: `remove interrupted import ${ref}`, req: lvm.removeLvReq(ref, ctx.scope) });
  steps.push(newLvStep(ctx, name, total), activateStep(placeholder(ctx, name), 'exclusive', ctx.scope), {
    title: `write ${image.name}@${image.version} into ${ref} (sha512 checked before sealing)`,
    req: blockData.writeFromStdinReq(lvMapperPath(ctx.vg, name), data.stream),
  });
  try {
    await runGuarded(ctx, steps);
  } catch (e) {
    // dd failed and the plan removed the new LV. A source that broke off before is the cause to name.
    const source = digests instanceof Error ? digests : undefined;
    data.stream.destroy();
    if (source)
      throw refused(
        `${image.name}@${image.version} from list ${list.id} was not imported: ${source.message}`,
        'nothing was sealed',
        {
          image: image.name,
          version: image.version,
        },
      );
    throw e;
  }
  // dd read to the end: the digests settle with it (nothing to cut short here).
  await settled;
  const d = digests as Digests | Error;
  const why =
    d instanceof Error
      ? `its source failed: ${d.message}`
      : d.sha512 !== image.sha512
        ? `its bytes do not match the list's sha512 (got ${d.sha512.slice(0, 16)}..., ` +
          `list ${image.sha512.slice(0, 16)}...)`
        : d.sha256 !== image.sha256
          ? `its sealed form does not match the list's sha256 (got ${d.sha256}, list ${image.sha256})`
          : undefined;
  if (why) {
    // Never sealed: the half-written LV goes, and the journal entry closes with it.
    await runGuarded(ctx, [
      deactivateStep(placeholder(ctx, name), ctx.scope),
      { title: `remove unverified ${ref}`, req: lvm.removeLvReq(ref, ctx.scope) },
      endStep(journal),
    ]);
    throw refused(
      `${image.name}@${image.version} from list ${list.id} was not imported: ${why}`,
      'nothing was sealed; ' + 'check the source with the endorser',
      { image: image.name, version: image.version },
    );
  }
  const ok = d as Digests;
  const origin = { list: list.id, name: image.name, version: image.version };
  await runGuarded(ctx, [
    sealStep(ctx, name, 'initializing', ok.sha256, [
      catalogTag(origin),
      sha512Tag(ok.sha512),
      endorsedTag(endorsedUntil(list)),
    ]),
    deactivateStep(placeholder(ctx, name), ctx.scope),
    endStep(journal),
  ]);
  return { lv: name, bytes: ok.bytes, sha512: ok.sha512, sha256: ok.sha256, seconds: (Date.now() - started) / 1000 };
}
