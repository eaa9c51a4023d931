/**
 * `catalog seed LIST`: the repository side's BitTorrent seed of pull mode. Run on a node that
 * holds the repository VG (the same place as `catalog stage`'s seed); for every image of the
 * verified list that is endorsed, approved, present with the list's sha256, and has a signed
 * torrent:
 *
 * 1. the .torrent is fetched and refused unless its info hash is the signed one;
 * 2. the sealed image LV is read once (activated shared) into the seed's own staging file, cut
 *    to the signed size (the sealed image is padded to whole extents), and its sha512 is
 *    computed on the node: nothing is seeded unless it is the signed one;
 * 3. aria2c seeds it as PEER_USER from the seed's own directory (STAGING/seed: never the files
 *    of a pull on the same node), the torrent written without its web seeds (a seed has
 *    nothing to fetch) and with its own port and upload rate.
 *
 * Idempotent: an image whose seed runs with the signed info hash is left alone (`none`, with
 * what it sent so far); a verified file from an earlier run is seeded again without reading the
 * LUN. `--stop` stops the seeds of the list's images and removes their files, reporting what
 * each sent. What a seed sent is the kernel's count of bytes its process wrote (/proc/PID/io
 * wchar): its uploads plus its log and tracker requests, an upper bound of what it uploaded.
 */
import { CowstackError, EXIT, usageError } from '../../exec/errors.js';
import { plannedCommand, plannedNote, type PlannedCommand } from '../../exec/dryRunRunner.js';
import type { RunRequest } from '../../exec/types.js';
import * as aria2 from '../../tools/aria2.js';
import * as blockData from '../../tools/blockData.js';
import * as daemon from '../../tools/daemon.js';
import { readFileReq, writeRootFileReq } from '../../tools/files.js';
import { listFilesReq, removeRootFileReq } from '../../tools/host.js';
import * as staging from '../../tools/staging.js';
import { lvMapperPath } from '../dmNames.js';
import { runGuarded } from '../executor.js';
import { activateStep } from '../lvSteps.js';
import type { ImageObj } from '../metadata.js';
import { collectGarbage } from '../nodeGc.js';
import { findImage, observeNode } from '../observe.js';
import {
  readOwn,
  record,
  run,
  verifiedFile,
  writeTorrent,
  type StageNode,
  type StagedWant,
} from '../stage/download.js';
import { parseRecord, stagingFiles, type StagingFiles } from '../stage/files.js';
import { rateBytes } from '../stage/spec.js';
import { withoutWebSeeds } from '../stage/torrent.js';
import { vgApprovals } from './gate.js';
import { lvNameOf, type ListImage } from './list.js';
import type { PublicKey } from './minisign.js';
import { candidate, fetchTorrent } from './replicas.js';
import { acceptList } from './sync.js';

/** The seed's own files: a pull on the same node (STAGING/UUID.*) never meets them. */
export const SEED_DIR = `${staging.STAGING_DIR}/seed`;
export const seedFiles = (uuid: string): StagingFiles => stagingFiles(uuid, SEED_DIR);

/**
 * One peer at a time: what the seed sends to it, the nodes trade among themselves, so the seed
 * sends about one copy whatever their number (measured with aria2 1.36 and three downloaders:
 * 1.00x with one peer, 3.0x with no limit, 1.3-1.4x with no limit on peers but 1 MiB/s of upload).
 * When that peer leaves, the seed takes the next one.
 */
export const SEED_PEERS = 1;

/** The seed's port by default: next to the nodes' 6881, so the seed node can pull as well. */
export const DEFAULT_SEED_PORT = 6882;

export interface SeedOptions {
  source: string;
  key: PublicKey;
  node: StageNode;
  /** The TCP port the seed listens on and announces (not the port of this node's own pulls). */
  port: number;
  /** The seed's upload limit, MiB/s. */
  rateMiBps?: number;
  /** Peers the seed uploads to at once (default SEED_PEERS). */
  peers?: number;
  /** Stop the seeds of the list's images and remove their files. */
  stop?: boolean;
  /** With stop: only the seeds of these LVs (those a command started itself). */
  only?: string[];
  now?: Date;
  dryRun?: boolean;
  onProgress?(host: string, what: string): void;
}

export type SeedAction =
  | 'seeding'
  | 'none'
  | 'stopped'
  | 'would-seed'
  | 'would-stop'
  | 'not-seeding'
  | 'not-approved'
  | 'not-present'
  | 'no-torrent'
  | 'failed';

export interface SeedImage {
  name: string;
  version: string;
  lv: string;
  action: SeedAction;
  infoHash?: string;
  port?: number;
  /** The LV was read in this run (false: a verified file from an earlier run was seeded). */
  readLun?: boolean;
  /** What the seed's process wrote so far (its uploads, log and announces): /proc/PID/io wchar. */
  sentBytes?: number;
  error?: string;
}

