/**
 * aria2 (Debian aria2 1.36) as the BitTorrent client of a staging run. It writes a regular
 * file: it sizes its target with stat(), which says 0 for a block device, so the replica LV is
 * filled from the verified file afterwards (core/stage). DHT, local discovery and peer
 * exchange are off: peers come from our tracker only. It keeps seeding after it completed
 * (--seed-ratio=0.0) until the run stops it, so nodes that finish early keep feeding the others.
 * A restarted download continues from aria2's control file (FILE.aria2) after a hash check.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

export interface Aria2Options {
  /** Directory the torrent's file is in (seeding) or goes to (downloading). */
  dir: string;
  /** The TCP port this peer listens on and announces. */
  port: number;
  /** Upload and download limit, bytes/s (0: none). */
  rateBytes?: number;
  log: string;
  /** The file's name in dir when it differs from the torrent's (--index-out of file 1). */
  out?: string;
  /** Peers connected at once (0: no limit, what every node uses; a repository seed: few). */
  maxPeers?: number;
}

/** argv of a peer that seeds (a complete file, hash-checked first) or downloads then seeds. */
export const peerArgv = (torrent: string, o: Aria2Options): string[] => [
  '/usr/bin/aria2c',
  `--dir=${o.dir}`,
  `--listen-port=${o.port}`,
  '--enable-dht=false',
  '--enable-dht6=false',
  '--bt-enable-lpd=false',
  '--enable-peer-exchange=false',
  '--seed-ratio=0.0',
  '--check-integrity=true',
  '--file-allocation=none',
  '--bt-tracker-interval=5',
  `--bt-max-peers=${o.maxPeers ?? 0}`,
  '--auto-save-interval=1',
  `--max-overall-upload-limit=${o.rateBytes ?? 0}`,
  `--max-overall-download-limit=${o.rateBytes ?? 0}`,
  '--console-log-level=error',
  '--summary-interval=0',
  `--log=${o.log}`,
  '--log-level=notice',
  ...(o.out ? [`--index-out=1=${o.out}`] : []),
  torrent,
];

/** aria2c -S: what the torrent holds, with its info hash. */
export const showTorrentReq = (torrent: string): RunRequest => ({
  argv: ['aria2c', '--show-files=true', torrent],
  kind: 'read',
  root: true,
});

/** "Info Hash: 0123…" from aria2c --show-files. */
export function parseInfoHash(stdout: string): string | undefined {
  return /^Info Hash:\s*([0-9a-f]{40})\s*$/im.exec(stdout)?.[1]?.toLowerCase();
}

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('aria2c', 'aria2', 'seed and download image torrents between nodes (catalog stage)'),
];
