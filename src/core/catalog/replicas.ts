/**
 * `catalog sync --replicas`: pull mode of peer-to-peer distribution, run for one node. The
 * list is verified as sync does (signature, expiry, rollback) and remembered; then every image
 * that is endorsed, approved, present in the repository with the list's sha256, and has a
 * signed torrent gets a verified replica on this node:
 *
 * 1. the .torrent is fetched from where the list says; it is refused unless its info hash is
 *    the signed one (computed here, before anything is written on the node);
 * 2. aria2 downloads the raw disk into the staging dir from the other peers (found through the
 *    torrent's tracker) and the torrent's web seed, and seeds what it has while it downloads;
 * 3. the file is used only once it is whole and its sha512 is the signed one; it is extended
 *    with zeros to whole extents (the sealed image's bytes) and copied into the replica by
 *    `cache replicate`'s own path (stage/download.ts), which checks the image's sha256;
 * 4. the client stops and the file goes; the record in the staging dir says where the node is
 *    (`cache list`). A replica already complete is left alone; a re-run resumes the download
 *    (aria2's control file), or the copy from a staged file that already verified.
 */
import { CowstackError, refused } from '../../exec/errors.js';
import { plannedCommand, plannedNote, type PlannedCommand } from '../../exec/dryRunRunner.js';
import type { RunRequest } from '../../exec/types.js';
import * as aria2 from '../../tools/aria2.js';
import * as daemon from '../../tools/daemon.js';
import { removeRootFileReq } from '../../tools/host.js';
import * as staging from '../../tools/staging.js';
import { usableReplica } from '../cache/replica.js';
import { cacheVgOf, observeCache } from '../cache/vg.js';
import type { ImageObj, CowObj } from '../metadata.js';
import { observeNode } from '../observe.js';
import {
  awaitDownload,
  journalStaging,
  record,
  replicaFromFile,
  run,
  verifiedFile,
  writeTorrent,
  type RecordedImage,
  type StageNode,
  type StagedWant,
} from '../stage/download.js';
import { stagingFiles } from '../stage/files.js';
import { peerStartReq, recordWriteReq, torrentWriteReq } from '../stage/plan.js';
import { rateBytes } from '../stage/spec.js';
import { infoHashOf, withoutWebSeeds } from '../stage/torrent.js';
import { vgApprovals } from './gate.js';
import { lvNameOf, type ImageList, type ListImage } from './list.js';
import type { PublicKey } from './minisign.js';
import { readSmall, resolveUrl } from './stream.js';
import { acceptList } from './sync.js';

export interface PullOptions {
  source: string;
  key: PublicKey;
  node: StageNode;
  /** The TCP port this node's client listens on and announces. */
  port: number;
  rateMiBps?: number;
  /**
   * Also download from the torrent's web seed (the repository's http server), default. false:
   * the torrent is written without its web seeds, so the pieces come only from BitTorrent peers
   * (the repository side's `catalog seed` and the other nodes).
   */
  webSeed?: boolean;
  /** The nodes of one run (pullHosts): when each may start, and how long each keeps seeding. */
  swarm?: Swarm;
  timeoutSeconds?: number;
  pollMs?: number;
  now?: Date;
  dryRun?: boolean;
  onProgress?(host: string, what: string): void;
}

/**
 * The nodes of one run pulling each image together (core/catalog/pullHosts.ts).
 */
export interface Swarm {
  /** Wait until this node may start downloading lv. */
  ready(lv: string, host: string): Promise<void>;
  /** This node is done with lv: its file verified (ok), or it failed or had nothing to pull. */
  leave(lv: string, host: string, ok: boolean): Promise<void>;
  /** Resolves once every node of the run is done with lv: until then a node's client seeds it. */
  settled(lv: string): Promise<void>;
  /** This node's pull ended (also by an error before any image): nobody waits for it any more. */
  end(host: string): Promise<void>;
}

export type PullAction =
  'replicated' | 'resumed' | 'none' | 'would-replicate' | 'not-approved' | 'not-present' | 'no-torrent' | 'failed';

export interface PullImage {
  name: string;
  version: string;
  lv: string;
  action: PullAction;
  infoHash?: string;
  sha256?: string;
  seconds?: number;
  error?: string;
}

export interface PullResult {
  host: string;
  list: { id: string; version: number; expires: string; previous?: number };
  images: PullImage[];
  /** Under --dry-run: the commands on this node, in order. */
  plan?: PlannedCommand[];
}

