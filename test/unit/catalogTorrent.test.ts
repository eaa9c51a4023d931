/**
 * Torrents in the signed list (issue 14): publish signs the info hash of each raw image's
 * torrent (changing it breaks the signature), the torrent's info dictionary is the standard
 * one (checked against one spelled out here byte by byte), a fetched torrent with another
 * info hash is refused, and the pull plan (catalog sync --replicas) is the exact argv.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSecretKey, parsePublicKey } from '../../src/core/catalog/minisign.js';
import { publishList } from '../../src/core/catalog/publish.js';
import { fetchTorrent, pullPlan } from '../../src/core/catalog/replicas.js';
import { verifyList } from '../../src/core/catalog/verify.js';
import type { ImageObj } from '../../src/core/metadata.js';
import { stagingFiles } from '../../src/core/stage/files.js';
import { infoHashOf } from '../../src/core/stage/torrent.js';
import { EXIT } from '../../src/exec/errors.js';
import { MiB, U } from './repoFixtures.js';
import { rejectionOf, thrownBy } from './support.js';

const FIX = new URL('../fixtures/minisign-0.11/', import.meta.url).pathname;
const text = (f: string) => readFileSync(path.join(FIX, f), 'utf8');
const PUB = parsePublicKey(text('test.pub'));
const NOW = new Date('2026-11-30T12:00:00Z');
const TRACKER = 'http://10.0.2.2:6969/announce';
const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-torrent-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** 2.5 MiB of a pattern: three pieces, the last one short. */
const RAW = Buffer.from(Array.from({ length: 2.5 * MiB }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();

async function published() {
  writeFileSync(path.join(dir, 'disk.raw'), RAW);
  writeFileSync(path.join(dir, 'disk.raw.gz'), readFileSync(path.join(FIX, 'tiny.raw.gz')));
  const out = path.join(dir, 'list.json');
  const r = await publishList({
    out,
    key: parseSecretKey(text('test.key')),
    id: 'site',
    version: 3,
    expires: '30',
    urlBase: 'http://repo.example/images',
    torrentTracker: TRACKER,
    images: [`disk@2=${path.join(dir, 'disk.raw')}`, `tiny@1.0=${path.join(dir, 'disk.raw.gz')}`],
    now: NOW,
  });
  return { r, out, data: readFileSync(out), sig: readFileSync(`${out}.minisig`, 'utf8') };
}

describe('the torrent in the signed list', () => {
  it('signs the info hash of each raw image torrent, made beside the list; a compressed one has none', async () => {
    const { r, data, sig } = await published();
    const torrent = readFileSync(path.join(dir, 'disk-2.torrent'));
    // The info dictionary as BEP 3 spells it, from the file's 1 MiB pieces hashed here.
    const pieces = Buffer.concat([0, 1, 2].map((k) => sha1(RAW.subarray(k * MiB, (k + 1) * MiB))));
    const info = Buffer.concat([
      Buffer.from(`d6:lengthi${RAW.length}e4:name10:disk-2.img12:piece lengthi${MiB}e6:pieces60:`),
      pieces,
      Buffer.from('7:privatei1ee'),
    ]);
    expect(torrent.includes(info)).toBe(true);
    const hash = createHash('sha1').update(info).digest('hex');
    expect(infoHashOf(torrent, 't')).toBe(hash);
    expect(torrent.toString('latin1')).toContain(`8:announce${TRACKER.length}:${TRACKER}`);
    expect(torrent.toString('latin1')).toContain('8:url-listl35:http://repo.example/images/disk.rawe');
    const list = verifyList({ data, signature: sig, key: PUB, now: NOW, where: 'list.json' });
    expect(list.images[0]!.torrent).toEqual({ infoHash: hash, url: 'http://repo.example/images/disk-2.torrent' });
    expect(list.images[1]!.torrent).toBeUndefined();
    expect(r.list).toEqual(list);
  });

  it('refuses (6) the list once its info hash is changed: the signature covers it', async () => {
    const { data, sig, r } = await published();
    const hash = r.list.images[0]!.torrent!.infoHash;
    const other = `${hash.slice(0, -1)}${hash.endsWith('0') ? '1' : '0'}`;
    const edited = Buffer.from(data.toString('utf8').replace(hash, other));
    expect(edited.equals(data)).toBe(false);
    const e = thrownBy(
      () => verifyList({ data: edited, signature: sig, key: PUB, now: NOW, where: 'list.json' }),
      EXIT.REFUSED,
    );
    expect(e.message).toMatch(/signature/);
  });

  it('refuses (6) a fetched torrent whose info hash is not the signed one, and one that is no torrent', async () => {
    const { r } = await published();
    const image = { ...r.list.images[0]!, torrent: { ...r.list.images[0]!.torrent!, url: 'disk-2.torrent' } };
    const list = path.join(dir, 'list.json');
    expect((await fetchTorrent(list, image)).equals(readFileSync(path.join(dir, 'disk-2.torrent')))).toBe(true);
    const good = readFileSync(path.join(dir, 'disk-2.torrent'));
    const bad = Buffer.from(good);
    bad[bad.indexOf('disk-2.img')] = 0x44; // the name, inside the info dictionary
    writeFileSync(path.join(dir, 'disk-2.torrent'), bad);
    const e = await rejectionOf(fetchTorrent(list, image), EXIT.REFUSED);
    expect(e.message).toBe(
      `the torrent at ${path.join(dir, 'disk-2.torrent')} has info hash ${infoHashOf(bad, 'bad')}, ` +
        `the signed list says ${image.torrent.infoHash}: not used`,
    );
    writeFileSync(path.join(dir, 'disk-2.torrent'), 'd4:infoi1e');
    expect((await rejectionOf(fetchTorrent(list, image), EXIT.REFUSED)).message).toMatch(/is not a torrent/);
    writeFileSync(path.join(dir, 'disk-2.torrent'), good);
  });
});

describe('the pull plan (catalog sync --replicas)', () => {
  it('downloads into the staging file of the LV uuid, extends it to whole extents, stops and cleans up', async () => {
    const { r } = await published();
    const image = r.list.images[0]!;
    const obj = { name: 'disk-2', uuid: U.image, sizeBytes: 4 * MiB, sha256: image.sha256 } as ImageObj;
    const f = stagingFiles(U.image);
    const plan = pullPlan('node2', image, obj, 7002, 0);
    expect(plan.start.argv).toEqual([
      ...['start-stop-daemon', '--start', '--background', '--make-pidfile', '--pidfile', f.pid, '--oknodo'],
      ...['--exec', '/usr/bin/aria2c', '--', `--dir=${f.dir}`, '--listen-port=7002', '--enable-dht=false'],
      ...['--enable-dht6=false', '--bt-enable-lpd=false', '--enable-peer-exchange=false', '--seed-ratio=0.0'],
      ...['--check-integrity=true', '--file-allocation=none', '--bt-tracker-interval=5', '--bt-max-peers=0'],
      ...['--auto-save-interval=1', '--max-overall-upload-limit=0', '--max-overall-download-limit=0'],
      ...['--console-log-level=error', '--summary-interval=0', `--log=${f.log}`, '--log-level=notice'],
      ...[`--index-out=1=${U.image}.img`, f.torrent],
    ]);
    expect(plan.extend?.argv).toEqual(['truncate', '-s', String(4 * MiB), '--', f.image]);
    expect(plan.dryRun.map((p) => `${p.host} ${p.argv.slice(0, 2).join(' ')}`)).toEqual([
      'node2 install -d',
      'node2 install -D',
      'node2 aria2c --show-files=true',
      'node2 start-stop-daemon --start',
      'node2 ',
      'node2 truncate -s',
      'node2 ',
      'node2 start-stop-daemon --stop',
      'node2 rm -f',
    ]);
    expect(plan.dryRun[4]!.title).toBe(`wait until ${f.image} is whole with the signed sha512 ${image.sha512}`);
    // A raw disk of whole extents needs no extension.
    expect(pullPlan('node2', image, { ...obj, sizeBytes: image.size } as ImageObj, 7002, 0).extend).toBeUndefined();
  });
});
