/**
 * Turning an import source (a file, an http(s) URL, or '-' for stdin) into a raw stream of known size on the
 * machine running cowstack. The format comes from the content, never the name: raw, gzip,
 * zstd, xz, bzip2 or qcow2 (expanded into a temporary raw file first: the LV must be created
 * at its final size before the first byte is written). VMDK, VDI and VHD/VHDX are recognised
 * and refused with the command that converts them. A raw result must be whole 512-byte
 * sectors: a text file or a truncated download is not a disk.
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
import { isUrl, openSource } from './catalog/stream.js';
import { EXPANDERS, qcow2InfoArgv, qcow2OtherFile, type ExpandFormat } from '../tools/expand.js';

/** Formats cowstack imports. */
export const SOURCE_FORMATS = ['raw', 'gzip', 'zstd', 'xz', 'bzip2', 'qcow2'] as const;
export type SourceFormat = (typeof SOURCE_FORMATS)[number];
/** Disk formats recognised only to be refused: qemu-img's name for each. */
const CONVERT: Record<string, string> = { vmdk: 'vmdk', vdi: 'vdi', vhd: 'vpc', vhdx: 'vhdx' };
export type DetectedFormat = SourceFormat | 'vmdk' | 'vdi' | 'vhd' | 'vhdx';

export interface RawSource {
  path: string;
  bytes: number;
  format: SourceFormat;
  /** sha256 of the source exactly as given (what `sha256sum FILE` prints), computed once. */
  sourceSha256(): Promise<string>;
  cleanup(): Promise<void>;
}

/**
 * The format from the first 512 bytes (`head`) and the last 512 (`tail`: a fixed VHD is raw
 * data followed by a footer). Anything unrecognised is raw.
 */
export function detectFormat(head: Buffer, tail?: Buffer): DetectedFormat {
  const text = (b: Buffer, at: number, n: number) => b.subarray(at, at + n).toString('latin1');
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (text(head, 0, 6) === '\xfd7zXZ\x00') return 'xz';
  if (/^BZh[1-9]$/.test(text(head, 0, 4)) && ['1AY&SY', '\x17rE8P\x90'].includes(text(head, 4, 6))) return 'bzip2';
  if (text(head, 0, 4) === 'QFI\xfb') return 'qcow2';
  if (['KDMV', 'COWD'].includes(text(head, 0, 4)) || text(head, 0, 21) === '# Disk DescriptorFile') return 'vmdk';
  if (head.readUInt32LE(64) === 0xbeda107f) return 'vdi';
  if (text(head, 0, 8) === 'vhdxfile') return 'vhdx';
  if (text(head, 0, 8) === 'conectix' || (tail && text(tail, 0, 8) === 'conectix')) return 'vhd';
  return 'raw';
}

