/**
 * `catalog stage`: pre-stage the verified replica of one image on many nodes through
 * BitTorrent, so that the repository side sends about one copy whatever the number of nodes.
 *
 * 1. The seed node reads the sealed image LV once (activated shared) into its staging file and
 *    checks it against the image's recorded sha256; nothing is seeded unless it matches.
 * 2. It makes the torrent of that file (info hash recorded), starts the tracker (or uses the
 *    one given) and seeds.
 * 3. Every other node downloads with its own client, which seeds what it has to the others
 *    while it downloads. A finished file is checked against the sha256 on the node; only then
 *    is it copied into the node's replica LV by `cache replicate`'s own path (chunked direct
 *    writes, progress in tags, sha256 of the replica device, then complete and read-only).
 * 4. The clients and the tracker are stopped, also after a failure; the staged image files
 *    are removed once every replica is complete. A re-run resumes: a verified seed copy is
 *    kept, aria2 continues from its control file, a copying replica from its progress tag.
 */
import { CowstackError, EXIT, refused } from '../../exec/errors.js';
import { plannedCommand, plannedNote, type PlannedCommand } from '../../exec/dryRunRunner.js';
import type { RunRequest } from '../../exec/types.js';
import * as aria2 from '../../tools/aria2.js';
import * as blockData from '../../tools/blockData.js';
import { removeRootFileReq } from '../../tools/host.js';
import * as staging from '../../tools/staging.js';
import { usableReplica } from '../cache/replica.js';
import { cacheVgOf, observeCache } from '../cache/vg.js';
import { lvMapperPath } from '../dmNames.js';
import { runGuarded } from '../executor.js';
import { activateStep, lvRef } from '../lvSteps.js';
import type { NodeSession } from '../node.js';
import { collectGarbage } from '../nodeGc.js';
import type { ImageObj } from '../metadata.js';
import { findImage, observeNode } from '../observe.js';
import {
  awaitDownload,
  fileDigest,
  journalStaging,
  readOwn,
  record,
  replicaFromFile,
  run,
  verifiedFile,
  writeTorrent,
  type StageNode,
  type StagedWant,
} from './download.js';
import { stagingFiles } from './files.js';
import {
  recordWriteReq,
  stagePlan,
  torrentWriteReq,
  whitelistWriteReq,
  type StageImage,
  type StagePlan,
} from './plan.js';
import { rateBytes, type StagePeer, type StageTracker } from './spec.js';

export type { StageNode };

/** A staged copy of the sealed image: whole extents, the image's recorded sha256. */
const wantOf = (i: StageImage): StagedWant => ({
  uuid: i.uuid,
  name: i.name,
  sizeBytes: i.sizeBytes,
  algo: 'sha256',
  digest: i.sha256,
  whose: "the image's",
});

export interface StageOptions {
  image: string;
  seed: StagePeer;
  hosts: StagePeer[];
  tracker: StageTracker;
  rateMiBps?: number;
  /** Give up waiting for the downloads after this long (default 3600 s); a re-run resumes. */
  timeoutSeconds?: number;
  pollMs?: number;
  node(host: string): StageNode;
  onProgress?(host: string, what: string): void;
  dryRun?: boolean;
}

export interface StageHostResult {
  host: string;
  action: 'replicated' | 'resumed' | 'none';
  /** Seconds from the start of the run until the node's staged file verified. */
  downloadedAt?: number;
  /** Seconds from the start of the run until its replica was complete. */
  completeAt?: number;
  sha256?: string;
}

export interface StageResult {
  image: string;
  vg: string;
  uuid: string;
  sizeBytes: number;
  sha256: string;
  seed: string;
  tracker: string;
  infoHash?: string;
  /** The seed read the image LV in this run (false: a verified staged copy was there already). */
  seedCopied: boolean;
  /** Bytes the seed's network interfaces sent during the run (its uploads, and ssh). */
  seedSentBytes?: number;
  hosts: StageHostResult[];
  /** Under --dry-run: the commands, per node, in order. */
  plan?: PlannedCommand[];
  seconds: number;
}

/** Bytes sent by all interfaces but lo, from /proc/net/dev. */
export function sentBytes(netDev: string | undefined): number | undefined {
  if (!netDev) return undefined;
  let sum = 0;
  for (const line of netDev.split('\n').slice(2)) {
    const [name, rest] = line.split(':');
    if (!rest || name!.trim() === 'lo') continue;
    sum += Number(rest.trim().split(/\s+/)[8] ?? 0);
  }
  return sum;
}

