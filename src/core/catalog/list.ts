/**
 * The image list: one JSON document, signed as a whole (minisign.ts). Its trusted comment
 * repeats the list's id, version and expiry so that `minisign -V` shows them and so that
 * they are covered by the signature even for a reader that never parses the JSON.
 *
 * Per image: `sha512` is of the raw disk (the `size` bytes once decompressed): what
 * sync checks while the bytes stream into the LV, before it seals; `sha256` is of the
 * image as cowstack seals it (the raw disk zero-padded to whole 4 MiB extents), the value
 * of its cowstack_sha256 tag and of `sha256sum /dev/VG/LV` on any node.
 */
import { refused, usageError } from '../../exec/errors.js';
import { validateLvName } from '../validate.js';

export const LIST_FORMAT = 'cowstack-image-list/1';
/** Compressions a list may name: each one is decompressed as a stream on its way to the LV. */
export const LIST_COMPRESSIONS = ['raw', 'gzip', 'zstd', 'xz', 'bzip2'] as const;
export type ListCompression = (typeof LIST_COMPRESSIONS)[number];

export interface ListImage {
  name: string;
  version: string;
  /** Bytes of the raw disk (whole 512-byte sectors). */
  size: number;
  format: ListCompression;
  sha512: string;
  sha256: string;
  /** Where to fetch it: http(s) URLs, or paths relative to the list's own location. */
  urls: string[];
  /**
   * Where distributed peer to peer: the info hash of the torrent of the raw disk (the bytes
   * `sha512` covers) and where its .torrent is fetched (a URL, or a path relative to the list).
   * Signed with the rest: a node refuses a torrent with any other info hash.
   */
  torrent?: ListTorrent;
}

export interface ListTorrent {
  infoHash: string;
  url: string;
}

export interface ImageList {
  format: typeof LIST_FORMAT;
  id: string;
  version: number;
  created: string;
  expires: string;
  endorser: { name: string; keyId: string };
  images: ListImage[];
}

/** Characters an LVM tag may hold (list ids and image versions end up in tags). */
const WORD = /^[A-Za-z0-9_+.-]{1,64}$/;

export function validateWord(value: string, what: string): string {
  if (!WORD.test(value))
    throw usageError(`${what} "${value}" is not 1-64 of A-Z a-z 0-9 _ + . -`, 'LVM tags carry it: keep to those');
  return value;
}

/** The LV a catalogue image is imported as: NAME-VERSION. */
export const lvNameOf = (i: Pick<ListImage, 'name' | 'version'>): string => `${i.name}-${i.version}`;

/** "NAME" or "NAME@VERSION" from the command line. */
export function parseRef(text: string): { name: string; version?: string } {
  const [name, version, extra] = text.split('@');
  if (extra !== undefined || !name) throw usageError(`"${text}" is not NAME or NAME@VERSION`);
  validateLvName(name, 'image name');
  if (version !== undefined) validateWord(version, 'image version');
  return { name, version };
}

export const trustedComment = (l: Pick<ImageList, 'id' | 'version' | 'expires'>): string =>
  `cowstack-image-list id=${l.id} version=${l.version} expires=${l.expires}`;

const isoTime = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(v) || Number.isNaN(Date.parse(v)))
    throw refused(`list ${what} "${String(v)}" is not a UTC time like 2026-11-30T12:00:00Z`);
  return v;
};

const hex = (v: unknown, len: number, what: string): string => {
  if (typeof v !== 'string' || !new RegExp(`^[0-9a-f]{${len}}$`).test(v))
    throw refused(`${what} "${String(v)}" is not ${len} lower-case hex digits`);
  return v;
};

function parseImage(v: unknown, at: number): ListImage {
  const o = (v ?? {}) as Record<string, unknown>;
  const where = `list image #${at + 1}`;
  const name = String(o.name ?? '');
  try {
    validateLvName(name, `${where} name`);
    validateWord(String(o.version ?? ''), `${where} version`);
    validateLvName(lvNameOf({ name, version: String(o.version) }), `${where} LV name`);
  } catch (e) {
    throw refused((e as Error).message);
  }
  const size = o.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0)
    throw refused(`${where} (${name}) size ${String(size)} is not a positive number of whole 512-byte sectors`);
  if (!LIST_COMPRESSIONS.includes(o.format as ListCompression))
    throw refused(`${where} (${name}) format "${String(o.format)}" is not one of ${LIST_COMPRESSIONS.join(', ')}`);
  const urls = o.urls;
  if (!Array.isArray(urls) || urls.length === 0 || !urls.every((u) => typeof u === 'string' && u.length > 0))
    throw refused(`${where} (${name}) has no urls`);
  return {
    name,
    version: String(o.version),
    size,
    format: o.format as ListCompression,
    sha512: hex(o.sha512, 128, `${where} (${name}) sha512`),
    sha256: hex(o.sha256, 64, `${where} (${name}) sha256`),
    urls: urls as string[],
    ...(o.torrent === undefined ? {} : { torrent: parseTorrent(o.torrent, `${where} (${name}) torrent`) }),
  };
}

function parseTorrent(v: unknown, where: string): ListTorrent {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o.url !== 'string' || !o.url) throw refused(`${where} has no url`);
  return { infoHash: hex(o.infoHash, 40, `${where} infoHash`), url: o.url };
}

/** The list's JSON, checked field by field; the trusted comment must say the same id, version, expiry. */
export function parseList(data: Buffer, comment: string): ImageList {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw refused(`list is not JSON: ${(e as Error).message}`);
  }
  if (doc.format !== LIST_FORMAT) throw refused(`list format "${String(doc.format)}" is not ${LIST_FORMAT}`);
  const id = String(doc.id ?? '');
  if (!WORD.test(id)) throw refused(`list id "${id}" is not 1-64 of A-Z a-z 0-9 _ + . -`);
  const version = doc.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0)
    throw refused(`list version ${String(version)} is not a whole number`);
  const endorser = (doc.endorser ?? {}) as Record<string, unknown>;
  if (typeof endorser.name !== 'string' || typeof endorser.keyId !== 'string')
    throw refused('list endorser has no name and keyId');
  const images = Array.isArray(doc.images) ? doc.images.map(parseImage) : [];
  const seen = new Set<string>();
  for (const i of images) {
    if (seen.has(lvNameOf(i))) throw refused(`list names ${i.name}@${i.version} twice`);
    seen.add(lvNameOf(i));
  }
  const list: ImageList = {
    format: LIST_FORMAT,
    id,
    version,
    created: isoTime(doc.created, 'created'),
    expires: isoTime(doc.expires, 'expires'),
    endorser: { name: endorser.name, keyId: endorser.keyId },
    images,
  };
  if (comment !== trustedComment(list))
    throw refused(
      `the signed trusted comment "${comment}" does not describe this list (${trustedComment(list)})`,
      'the list and its signature do not belong together',
    );
  return list;
}