async function readAt(file: string, at: number): Promise<Buffer> {
  const fh = await fsp.open(file, 'r');
  try {
    const b = Buffer.alloc(512);
    await fh.read(b, 0, 512, at);
    return b;
  } finally {
    await fh.close();
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Refuse a qcow2 that reads other files: a backing file or an external data file. */
async function refuseQcow2Links(source: string, file: string): Promise<void> {
  const other = qcow2OtherFile((await execa(...qcow2InfoArgv(file))).stdout);
  if (other) {
    throw usageError(
      `import source ${source} is a qcow2 image that reads another file (${other}): refusing it`,
      `flatten it into one raw file first: qemu-img convert -O raw ${source} ${source}.raw`,
    );
  }
}

async function expand(source: string, given: string, format: SourceFormat, raw: string): Promise<void> {
  // Absolute, so a file named "-x" is never an option of qemu-img (which has no "--").
  const file = path.resolve(given);
  if (format === 'gzip') return void (await pipeline(createReadStream(file), createGunzip(), createWriteStream(raw)));
  const x = EXPANDERS[format as ExpandFormat];
  try {
    if (format === 'qcow2') await refuseQcow2Links(source, file);
    const argv = x.argv(file, raw);
    if (argv.includes(raw)) await execa(x.program, argv);
    else await execa(x.program, argv, { stdout: { file: raw } });
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e;
    throw new CowstackError(
      EXIT.MISSING,
      `import source ${source} is ${format}, and ${x.program} is not installed on this machine`,
      {
        hint:
          `install ${x.pkg} here, or expand it first where ${x.program} is: ` +
          (format === 'qcow2'
            ? `qemu-img convert -O raw ${source} ${source}.raw`
            : `${x.program} -d -c ${source} > ${source}.raw`) +
          ', and import the raw file',
      },
    );
  }
}

/**
 * The source as a raw file. `format` forces one (`raw`: take the bytes as they are, whatever
 * they look like); by default it is detected from the content.
 */
export async function prepareSource(source: string, opts: { format?: SourceFormat | 'auto' } = {}): Promise<RawSource> {
  const work = await fsp.mkdtemp(path.join(process.env.COWSTACK_TMPDIR ?? tmpdir(), 'cowstack-import-'));
  const cleanup = () => fsp.rm(work, { recursive: true, force: true });
  try {
    let file = source;
    if (source === '-') {
      file = path.join(work, 'stdin');
      await pipeline(process.stdin, createWriteStream(file));
    } else if (isUrl(source)) {
      // Fetched once into the work directory: the format is read from its first and last bytes.
      file = path.join(work, 'download');
      await pipeline(await openSource(source), createWriteStream(file));
    } else {
      const st = await fsp.stat(source).catch(() => undefined);
      if (!st) throw notFound(`import source ${source} does not exist`);
      if (!st.isFile())
        throw usageError(`import source ${source} is not a regular file`, 'give a file or - for standard input');
    }
    const size = (await fsp.stat(file)).size;
    if (size === 0) throw usageError(`import source ${source} is empty`);
    const detected =
      opts.format && opts.format !== 'auto'
        ? opts.format
        : detectFormat(await readAt(file, 0), size >= 1024 ? await readAt(file, size - 512) : undefined);
    if (detected in CONVERT) {
      throw usageError(
        `import source ${source} is a ${detected.toUpperCase()} disk image, which cowstack does not import`,
        `convert it to raw first: qemu-img convert -f ${CONVERT[detected]} -O raw ${source} ${source}.raw`,
      );
    }
    const format = detected as SourceFormat;
    let raw = file;
    if (format !== 'raw') {
      raw = path.join(work, 'raw');
      await expand(source, file, format, raw);
    }
    const bytes = (await fsp.stat(raw)).size;
    const after = format === 'raw' ? '' : ` once expanded from ${format}`;
    if (bytes === 0) throw usageError(`import source ${source} is empty${after}`);
    if (bytes % 512 !== 0) {
      throw usageError(
        `import source ${source} is ${bytes} bytes${after}, not whole 512-byte sectors: not a disk image`,
        'check that it is the image you meant (not a text file or a truncated download); ' +
          'a raw disk that really is this size can be padded: truncate -s %512 FILE',
      );
    }
    let sha: Promise<string> | undefined;
    return { path: raw, bytes, format, sourceSha256: () => (sha ??= sha256File(file)), cleanup };
  } catch (e) {
    await cleanup();
    if (e instanceof CowstackError) throw e;
    throw new CowstackError(EXIT.FAILED, `cannot read import source ${source}: ${(e as Error).message}`, {
      hint:
        'check that the file is complete; ' +
        'compressed and qcow2 sources are expanded on the machine running cowstack',
      cause: e,
    });
  }
}

export interface Hashed {
  stream: Readable;
  /** Resolves with the sha256 of every byte that went through, once the stream ended. */
  digest: Promise<string>;
  /** Resolves with the sha256 of the file's bytes alone (without the padding). */
  fileDigest: Promise<string>;
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
  const fileHash = createHash('sha256');
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
  let fileDone: (hex: string) => void = () => {};
  const fileDigest = new Promise<string>((resolve) => (fileDone = resolve));
  (async () => {
    const zero = Buffer.alloc(1 << 20);
    async function* body() {
      for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) {
        fileHash.update(chunk as Buffer);
        yield chunk as Buffer;
      }
      fileDone(fileHash.digest('hex'));
      let left = total - fileBytes;
      while (left > 0) {
        const n = Math.min(left, zero.length);
        yield n === zero.length ? zero : zero.subarray(0, n);
        left -= n;
      }
    }
    await pipeline(Readable.from(body()), tap, out);
  })().catch((e) => out.destroy(e));
  return { stream: out, digest, fileDigest };
}