type SeedImage = StageImage & { active: boolean; obj: ImageObj };

async function imageOnSeed(seed: NodeSession, name: string): Promise<SeedImage> {
  const image = findImage(await observeNode(seed), name);
  if (image.state !== 'sealed')
    throw refused(
      `${lvRef(image)} is ${image.state}; only sealed images are staged`,
      `seal it first: cowstack image seal ${name}`,
    );
  if (!image.sha256)
    throw refused(`${lvRef(image)} has no recorded sha256, so no copy could be verified`, 're-import it');
  return {
    name: image.name,
    vg: image.vg,
    uuid: image.uuid,
    sha256: image.sha256,
    sizeBytes: image.sizeBytes,
    device: lvMapperPath(image.vg, image.name),
    active: image.lv.activeLocally,
    obj: image,
  };
}

/** Steps 1 and 2 on the seed: the verified copy, its torrent; returns the torrent bytes. */
async function prepareSeed(
  o: StageOptions,
  plan: StagePlan,
  image: SeedImage,
): Promise<{ copied: boolean; torrent: Buffer; infoHash: string }> {
  const seed = o.node(o.seed.host);
  const s = seed.session;
  const f = stagingFiles(image.uuid);
  let copied = false;
  if ((await verifiedFile(s, wantOf(image))) !== true) {
    copied = true;
    await seed.locked(async () => {
      const lv = findImage(await observeNode(s), image.name);
      if (!image.active) await runGuarded(s, [activateStep(lv, 'shared', s.scope)], lv);
      try {
        o.onProgress?.(o.seed.host, `reading ${image.vg}/${image.name} into ${f.image}`);
        for (const req of plan.copy) await run(s, req);
      } finally {
        if (!image.active) await collectGarbage(s, image.name);
      }
    });
    const sha = await fileDigest(s, f.image, 'sha256');
    if (sha !== image.sha256) {
      await run(s, removeRootFileReq(f.image));
      throw new CowstackError(
        EXIT.FAILED,
        `the copy of ${image.vg}/${image.name} read on ${o.seed.host} has sha256 ${sha}, the image records ` +
          `${image.sha256}: nothing is seeded`,
        {
          hint: `check the image (cowstack image verify ${image.name}) and ${o.seed.host}'s path to the LUN`,
          data: { sha256: sha, expected: image.sha256 },
        },
      );
    }
  }
  for (const req of plan.torrent) await run(s, req);
  const infoHash = aria2.parseInfoHash((await run(s, aria2.showTorrentReq(f.torrent))).stdout);
  if (!infoHash) throw new CowstackError(EXIT.FAILED, `aria2c shows no info hash for ${f.torrent} on ${o.seed.host}`);
  const torrent = Buffer.from((await run(s, staging.readBase64Req(f.torrent))).stdout.trim(), 'base64');
  return { copied, torrent, infoHash };
}

/** A downloader's torrent, checked to be the seed's (same info hash) before its client starts. */
async function startPeer(o: StageOptions, plan: StagePlan, p: StagePeer, torrent: Buffer, infoHash: string) {
  const s = o.node(p.host).session;
  for (const c of plan.prepare.filter((x) => x.host === p.host)) await run(s, c.req);
  await writeTorrent(s, p.host, plan.image.uuid, torrent, infoHash);
  await run(s, recordWriteReq(record(plan.image, infoHash, 'downloading')));
  await journalStaging(o.node(p.host), plan.image);
  for (const c of plan.peerStart.filter((x) => x.host === p.host)) await run(s, c.req);
}

function dryRunPlan(plan: StagePlan, infoHash = '<info hash of the new torrent>'): PlannedCommand[] {
  const seed = plan.seed.host;
  const at = (host: string, reqs: RunRequest[]) => reqs.map((r) => plannedCommand(host, r));
  const each = (cmds: Array<{ host: string; req: RunRequest }>) => cmds.map((c) => plannedCommand(c.host, c.req));
  return [
    ...at(seed, plan.copy),
    ...at(seed, [blockData.checksumReq(stagingFiles(plan.image.uuid).image)]),
    ...at(seed, plan.torrent),
    ...(plan.tracker.runOnSeedPort ? at(seed, [whitelistWriteReq(plan.image.uuid, infoHash)]) : []),
    ...at(seed, plan.seedStart),
    ...each(plan.prepare),
    ...plan.downloaders.map((p) =>
      plannedCommand(p.host, {
        ...torrentWriteReq(plan.image.uuid, Buffer.alloc(0)),
        title: `write the torrent (${infoHash})`,
      }),
    ),
    ...each(plan.peerStart),
    ...plan.replicas.map((host) =>
      plannedNote(host, `verify the staged file's sha256 (${plan.image.sha256}), then cache replicate from it`),
    ),
    ...each([...plan.stop, ...plan.cleanup]),
  ];
}

