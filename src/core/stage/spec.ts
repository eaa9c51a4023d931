/**
 * What a staging run is given, validated before anything is touched: the nodes (each with the
 * TCP port its BitTorrent client listens on and announces), the seed, the tracker, a rate.
 * Production: every node listens on the same port (6881) at its own address, and the tracker
 * runs on the repository side. The testbed's guests share one address (10.0.2.2 behind qemu
 * user networking), so each is given its own port, forwarded to it under the same number.
 */
import { usageError } from '../../exec/errors.js';
import { validateHostName } from '../validate.js';

export const DEFAULT_PEER_PORT = 6881;
export const DEFAULT_TRACKER_PORT = 6969;

export interface StagePeer {
  host: string;
  port: number;
}

export interface StageTracker {
  /** The announce URL every peer uses (the seed's own tracker, or one already running). */
  url: string;
  /** Run opentracker on the seed node at this TCP port; absent: the URL's tracker exists. */
  runOnSeedPort?: number;
}

function port(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1024 || n > 65535)
    throw usageError(`${what} port "${text}" must be a number from 1024 to 65535`);
  return n;
}

/** "node1" or "node1:6882": a host and the port its client listens on. */
export function parsePeer(text: string, what = 'host'): StagePeer {
  const m = /^([^:\s]+)(?::(\S+))?$/.exec(text.trim());
  if (!m) throw usageError(`${what} "${text}" must be HOST or HOST:PORT`);
  return { host: validateHostName(m[1]!), port: m[2] ? port(m[2], `${what} ${m[1]}`) : DEFAULT_PEER_PORT };
}

/** --hosts n1,n2:6882,...: distinct hosts; two on one host would fight over its files. */
export function parsePeers(text: string): StagePeer[] {
  const peers = text
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => parsePeer(t));
  if (!peers.length) throw usageError(`--hosts "${text}" names no host`, 'give --hosts node1,node2,...');
  const seen = new Set<string>();
  for (const p of peers) {
    if (seen.has(p.host)) throw usageError(`--hosts names ${p.host} twice`);
    seen.add(p.host);
  }
  return peers;
}

/**
 * The tracker: --tracker URL (an http announce URL) and/or --tracker-port N (run opentracker
 * on the seed). Default: opentracker on the seed at 6969, announced as http://SEED:6969/announce.
 */
export function parseTracker(seed: StagePeer, url?: string, trackerPort?: string): StageTracker {
  const runOnSeedPort =
    trackerPort !== undefined ? port(trackerPort, 'tracker') : url === undefined ? DEFAULT_TRACKER_PORT : undefined;
  if (url !== undefined) validateAnnounce(url, '--tracker');
  return { url: url ?? `http://${seed.host}:${runOnSeedPort}/announce`, runOnSeedPort };
}

export function validateAnnounce(url: string, what: string): string {
  if (!/^http:\/\/[A-Za-z0-9.-]+(:\d+)?\/announce$/.test(url))
    throw usageError(`${what} "${url}" must be an http://HOST[:PORT]/announce URL`);
  return url;
}

/** A copy rate in MiB/s as aria2 takes it (bytes/s; 0 = none). */
export function rateBytes(rateMiBps: number | undefined): number {
  if (rateMiBps === undefined) return 0;
  if (!(rateMiBps > 0)) throw usageError(`--rate "${rateMiBps}" must be a positive number of MiB/s`);
  return Math.round(rateMiBps * 2 ** 20);
}