/** The image this node can make a replica of (or seed), or why not. */
export function candidate(
  image: ListImage,
  list: ImageList,
  have: CowObj | undefined,
  approved: Set<string>,
): ImageObj | Exclude<PullAction, 'replicated' | 'resumed' | 'none' | 'would-replicate' | 'failed'> {
  if (!approved.has(`${image.name}:${image.version}`)) return 'not-approved';
  if (
    have?.kind !== 'image' ||
    have.state !== 'sealed' ||
    have.catalog?.list !== list.id ||
    have.sha256 !== image.sha256
  )
    return 'not-present';
  return image.torrent ? have : 'no-torrent';
}

/** The signed torrent, fetched; refused unless its info hash is the signed one. */
export async function fetchTorrent(source: string, image: ListImage): Promise<Buffer> {
  const url = resolveUrl(source, image.torrent!.url);
  const bytes = await readSmall(url);
  if (!bytes) throw refused(`the torrent of ${image.name}@${image.version} is not at ${url}`);
  const got = infoHashOf(bytes, url);
  if (got !== image.torrent!.infoHash)
    throw refused(
      `the torrent at ${url} has info hash ${got}, the signed list says ${image.torrent!.infoHash}: not used`,
      'the torrent and the list do not belong together: ask the endorser for the published pair',
      { infoHash: got, signed: image.torrent!.infoHash },
    );
  return bytes;
}

/** The commands of one image's pull on this node, as data (what --dry-run prints, what runs). */
export function pullPlan(host: string, image: ListImage, obj: ImageObj, port: number, rate: number, webSeed = true) {
  const f = stagingFiles(obj.uuid);
  const plan = {
    prepare: staging.makeDirReq(f.peerDir),
    start: peerStartReq(
      obj.uuid,
      port,
      rate,
      `download ${lvNameOf(image)} and seed on port ${port}`,
      `${obj.uuid}.img`,
    ),
    extend: obj.sizeBytes === image.size ? undefined : staging.extendReq(f.image, obj.sizeBytes),
    stop: daemon.stopReq(f.pid, 'stop the BitTorrent client'),
    cleanup: removeRootFileReq(f.image),
  };
  const at = (req: RunRequest) => plannedCommand(host, req);
  const dryRun: PlannedCommand[] = [
    at(plan.prepare),
    at({
      ...torrentWriteReq(obj.uuid, Buffer.alloc(0)),
      title: `write the torrent from ${image.torrent!.url}${webSeed ? '' : ' without its web seeds'}`,
    }),
    at({ ...aria2.showTorrentReq(f.torrent), title: `check its info hash is the signed ${image.torrent!.infoHash}` }),
    at(plan.start),
    plannedNote(host, `wait until ${f.image} is whole with the signed sha512 ${image.sha512}`),
    ...(plan.extend ? [at(plan.extend)] : []),
    plannedNote(host, `cache replicate ${obj.name} from ${f.image} (checks its sha256 ${obj.sha256})`),
    at(plan.stop),
    at(plan.cleanup),
  ];
  return { ...plan, dryRun };
}