export async function stage(o: StageOptions): Promise<StageResult> {
  const started = Date.now();
  const rate = rateBytes(o.rateMiBps);
  const seed = o.node(o.seed.host).session;
  const image = await imageOnSeed(seed, o.image);
  const since = () => (Date.now() - started) / 1000;

  // Nodes that already hold a verified replica of exactly this LV and content: nothing to do.
  const hosts: StageHostResult[] = [];
  const targets: StagePeer[] = [];
  for (const p of o.hosts) {
    const s = o.node(p.host).session;
    const cache = await observeCache(s.runner, cacheVgOf(s));
    const done = usableReplica(cache, image.obj);
    if (done) hosts.push({ host: p.host, action: 'none', sha256: done.sha256 });
    else targets.push(p);
  }
  const base = {
    image: image.name,
    vg: image.vg,
    uuid: image.uuid,
    sizeBytes: image.sizeBytes,
    sha256: image.sha256,
    seed: o.seed.host,
    tracker: o.tracker.url,
  };
  if (!targets.length) return { ...base, seedCopied: false, hosts, seconds: since() };
  const { obj: _obj, active: _active, ...planned } = image;
  const plan = stagePlan(planned, o.seed, targets, o.tracker, rate);
  if (o.dryRun) return { ...base, seedCopied: false, hosts, plan: dryRunPlan(plan), seconds: since() };

  const netBefore = sentBytes(await readOwn(seed, '/proc/net/dev'));
  const { copied, torrent, infoHash } = await prepareSeed(o, plan, image);
  const stopAll = async () => {
    for (const c of plan.stop) await run(o.node(c.host).session, c.req).catch(() => undefined);
    for (const host of [o.seed.host, ...plan.downloaders.map((p) => p.host)])
      await journalStaging(o.node(host), image, true).catch(() => undefined);
  };
  try {
    await run(seed, recordWriteReq(record(image, infoHash, 'seeding')));
    if (o.tracker.runOnSeedPort) await run(seed, whitelistWriteReq(image.uuid, infoHash));
    await journalStaging(o.node(o.seed.host), image);
    for (const req of plan.seedStart) await run(seed, req);
    await Promise.all(plan.downloaders.map((p) => startPeer(o, plan, p, torrent, infoHash)));
    const deadline = Date.now() + (o.timeoutSeconds ?? 3600) * 1000;
    // Each node's replica is made as soon as its own file verified; its client keeps seeding.
    const results = await Promise.all(
      plan.replicas.map(async (host) => {
        if (host !== o.seed.host)
          await awaitDownload(o.node(host).session, host, wantOf(image), {
            deadline,
            pollMs: o.pollMs,
            onProgress: o.onProgress,
            again: 'run the same command again',
          });
        const downloadedAt = since();
        o.onProgress?.(host, `staged file verified (sha256 ${image.sha256.slice(0, 12)}…); copying into the replica`);
        const r = await replicaFromFile(o.node(host), image, infoHash, o.rateMiBps);
        return { host, action: r.action, downloadedAt, completeAt: since(), sha256: r.sha256 } as StageHostResult;
      }),
    );
    hosts.push(...results);
  } catch (e) {
    await stopAll();
    // Each node's record says the run failed and why (cache list shows it); its files stay for a re-run.
    const why = e instanceof Error ? e.message : String(e);
    for (const host of [o.seed.host, ...plan.downloaders.map((p) => p.host)])
      await run(o.node(host).session, recordWriteReq(record(image, infoHash, 'failed', why))).catch(() => undefined);
    throw e;
  }
  await stopAll();
  const netAfter = sentBytes(await readOwn(seed, '/proc/net/dev'));
  for (const c of plan.cleanup) await run(o.node(c.host).session, c.req);
  return {
    ...base,
    infoHash,
    seedCopied: copied,
    ...(netBefore !== undefined && netAfter !== undefined ? { seedSentBytes: netAfter - netBefore } : {}),
    hosts,
    seconds: since(),
  };
}
