/**
 * The node's staging directory of peer-to-peer distribution (core/stage): a verified image
 * file that the BitTorrent client seeds or fills, its .torrent, the client's pid file and log,
 * and a small state record that `cache list` shows.
 *
 * The client and the tracker talk to the network, so they do not run as root: they run as
 * PEER_USER, and the only place they may write is the peer directory (PEER_SUBDIR: the image file, aria2's resume
 * record, its log). The torrents, pid files, records and the tracker's whitelist stay in the
 * root-owned STAGING_DIR. Nothing trusts the bytes in a peer directory: a staged file is checked
 * before it is seeded or copied, and the replica's own sha256 is checked on its LV afterwards.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

export const STAGING_DIR = '/var/lib/cowstack/staging';
/** The peer directory's name in a staging directory (core/stage/files.ts, core/catalog/seed.ts). */
export const PEER_SUBDIR = 'peer';
/** Debian's unprivileged account (uid/gid 65534): owns no file outside the peer directories of a node. */
const PEER_OWNER = { user: 'nobody', group: 'nogroup' } as const;
/** The same as start-stop-daemon's --chuid takes it. */
export const PEER_USER = `${PEER_OWNER.user}:${PEER_OWNER.group}`;

/** The staging directory (root's) and in it the peer directory, owned by PEER_USER; idempotent. */
export const makeDirReq = (peerDir: string): RunRequest => ({
  argv: ['install', '-d', '-m', '0755', '-o', PEER_OWNER.user, '-g', PEER_OWNER.group, peerDir],
  kind: 'write',
  root: true,
  title: `make ${peerDir} (${PEER_USER}'s, in a root-owned directory)`,
});

/** "SIZE ALLOCATED" of a file (bytes): how far a sparse download got. Fails when it is missing. */
export const sizesReq = (file: string): RunRequest => ({
  argv: ['stat', '-c', '%s %b %B', '--', file],
  kind: 'read',
  allowFailure: true,
});

export function parseSizes(stdout: string): { size: number; allocated: number } | undefined {
  const [size, blocks, unit] = stdout.trim().split(/\s+/).map(Number);
  if (![size, blocks, unit].every((n) => Number.isFinite(n))) return undefined;
  return { size: size!, allocated: blocks! * unit! };
}

/** A verified raw disk extended with zeros to whole extents: the bytes of the sealed image. */
export const extendReq = (file: string, bytes: number): RunRequest => ({
  argv: ['truncate', '-s', String(bytes), '--', file],
  kind: 'write',
  root: true,
  title: `extend ${file} to ${bytes} bytes (zeros, as the sealed image is padded)`,
});

/** A sealed image's copy cut back to the raw disk's size (the padding of zeros off): what was signed. */
export const cutReq = (file: string, bytes: number): RunRequest => ({
  argv: ['truncate', '-s', String(bytes), '--', file],
  kind: 'write',
  root: true,
  title: `cut ${file} to ${bytes} bytes (the raw disk's size, without the sealed image's padding)`,
});

/** A (binary) file as base64 on stdout: the runners carry text. */
export const readBase64Req = (file: string): RunRequest => ({
  argv: ['base64', '-w0', '--', file],
  kind: 'read',
  root: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('base64', 'coreutils', 'read a .torrent to hand it to the other nodes (catalog stage)'),
];
