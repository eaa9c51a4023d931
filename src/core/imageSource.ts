/**
 * Turning an import source (raw, gzip, zstd or qcow2 file, or '-' for stdin) into a raw
 * stream of known size on the machine running cowstack. Compressed and qcow2 sources are
 * expanded into a temporary raw file first: the LV must be created at its final size
 * before the first byte is written.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import { CowstackError, EXIT, notFound, usageError } from '../exec/errors.js';

export type SourceFormat = 'raw' | 'gzip' | 'zstd' | 'qcow2';

export interface RawSource {
  path: string;
  bytes: number;
  format: SourceFormat;
  cleanup(): Promise<void>;
}

export function detectFormat(head: Buffer): SourceFormat {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.subarray(0, 4).toString('latin1') === 'QFI\xfb') return 'qcow2';
  return 'raw';
}

export async function prepareSource(source: string): Promise<RawSource> {
  const work = await fsp.mkdtemp(path.join(process.env.COWSTACK_TMPDIR ?? tmpdir(), 'cowstack-import-'));
  const cleanup = () => fsp.rm(work, { recursive: true, force: true });
  try {
    let file = source;
    if (source === '-') {
      file = path.join(work, 'stdin');
      await pipeline(process.stdin, createWriteStream(file));
    } else {
      const st = await fsp.stat(source).catch(() => undefined);
      if (!st) throw notFound(`import source ${source} does not exist`);
      if (!st.isFile())
        throw usageError(`import source ${source} is not a regular file`, 'give a file or - for standard input');
    }
    const fh = await fsp.open(file, 'r');
    const head = Buffer.alloc(512);
    await fh.read(head, 0, 512, 0);
    await fh.close();
    const format = detectFormat(head);
    let raw = file;
    if (format !== 'raw') {
      raw = path.join(work, 'raw');
      if (format === 'gzip') await pipeline(createReadStream(file), createGunzip(), createWriteStream(raw));
      else if (format === 'zstd') await execa('zstd', ['-q', '-d', '-f', '-o', raw, file]);
      else await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, raw]);
    }
    const bytes = (await fsp.stat(raw)).size;
    if (bytes === 0) throw usageError(`import source ${source} is empty`);
    return { path: raw, bytes, format, cleanup };
  } catch (e) {
    await cleanup();
    if (e instanceof CowstackError) throw e;
    throw new CowstackError(EXIT.FAILED, `cannot read import source ${source}: ${(e as Error).message}`, {
      hint: 'zstd sources need the zstd program and qcow2 sources qemu-img on the machine running cowstack',
      cause: e,
    });
  }
}

export interface Hashed {
  stream: Readable;
  /** Resolves with the sha256 of every byte that went through, once the stream ended. */
  digest: Promise<string>;
}

/**
 * The raw file followed by zeros up to `total` bytes (the LV is whole extents: the tail
 * would otherwise keep whatever a deleted LV left there), hashed on the way and reported
 * to `onProgress`.
 */
export function paddedStream(
  file: string,
  fileBytes: number,
  total: number,
  onProgress?: (bytes: number) => void,
): Hashed {
  const hash = createHash('sha256');
  let seen = 0;
  const out = new PassThrough({ highWaterMark: 4 << 20 });
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      seen += chunk.length;
      onProgress?.(seen);
      cb(null, chunk);
    },
  });
  const digest = new Promise<string>((resolve, reject) => {
    tap.on('end', () => resolve(hash.digest('hex')));
    tap.on('error', reject);
  });
  (async () => {
    const zero = Buffer.alloc(1 << 20);
    async function* body() {
      for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) yield chunk as Buffer;
      let left = total - fileBytes;
      while (left > 0) {
        const n = Math.min(left, zero.length);
        yield n === zero.length ? zero : zero.subarray(0, n);
        left -= n;
      }
    }
    await pipeline(Readable.from(body()), tap, out);
  })().catch((e) => out.destroy(e));
  return { stream: out, digest };
}
