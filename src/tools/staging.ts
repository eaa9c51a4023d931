/**
 * The node's staging directory of peer-to-peer distribution (core/stage): a verified image
 * file that the BitTorrent client seeds or fills, its .torrent, the client's pid file and log,
 * and a small state record that `cache list` shows. Root-owned: the image bytes in it are
 * verified before anything trusts them, and only root may replace them.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

export const STAGING_DIR = '/var/lib/cowstack/staging';

export const makeDirReq = (dir: string): RunRequest => ({
  argv: ['install', '-d', '-m', '0755', dir],
  kind: 'write',
  root: true,
  title: `make ${dir}`,
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

/** A (binary) file as base64 on stdout: the runners carry text. */
export const readBase64Req = (file: string): RunRequest => ({
  argv: ['base64', '-w0', '--', file],
  kind: 'read',
  root: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('base64', 'coreutils', 'read a .torrent to hand it to the other nodes (catalog stage)'),
];
