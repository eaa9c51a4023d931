/**
 * The .torrent of a catalogue image, made while `catalog publish` reads the image (one pass
 * for the digests and the pieces), and its info hash, so that the signed list can name the
 * torrent and a node can refuse any other. Only the metainfo file is made here (bencode,
 * BEP 3); the transfer is aria2's. mktorrent needs a file it can stat() and a root helper,
 * whereas publish runs anywhere, reads compressed files and hashes the raw disk inside them.
 *
 * The info dictionary holds name, length, piece length, pieces and private=1: nothing of the
 * time or the tool, so the same bytes always give the same info hash.
 */
import { createHash } from 'node:crypto';
import { refused } from '../../exec/errors.js';
import { PIECE_LOG2 } from '../../tools/mktorrent.js';

export const PIECE_BYTES = 2 ** PIECE_LOG2;

type Bencodable = number | string | Buffer | Bencodable[] | { [key: string]: Bencodable };

export function bencode(v: Bencodable): Buffer {
  if (typeof v === 'number') return Buffer.from(`i${v}e`);
  if (typeof v === 'string' || Buffer.isBuffer(v)) {
    const b = Buffer.isBuffer(v) ? v : Buffer.from(v);
    return Buffer.concat([Buffer.from(`${b.length}:`), b]);
  }
  if (Array.isArray(v)) return Buffer.concat([Buffer.from('l'), ...v.map(bencode), Buffer.from('e')]);
  // Keys sorted as raw strings: a dictionary has one encoding, so one info hash.
  const keys = Object.keys(v).sort();
  return Buffer.concat([Buffer.from('d'), ...keys.flatMap((k) => [bencode(k), bencode(v[k]!)]), Buffer.from('e')]);
}

/** Hashes the pieces of a stream of bytes as they go by. */
export class PieceHasher {
  private readonly pieces: Buffer[] = [];
  private hash = createHash('sha1');
  private inPiece = 0;
  length = 0;

  update(chunk: Buffer): void {
    for (let at = 0; at < chunk.length;) {
      const take = Math.min(PIECE_BYTES - this.inPiece, chunk.length - at);
      this.hash.update(chunk.subarray(at, at + take));
      at += take;
      this.inPiece += take;
      this.length += take;
      if (this.inPiece === PIECE_BYTES) this.close();
    }
  }

  private close(): void {
    this.pieces.push(this.hash.digest());
    this.hash = createHash('sha1');
    this.inPiece = 0;
  }

  /** The torrent of what went by, named `name`; webSeeds: BEP 19 URLs of the same bytes. */
  torrent(name: string, announce: string, webSeeds: string[] = []): { bytes: Buffer; infoHash: string } {
    if (this.inPiece > 0) this.close();
    const info = bencode({
      length: this.length,
      name,
      'piece length': PIECE_BYTES,
      pieces: Buffer.concat(this.pieces),
      private: 1,
    });
    const bytes = Buffer.concat([
      Buffer.from('d'),
      bencode('announce'),
      bencode(announce),
      bencode('info'),
      info,
      ...(webSeeds.length ? [bencode('url-list'), bencode(webSeeds)] : []),
      Buffer.from('e'),
    ]);
    return { bytes, infoHash: createHash('sha1').update(info).digest('hex') };
  }
}

/** End offset of the bencoded value starting at `at`. */
function skip(b: Buffer, at: number): number {
  const c = String.fromCharCode(b[at] ?? 0);
  if (c === 'i') return b.indexOf('e', at) + 1;
  if (c === 'l' || c === 'd') {
    let p = at + 1;
    while (b[p] !== undefined && b[p] !== 0x65) p = skip(b, p);
    if (b[p] === undefined) throw new Error('unterminated list or dictionary');
    return p + 1;
  }
  const colon = b.indexOf(':', at);
  const len = Number(b.subarray(at, colon).toString('latin1'));
  if (colon < 0 || !/^\d+$/.test(b.subarray(at, colon).toString('latin1')) || colon + 1 + len > b.length)
    throw new Error(`bad string at byte ${at}`);
  return colon + 1 + len;
}

/**
 * The info hash of a .torrent (sha1 of its info dictionary's bytes as they are in the file),
 * computed here rather than taken from the tool that will download it: the check comes first.
 */
export function infoHashOf(torrent: Buffer, where: string): string {
  try {
    if (torrent[0] !== 0x64) throw new Error('not a bencoded dictionary');
    for (let p = 1; torrent[p] !== 0x65;) {
      if (torrent[p] === undefined) throw new Error('unterminated dictionary');
      const keyEnd = skip(torrent, p);
      const key = torrent.subarray(torrent.indexOf(':', p) + 1, keyEnd).toString('latin1');
      const valueEnd = skip(torrent, keyEnd);
      if (key === 'info') {
        if (torrent[keyEnd] !== 0x64) throw new Error('its info is not a dictionary');
        return createHash('sha1').update(torrent.subarray(keyEnd, valueEnd)).digest('hex');
      }
      p = valueEnd;
    }
    throw new Error('no info dictionary');
  } catch (e) {
    throw refused(`${where} is not a torrent: ${(e as Error).message}`);
  }
}

/**
 * The same torrent without its web seeds (BEP 19 url-list, BEP 17 httpseeds): the info
 * dictionary, so the info hash, is untouched. A node that downloads only from peers (the
 * repository side's BitTorrent seed, the other nodes) gets this, so the http server sends nothing.
 */
export function withoutWebSeeds(torrent: Buffer, where: string): Buffer {
  infoHashOf(torrent, where); // a torrent at all, before it is taken apart
  const kept: Buffer[] = [Buffer.from('d')];
  for (let p = 1; torrent[p] !== 0x65;) {
    const keyEnd = skip(torrent, p);
    const key = torrent.subarray(torrent.indexOf(':', p) + 1, keyEnd).toString('latin1');
    const valueEnd = skip(torrent, keyEnd);
    if (key !== 'url-list' && key !== 'httpseeds') kept.push(torrent.subarray(p, valueEnd));
    p = valueEnd;
  }
  kept.push(Buffer.from('e'));
  return Buffer.concat(kept);
}
