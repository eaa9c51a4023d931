/**
 * `catalog sync`: fetch a list (path or http(s) URL) and its .minisig, verify it, remember
 * its version on this node, bring the endorsement tags of the images already imported up
 * to date, import the approved images that are missing (importVerified.ts), and prune the
 * catalogue images no longer endorsed or approved when nothing depends on them. An image
 * that fails is reported and the others go on; the command then fails with the first error.
 */
import { CowstackError, EXIT, notFound } from '../../exec/errors.js';
import * as lvm from '../../tools/lvm.js';
import { lvMapperName } from '../dmNames.js';
import { runGuarded } from '../executor.js';
import { endorsedTag, TAG, type ImageObj } from '../metadata.js';
import type { NodeSession } from '../node.js';
import { observeNode } from '../observe.js';
import { deactivateStep, lvRef } from '../stack.js';
import { endorsedUntil, importVerified } from './importVerified.js';
import { lvNameOf, type ImageList } from './list.js';
import type { PublicKey } from './minisign.js';
import { readAccepted, writeAcceptedSteps } from './state.js';
import { openSource, readSmall, resolveUrl } from './stream.js';
import { vgApprovals } from './gate.js';
import { refuseRollback, verifyList } from './verify.js';

export interface SyncImage {
  name: string;
  version: string;
  lv: string;
  approved: boolean;
  action: 'imported' | 'present' | 'not-approved' | 'would-import' | 'failed';
  sha256?: string;
  seconds?: number;
  error?: string;
}

export interface SyncPrune {
  lv: string;
  why: 'not-endorsed' | 'not-approved';
  action: 'removed' | 'would-remove' | 'kept';
  reason?: string;
}

export interface SyncResult {
  list: { id: string; version: number; expires: string; endorser: string; previous?: number };
  images: SyncImage[];
  endorsementUpdates: string[];
  pruned: SyncPrune[];
}

export interface SyncOptions {
  source: string;
  key: PublicKey;
  now?: Date;
  prune?: boolean;
  onProgress?: (image: string, bytes: number, total: number) => void;
}

/** Fetches and verifies the list; nothing is changed. */
export async function fetchVerified(
  source: string,
  key: PublicKey,
  now: Date,
): Promise<{ list: ImageList; data: Buffer }> {
  const data = await readSmall(source);
  if (!data) throw notFound(`list ${source} not found`);
  const sig = await readSmall(`${source}.minisig`);
  return { list: verifyList({ data, signature: sig?.toString('utf8'), key, now, where: source }), data };
}

/**
 * Fetch and verify the list, refuse a rollback, and remember it as accepted on this node
 * (`locked`: around that write, for callers not already holding the node lock).
 */
export async function acceptList(
  ctx: NodeSession,
  source: string,
  key: PublicKey,
  now: Date,
  locked: (fn: () => Promise<unknown>) => Promise<unknown> = (fn) => fn(),
): Promise<{ list: ImageList; last?: { version: number } }> {
  const { list } = await fetchVerified(source, key, now);
  const last = await readAccepted(ctx.runner, list.id);
  refuseRollback(list, last, source);
  const accepted = { id: list.id, version: list.version, keyId: key.keyId, expires: list.expires, list };
  await locked(() => runGuarded(ctx, writeAcceptedSteps({ ...accepted, acceptedAt: now.toISOString() })));
  return { list, last };
}

