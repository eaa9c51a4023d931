/**
 * A persistent dm-snapshot COW read as data: which chunks of its origin the COW holds, i.e.
 * what was written to a clone while it was live. Layout (kernel dm-snap-persistent.c): chunk 0
 * is the header (le32 magic "SnAp", valid, version, chunk size in sectors); then areas, each
 * one metadata chunk of 16-byte exceptions (le64 origin chunk, le64 COW chunk) followed by
 * the data chunks it describes; a COW chunk of 0 ends the table. Read with od as text (no
 * binary through the runner), as the service user (the `disk` group reads the LV).
 */
import type { RunRequest } from '../exec/types.js';

const SNAP_MAGIC = 0x70416e53;

/** od: `count` unsigned 64-bit (or 32-bit) numbers from byte `offset`, decimal, one pair a line. */
export const readWordsReq = (device: string, offset: number, bytes: number, width: 4 | 8 = 8): RunRequest => ({
  argv: ['od', '-An', '-v', `-tu${width}`, `-w${width * 2}`, '-j', String(offset), '-N', String(bytes), device],
  kind: 'read',
  timeout: 'query',
});

export const headerReq = (device: string): RunRequest => readWordsReq(device, 0, 16, 4);

const numbers = (stdout: string): bigint[] =>
  stdout
    .split(/\s+/)
    .filter(Boolean)
    .map((w) => BigInt(w));

/** Whether a header read by headerReq starts with the snapshot magic: the kernel has written it there. */
export const hasMagic = (stdout: string): boolean => Number(numbers(stdout)[0] ?? -1) === SNAP_MAGIC;

/** The header: the chunk size in sectors of a valid persistent COW; refuses anything else. */
export function parseHeader(stdout: string, device: string): number {
  const [magic, valid, , chunk] = numbers(stdout);
  if (magic === undefined || Number(magic) !== SNAP_MAGIC)
    throw new Error(`${device} has no dm-snapshot header (magic ${magic ?? 'missing'})`);
  if (Number(valid) !== 1) throw new Error(`${device} is an invalidated snapshot COW`);
  const sectors = Number(chunk);
  if (!sectors || sectors & (sectors - 1)) throw new Error(`${device}: chunk size ${sectors} is not a power of two`);
  return sectors;
}

/** Exceptions per metadata area: one chunk of 16-byte entries. */
export const perArea = (chunkBytes: number): number => chunkBytes / 16;

/** Byte offset of metadata area `i` in the COW. */
export const areaOffset = (i: number, chunkBytes: number): number => (1 + i * (perArea(chunkBytes) + 1)) * chunkBytes;

/** One area's exceptions: the origin chunks it lists, and whether the table ends in it. */
export function parseArea(stdout: string): { chunks: number[]; ended: boolean } {
  const n = numbers(stdout);
  const chunks: number[] = [];
  for (let i = 0; i + 1 < n.length; i += 2) {
    if (n[i + 1] === 0n) return { chunks, ended: true };
    chunks.push(Number(n[i]));
  }
  return { chunks, ended: false };
}