export interface SeedResult {
  host: string;
  list: { id: string; version: number; expires: string };
  images: SeedImage[];
  plan?: PlannedCommand[];
}

/** The commands of one image's seed, as data (what --dry-run prints, what runs). */
export function seedPlan(
  host: string,
  image: ListImage,
  obj: ImageObj,
  port: number,
  rate: number,
  peers = SEED_PEERS,
) {
  const f = seedFiles(obj.uuid);
  const out = `${obj.uuid}.img`;
  const argv = aria2.peerArgv(f.torrent, { dir: f.peerDir, port, rateBytes: rate, log: f.log, out, maxPeers: peers });
  const plan = {
    prepare: staging.makeDirReq(f.peerDir),
    copy: blockData.copyToFileReq(lvMapperPath(obj.vg, obj.name), f.image),
    cut: obj.sizeBytes === image.size ? undefined : staging.cutReq(f.image, image.size),
    check: blockData.checksumReq(f.image, 'sha512'),
    start: daemon.startReq(f.pid, argv, `seed ${lvNameOf(image)} on port ${port}`, staging.PEER_USER),
    stop: daemon.stopReq(f.pid, `stop the seed of ${lvNameOf(image)}`),
    cleanup: removeRootFileReq(f.image),
  };
  const at = (req: RunRequest) => plannedCommand(host, req);
  const dryRun: PlannedCommand[] = [
    at(plan.prepare),
    at(plan.copy),
    ...(plan.cut ? [at(plan.cut)] : []),
    at({ ...plan.check, title: `check its sha512 is the signed ${image.sha512}` }),
    at({ ...writeRootFileReq(f.torrent, Buffer.alloc(0)), title: `write the torrent of ${image.torrent!.url}` }),
    at({ ...aria2.showTorrentReq(f.torrent), title: `check its info hash is the signed ${image.torrent!.infoHash}` }),
    at(plan.start),
  ];
  return { ...plan, dryRun };
}

/** "wchar: N" of /proc/PID/io: bytes the process wrote (files and sockets). */
export function parseWrittenBytes(io: string | undefined): number | undefined {
  const m = /^wchar:\s*(\d+)\s*$/m.exec(io ?? '');
  return m ? Number(m[1]) : undefined;
}

/** What the running seed of f wrote so far; undefined when it does not run. */
async function sentSoFar(s: StageNode['session'], f: StagingFiles): Promise<number | undefined> {
  const pid = (await run(s, readFileReq(f.pid))).stdout.trim();
  if (!/^\d+$/.test(pid)) return undefined;
  const io = await run(s, readFileReq(`/proc/${pid}/io`));
  return io.exitCode === 0 ? parseWrittenBytes(io.stdout) : undefined;
}

const isRunning = async (s: StageNode['session'], f: StagingFiles) =>
  (await run(s, daemon.runningReq(f.pid))).exitCode === 0;

async function seedOne(o: SeedOptions, host: string, image: ListImage, obj: ImageObj): Promise<Partial<SeedImage>> {
  const s = o.node.session;
  const f = seedFiles(obj.uuid);
  const infoHash = image.torrent!.infoHash;
  const rec = { name: obj.name, vg: obj.vg, uuid: obj.uuid, sha256: obj.sha256!, sizeBytes: image.size };
  if (await isRunning(s, f)) {
    const was = parseRecord(await readOwn(s, f.record));
    if (was?.phase === 'seeding' && was.infoHash === infoHash)
      return { action: 'none', port: o.port, sentBytes: await sentSoFar(s, f) };
    // Some other seed of this LV (an older torrent): replaced.
    await run(s, daemon.stopReq(f.pid, 'stop a seed of another torrent'));
  }
  const plan = seedPlan(host, image, obj, o.port, rateBytes(o.rateMiBps), o.peers);
  const want: StagedWant = {
    uuid: obj.uuid,
    name: obj.name,
    sizeBytes: image.size,
    algo: 'sha512',
    digest: image.sha512,
    whose: 'the signed',
  };
  // Checked before anything is written on the node: a refused torrent leaves nothing.
  const torrent = withoutWebSeeds(await fetchTorrent(o.source, image), image.torrent!.url);
  let readLun = false;
  if ((await verifiedFile(s, want, f)) !== true) {
    readLun = true;
    await run(s, plan.prepare);
    await o.node.locked(async () => {
      const lv = findImage(await observeNode(s), obj.name);
      const active = lv.lv.activeLocally;
      if (!active) await runGuarded(s, [activateStep(lv, 'shared', s.scope)], lv);
      try {
        o.onProgress?.(host, `reading ${obj.vg}/${obj.name} into ${f.image}`);
        await run(s, plan.copy);
      } finally {
        if (!active) await collectGarbage(s, obj.name);
      }
    });
    if (plan.cut) await run(s, plan.cut);
    const got = blockData.parseChecksum((await run(s, plan.check)).stdout);
    if (got !== image.sha512) {
      await run(s, plan.cleanup);
      throw new CowstackError(
        EXIT.FAILED,
        `the copy of ${obj.vg}/${obj.name} read on ${host} has sha512 ${got}, the signed list says ` +
          `${image.sha512}: nothing is seeded`,
        { hint: `check the image (cowstack image verify ${obj.name}) and ${host}'s path to the LUN` },
      );
    }
  }
  await writeTorrent(s, host, obj.uuid, torrent, infoHash, f.torrent);
  await run(s, writeRootFileReq(f.record, `${JSON.stringify(record(rec, infoHash, 'seeding'))}\n`));
  await run(s, plan.start);
  o.onProgress?.(host, `seeding ${obj.name} (torrent ${infoHash}) on port ${o.port}`);
  return { action: 'seeding', port: o.port, readLun };
}

