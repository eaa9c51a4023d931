/**
 * mktorrent (Debian mktorrent 1.1): makes the .torrent of a staged image file. It cannot read
 * a block device (it sizes its input with stat()), so it hashes the verified staged copy.
 * Private (-p): peers come from our tracker only, never DHT or peer exchange.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

/** 2^20 bytes a piece: small images still have many pieces to trade while they download. */
export const PIECE_LOG2 = 20;

export const makeTorrentReq = (file: string, torrent: string, announce: string): RunRequest => ({
  argv: ['mktorrent', '-p', '-l', String(PIECE_LOG2), '-a', announce, '-o', torrent, file],
  kind: 'write',
  root: true,
  timeout: 'data',
  title: `make ${torrent}`,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('mktorrent', 'mktorrent', 'make the torrent of a verified staged image (catalog stage)'),
];
