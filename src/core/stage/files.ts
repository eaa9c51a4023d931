/**
 * A staging run's files on each node, named by the image LV's uuid (never its name: a
 * re-created image has a new uuid and never meets the old one's bytes), and the per-node
 * record that `cache list` shows.
 */
import { PEER_SUBDIR, STAGING_DIR } from '../../tools/staging.js';

export interface StagingFiles {
  /** Root's: torrents, pid files, records, the tracker's whitelist. */
  dir: string;
  /** The BitTorrent client's (tools/staging.ts PEER_USER): the image file, resume record, log. */
  peerDir: string;
  /** The image bytes: verified before seeding, filled by the download on the other nodes. */
  image: string;
  /** aria2's resume record next to the file; gone once the download completed. */
  control: string;
  torrent: string;
  pid: string;
  trackerPid: string;
  /** The info hashes the tracker serves (Debian's opentracker tracks only listed ones). */
  whitelist: string;
  log: string;
  record: string;
}

export function stagingFiles(uuid: string, dir = STAGING_DIR): StagingFiles {
  const base = `${dir}/${uuid}`;
  const peerDir = `${dir}/${PEER_SUBDIR}`;
  const peer = `${peerDir}/${uuid}`;
  return {
    dir,
    peerDir,
    image: `${peer}.img`,
    control: `${peer}.img.aria2`,
    torrent: `${base}.torrent`,
    pid: `${base}.peer.pid`,
    trackerPid: `${dir}/tracker.pid`,
    whitelist: `${dir}/tracker.whitelist`,
    log: `${peer}.log`,
    record: `${base}.json`,
  };
}

export type StagePhase = 'seeding' | 'downloading' | 'copying' | 'complete' | 'failed';

/** STAGING/<uuid>.json on a node: what a staging run left there. */
export interface StageRecord {
  image: string;
  vg: string;
  uuid: string;
  sha256: string;
  infoHash: string;
  sizeBytes: number;
  phase: StagePhase;
  updated: string;
  error?: string;
}

export function parseRecord(text: string | undefined): StageRecord | undefined {
  try {
    const r = JSON.parse(text ?? '') as StageRecord;
    return typeof r.uuid === 'string' && typeof r.phase === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}
