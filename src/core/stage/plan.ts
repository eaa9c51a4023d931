/**
 * The commands of a staging run as data, per node and per phase: what `--dry-run` prints and
 * what run.ts executes. Pure: no I/O.
 */
import type { RunRequest } from '../../exec/types.js';
import * as aria2 from '../../tools/aria2.js';
import * as blockData from '../../tools/blockData.js';
import * as daemon from '../../tools/daemon.js';
import { writeRootFileReq } from '../../tools/files.js';
import { removeRootFileReq } from '../../tools/host.js';
import * as mktorrent from '../../tools/mktorrent.js';
import * as opentracker from '../../tools/opentracker.js';
import { makeDirReq, PEER_USER } from '../../tools/staging.js';
import { stagingFiles, type StageRecord } from './files.js';
import type { StagePeer, StageTracker } from './spec.js';

export interface StageImage {
  name: string;
  vg: string;
  uuid: string;
  sha256: string;
  sizeBytes: number;
  /** The image LV's device on the seed. */
  device: string;
}

export interface PlannedCommand {
  host: string;
  req: RunRequest;
}

export interface StagePlan {
  image: StageImage;
  seed: StagePeer;
  tracker: StageTracker;
  /** Nodes that download (the seed is never one of them: it holds the verified file). */
  downloaders: StagePeer[];
  /** Nodes whose replica is made from their staged file (downloaders, and the seed if asked). */
  replicas: string[];
  /** On the seed: the staging copy of the image (skipped when a verified copy is there). */
  copy: RunRequest[];
  /** On the seed: the torrent of the verified copy. */
  torrent: RunRequest[];
  /** On the seed: tracker (its whitelist written once the info hash is known) and seeding client. */
  seedStart: RunRequest[];
  /** Per downloader: its staging dir; the torrent is written there once it is known. */
  prepare: PlannedCommand[];
  /** Per downloader: its client. */
  peerStart: PlannedCommand[];
  /** Every client and the tracker, stopped at the end (also after a failure). */
  stop: PlannedCommand[];
  /** Staged image files removed once the replicas are complete (the torrents stay). */
  cleanup: PlannedCommand[];
}

/** A node's BitTorrent client for the image of uuid: downloads (if need be) and seeds from its staging dir. */
export function peerStartReq(uuid: string, port: number, rateBytes: number, title: string, out?: string): RunRequest {
  const f = stagingFiles(uuid);
  const argv = aria2.peerArgv(f.torrent, { dir: f.peerDir, port, rateBytes, log: f.log, out });
  return daemon.startReq(f.pid, argv, title, PEER_USER);
}

export function stagePlan(
  image: StageImage,
  seed: StagePeer,
  targets: StagePeer[],
  tracker: StageTracker,
  rateBytes: number,
): StagePlan {
  const f = stagingFiles(image.uuid);
  const peer = (p: StagePeer, title: string) => peerStartReq(image.uuid, p.port, rateBytes, title);
  const downloaders = targets.filter((t) => t.host !== seed.host);
  const all = [seed, ...downloaders];
  return {
    image,
    seed,
    tracker,
    downloaders,
    replicas: targets.map((t) => t.host),
    copy: [makeDirReq(f.peerDir), blockData.copyToFileReq(image.device, f.image)],
    torrent: [removeRootFileReq(f.torrent), mktorrent.makeTorrentReq(f.image, f.torrent, tracker.url)],
    seedStart: [
      // Restarted: a tracker left by an earlier run would not know this run's whitelist.
      ...(tracker.runOnSeedPort
        ? [
            daemon.stopReq(f.trackerPid, 'stop a tracker left running'),
            daemon.startReq(
              f.trackerPid,
              opentracker.trackerArgv(tracker.runOnSeedPort, f.whitelist),
              `start the tracker on port ${tracker.runOnSeedPort}`,
              PEER_USER,
            ),
          ]
        : []),
      peer(seed, `seed ${image.vg}/${image.name} on port ${seed.port}`),
    ],
    prepare: downloaders.map((p) => ({ host: p.host, req: makeDirReq(f.peerDir) })),
    peerStart: downloaders.map((p) => ({ host: p.host, req: peer(p, `download and seed on port ${p.port}`) })),
    stop: [
      ...all.map((p) => ({ host: p.host, req: daemon.stopReq(f.pid, 'stop the BitTorrent client') })),
      ...(tracker.runOnSeedPort ? [{ host: seed.host, req: daemon.stopReq(f.trackerPid, 'stop the tracker') }] : []),
    ],
    cleanup: all.map((p) => ({ host: p.host, req: removeRootFileReq(f.image) })),
  };
}

/** The torrent file handed to a downloader (written whole; binary, so a Buffer). */
export const torrentWriteReq = (uuid: string, bytes: Buffer): RunRequest =>
  writeRootFileReq(stagingFiles(uuid).torrent, bytes);

export const whitelistWriteReq = (uuid: string, infoHash: string): RunRequest =>
  writeRootFileReq(stagingFiles(uuid).whitelist, `${infoHash}\n`);

export const recordWriteReq = (r: StageRecord): RunRequest =>
  writeRootFileReq(stagingFiles(r.uuid).record, `${JSON.stringify(r)}\n`);