async function pullOne(o: PullOptions, host: string, image: ListImage, obj: ImageObj): Promise<PullImage> {
  const s = o.node.session;
  await o.swarm?.ready(obj.name, host);
  const started = Date.now();
  const plan = pullPlan(host, image, obj, o.port, rateBytes(o.rateMiBps));
  const infoHash = image.torrent!.infoHash;
  const rec: RecordedImage = { name: obj.name, vg: obj.vg, uuid: obj.uuid, sha256: obj.sha256!, sizeBytes: image.size };
  const signed: StagedWant = {
    uuid: obj.uuid,
    name: lvNameOf(image),
    sizeBytes: image.size,
    algo: 'sha512',
    digest: image.sha512,
    whose: 'the signed',
  };
  const sealed: StagedWant = { ...signed, sizeBytes: obj.sizeBytes, algo: 'sha256', digest: obj.sha256!, whose: '' };
  // A staged file that verified and was extended in an interrupted run goes straight to the copy.
  const staged = plan.extend !== undefined && (await verifiedFile(s, sealed)) === true;
  // Fetched and checked before anything is written on the node: a refused torrent leaves nothing.
  const fetched = staged ? undefined : await fetchTorrent(o.source, image);
  const torrent = fetched && o.webSeed === false ? withoutWebSeeds(fetched, image.torrent!.url) : fetched;
  try {
    if (torrent) {
      await run(s, plan.prepare);
      await writeTorrent(s, host, obj.uuid, torrent, infoHash);
      await run(s, recordWriteReq(record(rec, infoHash, 'downloading')));
      await journalStaging(o.node, obj);
      await run(s, plan.start);
      o.onProgress?.(host, `downloading ${signed.name} (torrent ${infoHash})`);
      await awaitDownload(s, host, signed, {
        deadline: Date.now() + (o.timeoutSeconds ?? 3600) * 1000,
        pollMs: o.pollMs,
        onProgress: o.onProgress,
        again: 'run catalog sync --replicas again',
      });
      o.onProgress?.(host, `${signed.name}: sha512 verified; copying into the replica`);
      if (plan.extend) await run(s, plan.extend);
    }
    await o.swarm?.leave(obj.name, host, true);
    const r = await replicaFromFile(o.node, rec, infoHash, o.rateMiBps);
    if (o.swarm) {
      o.onProgress?.(host, `${signed.name}: replica complete; seeding until the other nodes have the file`);
      await o.swarm.settled(obj.name);
    }
    await run(s, plan.stop);
    await journalStaging(o.node, obj, true);
    await run(s, plan.cleanup);
    return {
      name: image.name,
      version: image.version,
      lv: obj.name,
      action: r.action === 'none' ? 'replicated' : r.action,
      infoHash,
      sha256: r.sha256,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (e) {
    await o.swarm?.leave(obj.name, host, false);
    await run(s, plan.stop).catch(() => undefined);
    await journalStaging(o.node, obj, true).catch(() => undefined);
    const why = e instanceof Error ? e.message : String(e);
    await run(s, recordWriteReq(record(rec, infoHash, 'failed', why))).catch(() => undefined);
    throw e;
  }
}

async function pullEach(o: PullOptions): Promise<{ result: PullResult; error?: CowstackError }> {
  const s = o.node.session;
  const host = s.runner.target;
  const now = o.now ?? new Date();
  rateBytes(o.rateMiBps);
  const { list, last } = await acceptList(s, o.source, o.key, now, (fn) => o.node.locked(fn));
  const result: PullResult = {
    host,
    list: { id: list.id, version: list.version, expires: list.expires, previous: last?.version },
    images: [],
  };
  const state = await observeNode(s);
  const approved = await vgApprovals(s);
  const cache = await observeCache(s.runner, cacheVgOf(s));
  let error: CowstackError | undefined;
  for (const image of list.images) {
    try {
      const e = await pullImage(o, host, list, image, state, approved, cache, result);
      error ??= e;
    } finally {
      // Done with it here (pulled, failed or nothing to pull): the others do not wait for this node.
      await o.swarm?.leave(lvNameOf(image), host, false);
    }
  }
  return { result, error };
}

/** One image of the list on this node; an error is recorded in the result and returned. */
async function pullImage(
  o: PullOptions,
  host: string,
  list: ImageList,
  image: ListImage,
  state: Awaited<ReturnType<typeof observeNode>>,
  approved: Set<string>,
  cache: Awaited<ReturnType<typeof observeCache>>,
  result: PullResult,
): Promise<CowstackError | undefined> {
  const c = candidate(image, list, state.repo.byName.get(lvNameOf(image)), approved);
  const entry: PullImage = { name: image.name, version: image.version, lv: lvNameOf(image), action: 'failed' };
  result.images.push(entry);
  if (typeof c === 'string') {
    entry.action = c;
    return undefined;
  }
  entry.infoHash = image.torrent!.infoHash;
  const done = usableReplica(cache, c);
  if (done) {
    Object.assign(entry, { action: 'none', sha256: done.sha256 });
    return undefined;
  }
  if (o.dryRun) {
    entry.action = 'would-replicate';
    result.plan = [
      ...(result.plan ?? []),
      ...pullPlan(host, image, c, o.port, rateBytes(o.rateMiBps), o.webSeed).dryRun,
    ];
    return undefined;
  }
  try {
    Object.assign(entry, await pullOne(o, host, image, c));
    return undefined;
  } catch (e) {
    if (!(e instanceof CowstackError)) throw e;
    entry.error = e.message;
    return e;
  }
}

export async function pullReplicas(o: PullOptions): Promise<{ result: PullResult; error?: CowstackError }> {
  // However this node's pull ends, the other nodes of the run do not wait for it.
  try {
    return await pullEach(o);
  } finally {
    await o.swarm?.end(o.node.session.runner.target);
  }
}
