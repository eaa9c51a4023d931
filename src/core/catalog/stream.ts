/**
 * A catalogue image's bytes, from where the list says, decompressed as a stream and
 * checked on the way: no temporary file, and no byte beyond the size the list endorsed is
 * ever passed on (a decompression bomb stops at `size`). The digests settle once the
 * stream ended: sha512 of the raw disk, sha256 of what reached the LV (padded with zeros
 * to `total`, whole extents, as every cowstack image is).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import { CowstackError, EXIT, notFound } from '../../exec/errors.js';
import { STREAM_EXPANDERS } from '../../tools/expand.js';
import type { ListCompression } from './list.js';

export const isUrl = (s: string): boolean => /^https?:\/\//.test(s);

/** An image URL of the list, relative ones resolved against where the list came from. */
export function resolveUrl(listSource: string, url: string): string {
  if (isUrl(url)) return url;
  if (isUrl(listSource)) return new URL(url, listSource).toString();
  if (/^[a-z]+:/i.test(url))
    throw new CowstackError(EXIT.USAGE, `image URL ${url}: only http(s) and paths are fetched`);
  return path.resolve(path.dirname(listSource), url);
}

/** The bytes at a path or http(s) URL, as they are. */
export async function openSource(where: string): Promise<Readable> {
  if (!isUrl(where)) {
    const s = createReadStream(where);
    await new Promise<void>((resolve, reject) => {
      s.once('open', () => resolve());
      s.once('error', (e) => reject(notFound(`cannot open ${where}: ${e.message}`)));
    });
    return s;
  }
  let res: Response;
  try {
    res = await fetch(where, { redirect: 'follow' });
  } catch (e) {
    throw new CowstackError(EXIT.UNREACHABLE, `cannot fetch ${where}: ${(e as Error).message}`, { cause: e });
  }
  if (!res.ok || !res.body) throw notFound(`${where} answered HTTP ${res.status}`);
  return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
}

/** The whole (small) file at a path or URL; undefined when it is not there. */
export async function readSmall(where: string): Promise<Buffer | undefined> {
  let s: Readable;
  try {
    s = await openSource(where);
  } catch (e) {
    if (e instanceof CowstackError && e.exitCode === EXIT.NOT_FOUND) return undefined;
    throw e;
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of s) {
    n += (c as Buffer).length;
    // A list is kilobytes: a huge answer is not one.
    if (n > 16 << 20) throw new CowstackError(EXIT.FAILED, `${where} is larger than 16 MiB: not an image list`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Decompress `input` as a stream. */
export function decompress(input: Readable, format: ListCompression): Readable {
  if (format === 'raw') return input;
  if (format === 'gzip') {
    const g = createGunzip();
    input.on('error', (e) => g.destroy(e));
    return input.pipe(g);
  }
  const x = STREAM_EXPANDERS[format];
  const child = execa(x.program, x.argv, { stdin: 'pipe', stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false } });
  const out = child.stdout;
  input.on('error', (e) => out.destroy(e));
  input.pipe(child.stdin);
  child.catch((e: Error & { code?: string; stderr?: string }) =>
    out.destroy(
      e.code === 'ENOENT'
        ? new CowstackError(EXIT.MISSING, `${x.program} is not installed here: it decompresses ${format} images`)
        : new Error(`${x.program} -d failed: ${String(e.stderr ?? e.message).trim()}`),
    ),
  );
  return out;
}

export interface Digests {
  bytes: number;
  sha512: string;
  sha256: string;
}

export interface VerifyingStream {
  stream: Readable;
  /** Rejects when the source failed, or carried more or fewer bytes than `size`. */
  digests: Promise<Digests>;
}

export function verifyingStream(
  input: Readable,
  o: { format: ListCompression; size: number; total: number; onProgress?: (bytes: number) => void },
): VerifyingStream {
  const sha512 = createHash('sha512');
  const sha256 = createHash('sha256');
  let bytes = 0;
  const out = new PassThrough({ highWaterMark: 4 << 20 });
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes > o.size) return cb(new Error(`more than the list's ${o.size} bytes`));
      sha512.update(chunk);
      sha256.update(chunk);
      o.onProgress?.(bytes);
      cb(null, chunk);
    },
    flush(cb) {
      if (bytes !== o.size) return cb(new Error(`${bytes} bytes, not the list's ${o.size}`));
      const zero = Buffer.alloc(1 << 20);
      for (let left = o.total - o.size; left > 0; left -= zero.length) {
        const piece = left >= zero.length ? zero : zero.subarray(0, left);
        sha256.update(piece);
        this.push(piece);
      }
      cb();
    },
  });
  const digests = pipeline(decompress(input, o.format), count, out).then(() => ({
    bytes,
    sha512: sha512.digest('hex'),
    sha256: sha256.digest('hex'),
  }));
  digests.catch((e: Error) => out.destroy(e));
  return { stream: out, digests };
}
