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
import { infoHashOf, withoutWebSeeds } from '../../src/core/stage/torrent.js';
import { parseWrittenBytes, seedCatalog, seedFiles, SEED_DIR } from '../../src/core/catalog/seed.js';
import { swarm } from '../../src/core/catalog/pullHosts.js';
import { EXIT } from '../../src/exec/errors.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import { nodeSession } from '../../src/core/node.js';
import { pullReplicas } from '../../src/core/catalog/replicas.js';
import { ctxOf, expectCache, expectObserve, imageRow, MiB, replicaRow, U, VG, W } from './repoFixtures.js';
import { recorder, rejectionOf, thrownBy, vgsArgv, vgsJson } from './support.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';

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

/** urlBase: where the list says the files are; without one, beside the list (what a node reads here). */
async function published(urlBase: string | null = 'http://repo.example/images') {
  writeFileSync(path.join(dir, 'disk.raw'), RAW);
  writeFileSync(path.join(dir, 'disk.raw.gz'), readFileSync(path.join(FIX, 'tiny.raw.gz')));
  const out = path.join(dir, 'list.json');
  const r = await publishList({
    out,
    key: parseSecretKey(text('test.key')),
    id: 'site',
    version: 3,
    expires: '30',
    urlBase: urlBase ?? undefined,
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
      ...['--chuid', 'nobody:nogroup', '--exec', '/usr/bin/aria2c', '--', `--dir=${f.peerDir}`],
      ...['--listen-port=7002', '--enable-dht=false'],
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

/** A catalogue command's reads: accepted version, the repository (disk-2, imported from the list), approvals. */
async function catalogReads(r: RecordingRunner, write: boolean) {
  const { r: pub } = await published(null);
  const disk = pub.list.images[0]!;
  r.expect(['cat', '--', STATE], { kind: 'read', exitCode: 1, stderr: 'No such file or directory' });
  if (write) r.expect(['install', '-D', '-m', '0644', '/proc/self/fd/0', STATE], W);
  const tags = [`cowstack_catalog:site:disk:2`, `cowstack_sha512:${disk.sha512}`];
  expectObserve(r, [imageRow('disk-2', U.img2, { size: 4 * MiB, sha: disk.sha256, tags })]);
  r.expect(vgsArgv(VG), {
    kind: 'read',
    stdout: vgsJson([{ vg_name: VG, vg_lock_type: 'sanlock', vg_tags: ['cowstack_approved:disk:2'] }]),
  });
  return disk;
}
const STATE = '/var/lib/cowstack/catalog/site.json';
const node = (ctx: ReturnType<typeof ctxOf>) => ({ session: ctx, locked: <T>(fn: () => Promise<T>) => fn() });
const source = () => path.join(dir, 'list.json');
/** A catalogue command's options on r under --dry-run. */
const dryRunOn = (r: RecordingRunner, port: number) => ({
  source: source(),
  key: PUB,
  node: node(nodeSession({ runner: new DryRunRunner(r), vg: VG, dryRun: true })),
  port,
  dryRun: true as const,
});

describe('catalog sync --replicas (recorded)', () => {
  const F = stagingFiles(U.img2);
  /** The node's reads, then the cache VG. */
  const reads = async (r: RecordingRunner, replicas: Array<Record<string, unknown>>, write: boolean) => {
    const disk = await catalogReads(r, write);
    expectCache(r, replicas);
    return disk;
  };

  it('under --dry-run: the exact plan for an approved, present image with a torrent; nothing changed', async () => {
    const r = recorder();
    const disk = await reads(r, [], false);
    const { result, error } = await pullReplicas(dryRunOn(r, 7002));
    expect(error).toBeUndefined();
    expect(result.images.map((i) => [i.lv, i.action])).toEqual([
      ['disk-2', 'would-replicate'],
      ['tiny-1.0', 'not-approved'],
    ]);
    expect(result.plan!.map((p) => p.argv[0] ?? p.title)).toEqual([
      'install',
      'install',
      'aria2c',
      'start-stop-daemon',
      `wait until ${F.image} is whole with the signed sha512 ${disk.sha512}`,
      'truncate',
      `cache replicate disk-2 from ${F.image} (checks its sha256 ${disk.sha256})`,
      'start-stop-daemon',
      'rm',
    ]);
    r.verify();
  });

  it('refuses (6) a torrent of another info hash before any write; leaves a complete replica alone', async () => {
    const r = recorder();
    const disk = await reads(r, [replicaRow({ origin: U.img2, sha: 'ab'.repeat(32) })], true);
    // No replica with the image's sha256: it is pulled, and the torrent is checked first.
    r.expect(['stat', '-c', '%s %b %B', '--', F.image], { kind: 'read', exitCode: 1 });
    const torrent = path.join(dir, 'disk-2.torrent');
    const good = readFileSync(torrent);
    writeFileSync(torrent, Buffer.from(good.toString('latin1').replace('disk-2.img', 'disk-2.imh'), 'latin1'));
    const { result, error } = await pullReplicas({ source: source(), key: PUB, node: node(ctxOf(r)), port: 7002 });
    writeFileSync(torrent, good);
    expect(error?.exitCode).toBe(EXIT.REFUSED);
    expect(result.images[0]).toMatchObject({ lv: 'disk-2', action: 'failed', infoHash: disk.torrent!.infoHash });
    expect(result.images[0]!.error).toMatch(/has info hash [0-9a-f]{40}, the signed list says [0-9a-f]{40}: not used/);
    r.verify();

    const again = recorder();
    await reads(again, [replicaRow({ origin: U.img2, sha: disk.sha256 })], true);
    const done = await pullReplicas({ source: source(), key: PUB, node: node(ctxOf(again)), port: 7002 });
    expect(done.result.images[0]).toMatchObject({ lv: 'disk-2', action: 'none', sha256: disk.sha256 });
    again.verify();
  });
});

describe('the repository seed (catalog seed)', () => {
  const S = seedFiles(U.img2);
  const reads = catalogReads;

  it('drops the web seeds of a torrent and nothing else: the info hash stays', async () => {
    await published();
    const torrent = readFileSync(path.join(dir, 'disk-2.torrent'));
    const bare = withoutWebSeeds(torrent, 't');
    expect(bare.toString('latin1')).not.toContain('url-list');
    expect(torrent.length - bare.length).toBe('8:url-listl35:http://repo.example/images/disk.rawe'.length);
    expect(infoHashOf(bare, 't')).toBe(infoHashOf(torrent, 't'));
    expect(() => withoutWebSeeds(Buffer.from('not a torrent'), 'x')).toThrow(/x is not a torrent/);
  });

  it('--dry-run: reads the LV once, cuts it to the signed size, checks sha512, seeds to one peer', async () => {
    const r = recorder();
    const disk = await reads(r, false);
    const { result, error } = await seedCatalog(dryRunOn(r, 7100));
    expect(error).toBeUndefined();
    expect(result.images.map((i) => [i.lv, i.action])).toEqual([
      ['disk-2', 'would-seed'],
      ['tiny-1.0', 'not-approved'],
    ]);
    const plan = result.plan!;
    expect(plan.map((p) => p.argv.slice(0, 2).join(' ') || p.title)).toEqual([
      'unless disk-2 is seeded already',
      'install -d',
      `dd if=/dev/mapper/${VG}-disk--2`,
      'truncate -s',
      `sha512sum ${S.image}`,
      'install -D',
      'aria2c --show-files=true',
      'start-stop-daemon --start',
    ]);
    expect(plan[1]!.argv).toEqual(['install', '-d', '-m', '0755', '-o', 'nobody', '-g', 'nogroup', S.peerDir]);
    expect(plan[3]!.argv).toEqual(['truncate', '-s', String(disk.size), '--', S.image]);
    expect(plan[4]!.title).toBe(`check its sha512 is the signed ${disk.sha512}`);
    const start = plan[7]!.argv;
    expect(start.slice(0, 11)).toEqual([
      ...['start-stop-daemon', '--start', '--background', '--make-pidfile', '--pidfile', S.pid, '--oknodo'],
      ...['--chuid', 'nobody:nogroup', '--exec', '/usr/bin/aria2c'],
    ]);
    expect(start).toEqual(
      expect.arrayContaining([`--dir=${S.peerDir}`, '--listen-port=7100', '--bt-max-peers=1', S.torrent]),
    );
    // The seed's files are not a pull's on the same node.
    expect(S.image).toBe(`/var/lib/cowstack/staging/seed/peer/${U.img2}.img`);
    expect(S.pid).not.toBe(stagingFiles(U.img2).pid);
    r.verify();
  });

  it('leaves a running seed of the signed torrent alone (none, what it sent so far); --stop ends it', async () => {
    const r = recorder();
    const disk = await reads(r, true);
    const rec = { image: 'disk-2', vg: VG, uuid: U.img2, infoHash: disk.torrent!.infoHash, phase: 'seeding' };
    r.expect(['start-stop-daemon', '--status', '--pidfile', S.pid], { kind: 'read' });
    r.expect(['cat', '--', S.record], { kind: 'read', stdout: JSON.stringify(rec) });
    r.expect(['cat', '--', S.pid], { kind: 'read', stdout: '4242\n' });
    r.expect(['cat', '--', '/proc/4242/io'], { kind: 'read', stdout: 'rchar: 1\nwchar: 7340032\nsyscr: 3\n' });
    const { result, error } = await seedCatalog({ source: source(), key: PUB, node: node(ctxOf(r)), port: 7100 });
    expect(error).toBeUndefined();
    expect(result.images[0]).toMatchObject({ lv: 'disk-2', action: 'none', port: 7100, sentBytes: 7 * MiB });
    r.verify();

    const stop = recorder();
    await reads(stop, true);
    stop.expect(['find', SEED_DIR, '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n'], {
      kind: 'read',
      stdout: `${U.img2}.json\n${U.img2}.torrent\n`,
    });
    stop.expect(['cat', '--', S.record], { kind: 'read', stdout: JSON.stringify(rec) });
    stop.expect(['start-stop-daemon', '--status', '--pidfile', S.pid], { kind: 'read' });
    stop.expect(['cat', '--', S.pid], { kind: 'read', stdout: '4242\n' });
    stop.expect(['cat', '--', '/proc/4242/io'], { kind: 'read', stdout: 'wchar: 100\n' });
    stop.expect(
      ['start-stop-daemon', '--stop', '--pidfile', S.pid, '--remove-pidfile', '--retry', 'TERM/10/KILL/5', '--oknodo'],
      W,
    );
    stop.expect(['rm', '-f', '--', S.image], W);
    stop.expect(['rm', '-f', '--', S.record], W);
    const stopped = await seedCatalog({ source: source(), key: PUB, node: node(ctxOf(stop)), port: 7100, stop: true });
    expect(stopped.result.images.map((i) => [i.lv, i.action, i.sentBytes])).toEqual([
      ['disk-2', 'stopped', 100],
      ['tiny-1.0', 'not-seeding', undefined],
    ]);
    stop.verify();
  });

  it('refuses a bad peer count before reading anything', async () => {
    const r = recorder();
    const e = await rejectionOf(
      seedCatalog({ source: source(), key: PUB, node: node(ctxOf(r)), port: 7100, peers: 0 }),
      EXIT.USAGE,
    );
    expect(e.message).toBe('--seed-peers "0" must be a whole number of 1 or more');
    r.verify();
  });

  it('reads what a process wrote from /proc/PID/io', () => {
    expect(parseWrittenBytes('rchar: 5\nwchar: 123\n')).toBe(123);
    expect(parseWrittenBytes(undefined)).toBeUndefined();
  });
});

describe('the swarm of a pull on many nodes', () => {
  const tick = () => new Promise((r) => setTimeout(r, 0));
  it('the others start once the leader is done (its hook first); clients stop once every node is done', async () => {
    const events: string[] = [];
    const s = swarm(['node1', 'node2', 'node3'], 'node1', async (lv, ok) => {
      events.push(`leader ${lv} ${ok}`);
    });
    await s.ready('disk-2', 'node1'); // the leader does not wait
    const others = ['node2', 'node3'].map((h) => s.ready('disk-2', h).then(() => events.push(`${h} starts`)));
    await tick();
    expect(events).toEqual([]);
    await s.leave('disk-2', 'node1', true);
    await Promise.all(others);
    expect(events).toEqual(['leader disk-2 true', 'node2 starts', 'node3 starts']);
    let settled = false;
    const waited = s.settled('disk-2').then(() => (settled = true));
    await s.leave('disk-2', 'node2', true);
    await s.leave('disk-2', 'node2', false); // a second leave changes nothing
    await tick();
    expect(settled).toBe(false);
    await s.end('node3'); // its pull ended (an error, say): nobody waits for it
    await waited;
    expect(settled).toBe(true);
  });

  it('a leader whose pull ended opens every image, also those it never reached', async () => {
    const s = swarm(['node1', 'node2'], 'node1');
    const waiting = s.ready('tiny-1.0', 'node2');
    await s.end('node1');
    await waiting;
    await s.ready('other-1', 'node2');
    await s.leave('tiny-1.0', 'node2', false);
    await s.settled('tiny-1.0');
  });
});