export async function syncCatalog(
  ctx: NodeSession,
  o: SyncOptions,
): Promise<{ result: SyncResult; error?: CowstackError }> {
  const now = o.now ?? new Date();
  const { list, last } = await acceptList(ctx, o.source, o.key, now);
  const state = await observeNode(ctx);
  const approved = await vgApprovals(ctx);
  const until = endorsedUntil(list);
  const result: SyncResult = {
    list: {
      id: list.id,
      version: list.version,
      expires: list.expires,
      endorser: list.endorser.name,
      previous: last?.version,
    },
    images: [],
    endorsementUpdates: [],
    pruned: [],
  };
  const ours = [...state.repo.byName.values()].filter(
    (x): x is ImageObj => x.kind === 'image' && x.catalog?.list === list.id,
  );
  const listed = new Map(list.images.map((i) => [lvNameOf(i), i]));

  // Endorsement follows the newest list: renewed for what it names, withdrawn for the rest.
  for (const x of ours) {
    const want = listed.has(x.name) ? until : undefined;
    if (x.endorsedUntil === want) continue;
    const del = x.tags.filter((t) => t.startsWith(TAG.endorsed));
    const add = want === undefined ? [] : [endorsedTag(want)];
    await runGuarded(
      ctx,
      [
        {
          title: `${want ? 'renew' : 'withdraw'} endorsement of ${lvRef(x)}`,
          req: lvm.tagLvReq(lvRef(x), { del, add }, ctx.scope),
        },
      ],
      x,
    );
    result.endorsementUpdates.push(x.name);
  }

  let error: CowstackError | undefined;
  for (const image of list.images) {
    const lv = lvNameOf(image);
    const ok = approved.has(`${image.name}:${image.version}`);
    const entry: SyncImage = { name: image.name, version: image.version, lv, approved: ok, action: 'not-approved' };
    result.images.push(entry);
    const have = state.repo.byName.get(lv);
    const same = have?.kind === 'image' && have.catalog?.list === list.id && have.state === 'sealed';
    if (same) {
      entry.action = 'present';
      entry.sha256 = have.sha256;
      continue;
    }
    if (!ok) continue;
    if (ctx.dryRun) {
      entry.action = 'would-import';
      continue;
    }
    try {
      const interrupted = have?.kind === 'image' && have.state === 'initializing';
      if ((have && !interrupted) || state.repo.foreign.some((l) => l.name === lv))
        throw new CowstackError(
          EXIT.REFUSED,
          `${ctx.vg}/${lv} exists and is not ${image.name}@${image.version} from ${list.id}`,
          {
            hint: 'rename or remove that LV: catalogue images are imported as NAME-VERSION',
          },
        );
      const url = resolveUrl(o.source, image.urls[0]!);
      const r = await importVerified(ctx, list, image, await openSource(url), {
        replace: interrupted,
        onProgress: (n, total) => o.onProgress?.(`${image.name}@${image.version}`, n, total),
      });
      Object.assign(entry, { action: 'imported', sha256: r.sha256, seconds: r.seconds });
    } catch (e) {
      if (!(e instanceof CowstackError)) throw e;
      entry.action = 'failed';
      entry.error = e.message;
      error ??= e;
    }
  }

  if (o.prune !== false) {
    for (const x of ours) {
      const why = !listed.has(x.name)
        ? ('not-endorsed' as const)
        : !approved.has(`${x.catalog!.name}:${x.catalog!.version}`)
          ? ('not-approved' as const)
          : undefined;
      if (!why) continue;
      result.pruned.push(
        await prune(
          ctx,
          x,
          why,
          state.repo.childrenOf(x).length,
          state.devices.get(lvMapperName(x.vg, x.name))?.open ?? 0,
        ),
      );
    }
  }
  return { result, error };
}

async function prune(
  ctx: NodeSession,
  x: ImageObj,
  why: SyncPrune['why'],
  children: number,
  open: number,
): Promise<SyncPrune> {
  if (children) return { lv: x.name, why, action: 'kept', reason: `${children} clone(s) depend on it` };
  if (open) return { lv: x.name, why, action: 'kept', reason: 'open on this node' };
  const steps = [
    ...(x.lv.activeLocally ? [deactivateStep(x, ctx.scope)] : []),
    { title: `prune ${lvRef(x)} (${why})`, req: lvm.removeLvReq(lvRef(x), ctx.scope) },
  ];
  try {
    await runGuarded(ctx, steps, x);
  } catch (e) {
    // Active on another node (its lock is held there): kept until a later sync.
    if (e instanceof CowstackError) return { lv: x.name, why, action: 'kept', reason: e.message };
    throw e;
  }
  return { lv: x.name, why, action: ctx.dryRun ? 'would-remove' : 'removed' };
}