/** Stop the seed of one LV uuid, remove its file; what it sent, read just before. */
async function stopOne(o: SeedOptions, uuid: string): Promise<Partial<SeedImage>> {
  const s = o.node.session;
  const f = seedFiles(uuid);
  const running = await isRunning(s, f);
  const sentBytes = running ? await sentSoFar(s, f) : undefined;
  await run(s, daemon.stopReq(f.pid, 'stop the seed'));
  await run(s, removeRootFileReq(f.image));
  await run(s, removeRootFileReq(f.record));
  return { action: running ? 'stopped' : 'not-seeding', ...(sentBytes !== undefined ? { sentBytes } : {}) };
}

/** The seeds this node runs, by LV name, from their records (an image pruned since is still found). */
async function seedsByLv(s: StageNode['session']): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const names = await run(s, listFilesReq(SEED_DIR));
  if (names.exitCode !== 0) return out;
  for (const name of names.stdout.split('\n').filter((n) => n.endsWith('.json'))) {
    const r = parseRecord(await readOwn(s, `${SEED_DIR}/${name}`));
    if (r) out.set(r.image, r.uuid);
  }
  return out;
}

export async function seedCatalog(o: SeedOptions): Promise<{ result: SeedResult; error?: CowstackError }> {
  const s = o.node.session;
  const host = s.runner.target;
  rateBytes(o.rateMiBps);
  if (o.peers !== undefined && !(Number.isInteger(o.peers) && o.peers >= 1))
    throw usageError(`--seed-peers "${o.peers}" must be a whole number of 1 or more`);
  const { list } = await acceptList(s, o.source, o.key, o.now ?? new Date(), (fn) => o.node.locked(fn));
  const result: SeedResult = { host, list: { id: list.id, version: list.version, expires: list.expires }, images: [] };
  const state = await observeNode(s);
  const approved = await vgApprovals(s);
  const seeds = o.stop ? await seedsByLv(s) : new Map<string, string>();
  let error: CowstackError | undefined;
  for (const image of list.images) {
    const lv = lvNameOf(image);
    const entry: SeedImage = { name: image.name, version: image.version, lv, action: 'failed' };
    result.images.push(entry);
    if (image.torrent) entry.infoHash = image.torrent.infoHash;
    try {
      if (o.stop) {
        const uuid = seeds.get(lv);
        if (o.only && !o.only.includes(lv)) {
          result.images.pop();
          continue;
        }
        if (!uuid) entry.action = 'not-seeding';
        else if (o.dryRun) {
          entry.action = 'would-stop';
          result.plan = [...(result.plan ?? []), plannedCommand(host, daemon.stopReq(seedFiles(uuid).pid, 'stop'))];
        } else Object.assign(entry, await stopOne(o, uuid));
        continue;
      }
      const c = candidate(image, list, state.repo.byName.get(lv), approved);
      if (typeof c === 'string') {
        entry.action = c;
        continue;
      }
      if (o.dryRun) {
        entry.action = 'would-seed';
        const plan = seedPlan(host, image, c, o.port, rateBytes(o.rateMiBps), o.peers).dryRun;
        result.plan = [...(result.plan ?? []), plannedNote(host, `unless ${lv} is seeded already`), ...plan];
        continue;
      }
      Object.assign(entry, await seedOne(o, host, image, c));
    } catch (e) {
      if (!(e instanceof CowstackError)) throw e;
      entry.error = e.message;
      error ??= e;
    }
  }
  return { result, error };
}
