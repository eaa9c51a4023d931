/**
 * `catalog publish`: an image list made from image files and signed with a minisign secret
 * key, written as LIST and LIST.minisig beside each other (the layout `minisign -V -m LIST`
 * and `catalog sync LIST` expect). Every file is read once, decompressed as a stream, to
 * learn its raw size and both digests: the list endorses the disk, not its packaging.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { usageError } from '../../exec/errors.js';
import { detectFormat } from '../imageSource.js';
import { EXTENT, roundUp } from '../validate.js';
import {
  LIST_COMPRESSIONS,
  LIST_FORMAT,
  parseRef,
  trustedComment,
  validateWord,
  type ImageList,
  type ListCompression,
  type ListImage,
  type ListTorrent,
  lvNameOf,
} from './list.js';
import { signData, type SecretKey } from './minisign.js';
import { decompress, isUrl } from './stream.js';
import { validateAnnounce } from '../stage/spec.js';
import { PieceHasher } from '../stage/torrent.js';

export interface PublishOptions {
  out: string;
  key: SecretKey;
  id: string;
  version: number;
  endorser?: string;
  /** Days from now, or an ISO time. */
  expires: string;
  /** Prefix for the image URLs (default: the file's name, relative to the list). */
  urlBase?: string;
  /**
   * Announce URL: make the torrent of every raw image (NAME-VERSION.torrent beside the list)
   * and sign its info hash into the list. Compressed files get none: a web seed serves the
   * file as it is, and a torrent carries the raw disk.
   */
  torrentTracker?: string;
  /** Where peers fetch the raw files over http as a BEP 19 web seed (default: --url-base). */
  webSeedBase?: string;
  /** NAME@VERSION=FILE each. */
  images: string[];
  now?: Date;
  onProgress?: (file: string, bytes: number) => void;
}

export function parseSpec(spec: string): { name: string; version: string; file: string } {
  const at = spec.indexOf('=');
  const { name, version } = parseRef(at > 0 ? spec.slice(0, at) : '');
  if (at < 0 || !version) throw usageError(`image "${spec}" is not NAME@VERSION=FILE`);
  return { name, version, file: spec.slice(at + 1) };
}

export function expiryOf(text: string, now: Date): string {
  if (/^\d+$/.test(text))
    return new Date(now.getTime() + Number(text) * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z');
  const t = Date.parse(text);
  if (Number.isNaN(t) || t <= now.getTime())
    throw usageError(`--expires "${text}" is neither a number of days nor a future time`);
  return new Date(t).toISOString().replace(/\.\d+Z$/, 'Z');
}

async function describeFile(spec: string, o: PublishOptions): Promise<ListImage> {
  const { name, version, file } = parseSpec(spec);
  const fh = await fsp.open(file, 'r').catch(() => {
    throw usageError(`image file ${file} cannot be opened`);
  });
  const head = Buffer.alloc(512);
  await fh.read(head, 0, 512, 0);
  await fh.close();
  const detected = detectFormat(head);
  if (!LIST_COMPRESSIONS.includes(detected as ListCompression))
    throw usageError(
      `image file ${file} is ${detected}: a list carries raw disks, plain or ` +
        `compressed (${LIST_COMPRESSIONS.join(', ')})`,
      `convert it first: qemu-img convert -O raw ${file} ${file}.raw`,
    );
  const format = detected as ListCompression;
  const sha512 = createHash('sha512');
  const sha256 = createHash('sha256');
  const pieces = o.torrentTracker && format === 'raw' ? new PieceHasher() : undefined;
  let size = 0;
  for await (const chunk of decompress(createReadStream(file, { highWaterMark: 4 << 20 }), format)) {
    sha512.update(chunk as Buffer);
    sha256.update(chunk as Buffer);
    pieces?.update(chunk as Buffer);
    size += (chunk as Buffer).length;
    o.onProgress?.(file, size);
  }
  if (size === 0 || size % 512 !== 0)
    throw usageError(`image file ${file} is ${size} bytes once expanded, not whole 512-byte sectors: not a disk image`);
  // The sealed LV is whole extents: its sha256 covers the zeros cowstack pads it with.
  const zero = Buffer.alloc(1 << 20);
  for (let left = roundUp(size, EXTENT) - size; left > 0; left -= zero.length)
    sha256.update(left >= zero.length ? zero : zero.subarray(0, left));
  const base = path.basename(file);
  const url = under(o.urlBase, base);
  return {
    name,
    version,
    size,
    format,
    sha512: sha512.digest('hex'),
    sha256: sha256.digest('hex'),
    urls: [url],
    ...(pieces ? { torrent: await writeTorrent(o, lvNameOf({ name, version }), pieces, base) } : {}),
  };
}

/** NAME relative to a base URL, or as it is (beside the list) without one. */
const under = (base: string | undefined, name: string): string =>
  base ? new URL(name, base.endsWith('/') ? base : `${base}/`).toString() : name;

/** LV.torrent beside the list; the raw file is its web seed when it is served at a known URL. */
async function writeTorrent(o: PublishOptions, lv: string, pieces: PieceHasher, raw: string): Promise<ListTorrent> {
  const file = `${lv}.torrent`;
  const seedBase = o.webSeedBase ?? o.urlBase;
  const seeds = seedBase ? [under(seedBase, raw)] : [];
  const t = pieces.torrent(`${lv}.img`, o.torrentTracker!, seeds);
  await fsp.writeFile(path.join(path.dirname(o.out), file), t.bytes);
  return { infoHash: t.infoHash, url: under(o.urlBase, file) };
}

export async function publishList(o: PublishOptions): Promise<{ list: ImageList; out: string; signature: string }> {
  validateWord(o.id, 'list id');
  if (o.torrentTracker !== undefined) validateAnnounce(o.torrentTracker, '--torrent-tracker');
  if (o.webSeedBase !== undefined && !isUrl(o.webSeedBase))
    throw usageError(`--web-seed "${o.webSeedBase}" is not an http(s) URL`);
  if (!Number.isSafeInteger(o.version) || o.version < 0)
    throw usageError(`--version "${o.version}" is not a whole number`);
  if (!o.images.length) throw usageError('give at least one image: NAME@VERSION=FILE');
  const now = o.now ?? new Date();
  const expires = expiryOf(o.expires, now);
  const images: ListImage[] = [];
  for (const spec of o.images) images.push(await describeFile(spec, o));
  const list: ImageList = {
    format: LIST_FORMAT,
    id: o.id,
    version: o.version,
    created: now.toISOString().replace(/\.\d+Z$/, 'Z'),
    expires,
    endorser: { name: o.endorser ?? `minisign key ${o.key.keyId}`, keyId: o.key.keyId },
    images,
  };
  const data = Buffer.from(`${JSON.stringify(list, null, 2)}\n`);
  const signature = signData(data, o.key, trustedComment(list));
  await fsp.writeFile(o.out, data);
  await fsp.writeFile(`${o.out}.minisig`, signature);
  return { list, out: o.out, signature: `${o.out}.minisig` };
}
