/**
 * Peer-to-peer staging (catalog stage): the argument rules, the exact argv of the BitTorrent
 * tools (aria2c, mktorrent, opentracker under start-stop-daemon), the plan as --dry-run shows
 * it, and a whole run recorded per node: the seed's verified copy, torrent and seeding, a
 * downloader's client, its verified file copied into the replica, everything stopped.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { nodeSession } from '../../src/core/node.js';
import { stagingFiles } from '../../src/core/stage/files.js';
import { stagePlan } from '../../src/core/stage/plan.js';
import { sentBytes, stage, type StageOptions } from '../../src/core/stage/run.js';
import { parsePeer, parsePeers, parseTracker, rateBytes } from '../../src/core/stage/spec.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { parseInfoHash, peerArgv } from '../../src/tools/aria2.js';
import { startReq, stopReq } from '../../src/tools/daemon.js';
import { makeTorrentReq } from '../../src/tools/mktorrent.js';
import { trackerArgv } from '../../src/tools/opentracker.js';
import { parseSizes } from '../../src/tools/staging.js';
import {
  CACHE_VG,
  compact,
  daemonStopArgv,
  expectCache,
  expectObserve,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  MiB,
  newReplicaLv,
  REPLICA_SHA,
  replicaRow,
  U,
  VG,
} from './repoFixtures.js';
import { recorder, rejectionOf, thrownBy } from './support.js';

const SHA = REPLICA_SHA;
const HASH = '7b0ed2bb84b21690a271d036507c732797a25e3c';
const F = stagingFiles(U.image);
const RP = `rp_${compact(U.image)}`;
const RP_PATH = `/dev/mapper/${CACHE_VG}-${RP}`;
const IMG = `/dev/mapper/${VG}-image`;
const SIZE = 8 * MiB;
const TRACKER = { url: 'http://10.0.2.2:6969/announce', runOnSeedPort: 6969 };
const NOW = 1795000000;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(NOW * 1000);
});
afterEach(() => vi.useRealTimers());

const peer = (port: number) => peerArgv(F.torrent, { dir: F.peerDir, port, rateBytes: 0, log: F.log });
const ssd = (pid: string, argv: string[]) => [
  'start-stop-daemon',
  '--start',
  '--background',
  '--make-pidfile',
  '--pidfile',
  pid,
  '--oknodo',
  // The client and the tracker talk to the network: never as root.
  ...['--chuid', 'nobody:nogroup'],
  '--exec',
  argv[0]!,
  '--',
  ...argv.slice(1),
];
const ssdStop = daemonStopArgv;
const install = (file: string) => ['install', '-D', '-m', '0644', '/proc/self/fd/0', file];
const stat = ['stat', '-c', '%s %b %B', '--', F.image];
/** /proc/net/dev: eth0 sent 4000 bytes, lo is not counted. */
const NET = [
  'Inter-|   Receive',
  ' face |bytes',
  '  eth0: 1000 5 0 0 0 0 0 0 4000 9 0 0 0 0 0 0',
  '    lo: 7 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0',
  '',
].join('\n');
const NET_AFTER = NET.replace(' 4000 ', ` ${4000 + SIZE} `);

/** The seed, once its verified file is there: torrent, info hash, tracker, seeding client. */
const expectSeeding = (r: RecordingRunner, torrentBase64: string) =>
  r
    .expect(['rm', '-f', '--', F.torrent], { kind: 'write' })
    .expect(['mktorrent', '-p', '-l', '20', '-a', TRACKER.url, '-o', F.torrent, F.image], { kind: 'write' })
    .expect(['aria2c', '--show-files=true', F.torrent], { stdout: `Info Hash: ${HASH}\n` })
    .expect(['base64', '-w0', '--', F.torrent], { stdout: torrentBase64 })
    .expect(install(F.record), { kind: 'write' })
    .expect(install(F.whitelist), { kind: 'write' })
    .expect(journalBegin('image', 'stage'), { kind: 'write' })
    .expect(ssdStop(F.trackerPid), { kind: 'write' })
    .expect(ssd(F.trackerPid, trackerArgv(6969, F.whitelist)), { kind: 'write' })
    .expect(ssd(F.pid, peer(7001)), { kind: 'write' });

/** A downloader: the seed's torrent (same info hash checked), its client, then its whole file's checksum. */
const expectDownload = (r: RecordingRunner, sha: string) =>
  r
    .expect(['install', '-d', '-m', '0755', '-o', 'nobody', '-g', 'nogroup', F.peerDir])
    .expect(install(F.torrent))
    .expect(['aria2c', '--show-files=true', F.torrent], { stdout: `Info Hash: ${HASH}\n` })
    .expect(install(F.record))
    .expect(journalBegin('image', 'stage'))
    .expect(ssd(F.pid, peer(7002)))
    .expect(stat, { stdout: `${SIZE} ${SIZE / 512} 512\n` })
    .expect(['test', '-f', F.control], { exitCode: 1 })
    .expect(['sha256sum', F.image], { stdout: `${sha}  ${F.image}\n` });

describe('catalog stage: arguments', () => {
  it('takes HOST or HOST:PORT, refuses a bad port, an empty list and a host named twice', () => {
    expect(parsePeer('node1')).toEqual({ host: 'node1', port: 6881 });
    expect(parsePeers('node1:7001, node2')).toEqual([
      { host: 'node1', port: 7001 },
      { host: 'node2', port: 6881 },
    ]);
    expect(thrownBy(() => parsePeer('node1:80'), EXIT.USAGE).message).toContain('"80"');
    expect(thrownBy(() => parsePeer('node1:x'), EXIT.USAGE).message).toContain('"x"');
    expect(thrownBy(() => parsePeers(','), EXIT.USAGE).message).toContain('names no host');
    expect(thrownBy(() => parsePeers('a,b,a'), EXIT.USAGE).message).toContain('a twice');
  });

  it('runs opentracker on the seed by default; --tracker alone uses that tracker; refuses other URLs', () => {
    const seed = { host: 'node1', port: 6881 };
    expect(parseTracker(seed)).toEqual({ url: 'http://node1:6969/announce', runOnSeedPort: 6969 });
    expect(parseTracker(seed, 'http://repo:7000/announce')).toEqual({ url: 'http://repo:7000/announce' });
    expect(parseTracker(seed, TRACKER.url, '6969')).toEqual(TRACKER);
    expect(thrownBy(() => parseTracker(seed, 'udp://x:1/announce'), EXIT.USAGE).message).toContain('udp://x');
    expect(rateBytes(undefined)).toBe(0);
    expect(rateBytes(2.5)).toBe(2.5 * MiB);
    expect(thrownBy(() => rateBytes(0), EXIT.USAGE).message).toContain('"0"');
  });
});

describe('catalog stage: tools', () => {
  it('spells aria2c, mktorrent, opentracker and start-stop-daemon exactly', () => {
    expect(peerArgv(F.torrent, { dir: F.peerDir, port: 7001, rateBytes: 5 * MiB, log: F.log }).join(' ')).toBe(
      `/usr/bin/aria2c --dir=${F.peerDir} --listen-port=7001 --enable-dht=false --enable-dht6=false ` +
        '--bt-enable-lpd=false --enable-peer-exchange=false --seed-ratio=0.0 --check-integrity=true ' +
        '--file-allocation=none --bt-tracker-interval=5 --bt-max-peers=0 --auto-save-interval=1 ' +
        `--max-overall-upload-limit=${5 * MiB} --max-overall-download-limit=${5 * MiB} --console-log-level=error ` +
        `--summary-interval=0 --log=${F.log} --log-level=notice ${F.torrent}`,
    );
    expect(makeTorrentReq(F.image, F.torrent, TRACKER.url).argv).toEqual([
      'mktorrent',
      '-p',
      '-l',
      '20',
      '-a',
      TRACKER.url,
      '-o',
      F.torrent,
      F.image,
    ]);
    expect(trackerArgv(6969, F.whitelist)).toEqual(['/usr/bin/opentracker', '-p', '6969', '-w', F.whitelist]);
    expect(startReq(F.pid, ['/usr/bin/x', '-a'], 't', 'nobody:nogroup')).toMatchObject({
      argv: ssd(F.pid, ['/usr/bin/x', '-a']),
      root: true,
    });
    expect(stopReq(F.pid, 't').argv).toEqual(ssdStop(F.pid));
    // Without a user it runs as the caller (root): nothing of staging starts that way.
    expect(startReq(F.pid, ['/usr/bin/x'], 't').argv).not.toContain('--chuid');
    // The peer's files sit in its own directory, the root-owned ones beside it.
    expect([F.image, F.control, F.log].every((p) => p.startsWith(`${F.peerDir}/`))).toBe(true);
    expect([F.torrent, F.pid, F.record, F.whitelist].every((p) => !p.startsWith(`${F.peerDir}/`))).toBe(true);
  });

  it('reads the info hash, a sparse file’s sizes and the bytes a node sent', () => {
    expect(parseInfoHash(`Name: x\nInfo Hash: ${HASH.toUpperCase()}\nPiece Length: 1.0MiB\n`)).toBe(HASH);
    expect(parseInfoHash('Exception: not a torrent')).toBeUndefined();
    expect(parseSizes('8388608 4096 512\n')).toEqual({ size: 8388608, allocated: 2 * MiB });
    expect(parseSizes('')).toBeUndefined();
    expect(sentBytes(NET)).toBe(4000);
    expect(sentBytes(undefined)).toBeUndefined();
  });

  it('plans no download on the seed, stops every client and the tracker, removes the staged files', () => {
    const image = { name: 'image', vg: VG, uuid: U.image, sha256: SHA, sizeBytes: SIZE, device: IMG };
    const seed = { host: 'node1', port: 7001 };
    const plan = stagePlan(image, seed, [seed, { host: 'node2', port: 7002 }], TRACKER, 0);
    expect(plan.downloaders.map((d) => d.host)).toEqual(['node2']);
    expect(plan.replicas).toEqual(['node1', 'node2']);
    expect(plan.stop.map((s) => [s.host, s.req.argv[3]])).toEqual([
      ['node1', F.pid],
      ['node2', F.pid],
      ['node1', F.trackerPid],
    ]);
    expect(plan.cleanup.map((c) => [c.host, c.req.argv])).toEqual([
      ['node1', ['rm', '-f', '--', F.image]],
      ['node2', ['rm', '-f', '--', F.image]],
    ]);
  });
});

describe('catalog stage: runs', () => {
  const sealed = (o: { active?: boolean; sha?: string | null } = {}) =>
    imageRow('image', U.image, {
      size: SIZE,
      sha: o.sha === null ? undefined : (o.sha ?? SHA),
      active: o.active ? 'shared' : undefined,
      minor: 3,
    });
  const optsFor = (runners: Record<string, RecordingRunner>, extra: Partial<StageOptions> = {}): StageOptions => ({
    image: 'image',
    seed: { host: 'node1', port: 7001 },
    hosts: [{ host: 'node2', port: 7002 }],
    tracker: TRACKER,
    pollMs: 1,
    node: (host) => ({
      session: nodeSession({ runner: runners[host]!, vg: VG, cacheVg: CACHE_VG }),
      locked: (fn) => fn(),
    }),
    ...extra,
  });

  it('--dry-run: the exact plan per node, after reading only the image and the caches', async () => {
    const n1 = recorder('node1');
    const n2 = recorder('node2');
    expectObserve(n1, [sealed()]);
    expectCache(n2, []);
    const r = await stage(optsFor({ node1: n1, node2: n2 }, { dryRun: true }));
    n1.verify();
    n2.verify();
    expect(r.plan!.filter((p) => p.argv.length).map((p) => [p.host, ...p.argv.slice(0, 2)])).toEqual([
      ['node1', 'install', '-d'],
      ['node1', 'dd', `if=${IMG}`],
      ['node1', 'sha256sum', F.image],
      ['node1', 'rm', '-f'],
      ['node1', 'mktorrent', '-p'],
      ['node1', 'install', '-D'],
      ['node1', 'start-stop-daemon', '--stop'],
      ['node1', 'start-stop-daemon', '--start'],
      ['node1', 'start-stop-daemon', '--start'],
      ['node2', 'install', '-d'],
      ['node2', 'install', '-D'],
      ['node2', 'start-stop-daemon', '--start'],
      ['node1', 'start-stop-daemon', '--stop'],
      ['node2', 'start-stop-daemon', '--stop'],
      ['node1', 'start-stop-daemon', '--stop'],
      ['node1', 'rm', '-f'],
      ['node2', 'rm', '-f'],
    ]);
  });

  it('does nothing on nodes whose replica of this LV and content is complete', async () => {
    const n1 = recorder('node1');
    const n2 = recorder('node2');
    expectObserve(n1, [sealed()]);
    expectCache(n2, [replicaRow({ size: SIZE })]);
    const r = await stage(optsFor({ node1: n1, node2: n2 }));
    n1.verify();
    n2.verify();
    expect(r.hosts).toEqual([{ host: 'node2', action: 'none', sha256: SHA }]);
    expect(r.infoHash).toBeUndefined();
  });

  it('refuses an image without a recorded sha256: nothing could be verified', async () => {
    const n1 = recorder('node1');
    expectObserve(n1, [sealed({ sha: null })]);
    const e = await rejectionOf(stage(optsFor({ node1: n1 })), EXIT.REFUSED);
    expect(e.message).toContain('no recorded sha256');
    n1.verify();
  });

  const stagesRun =
    'seeds a verified copy, downloads on node2, checks it, fills the replica from it, then stops and cleans up';
  it(stagesRun, async () => {
    const n1 = recorder('node1');
    const n2 = recorder('node2');
    const torrent = Buffer.from('d8:announce29:http://10.0.2.2:6969/announce4:infod4:name1:xee');
    // node1, the seed: reads the image LV once into its staging file, checked before anything else.
    expectObserve(n1, [sealed()]);
    expectCache(n2, []);
    n1.expect(['cat', '--', '/proc/net/dev'], { stdout: NET }).expect(stat, { exitCode: 1 });
    expectObserve(n1, [sealed()])
      .expect(['lvchange', '-asy', `${VG}/image`], { kind: 'write' })
      .expect(['install', '-d', '-m', '0755', '-o', 'nobody', '-g', 'nogroup', F.peerDir], { kind: 'write' })
      .expect(['dd', `if=${IMG}`, `of=${F.image}`, 'bs=4M', 'iflag=direct', 'conv=fsync', 'status=none'], {
        kind: 'write',
      });
    expectObserve(n1, [sealed({ active: true })], [lvDev('image', U.image, 3, 0, true)])
      .expect(['lvchange', '-an', `${VG}/image`], { kind: 'write' })
      .expect(['sha256sum', F.image], { stdout: `${SHA}  ${F.image}\n` });
    expectSeeding(n1, torrent.toString('base64'));
    // node2: the seed's torrent (same info hash), its client; then its file, checked, into the replica.
    expectDownload(n2, SHA).expect(install(F.record));
    expectObserve(n2, [sealed()]);
    expectCache(n2, []);
    n2.expect(newReplicaLv(SIZE), { kind: 'write' })
      .expect(['lvchange', '-aey', `${CACHE_VG}/${RP}`])
      .expect([
        ...['dd', `if=${F.image}`, `of=${RP_PATH}`, 'bs=4M', 'skip=0', 'seek=0', 'count=2'],
        ...['iflag=direct', 'oflag=direct', 'conv=fsync,notrunc', 'status=none'],
      ])
      .expect(['lvchange', '--deltag', 'cowstack_copied:0', '--addtag', `cowstack_copied:${SIZE}`, `${CACHE_VG}/${RP}`])
      .expect(['sha256sum', RP_PATH], { stdout: `${SHA}  ${RP_PATH}\n` })
      .expect([
        ...['lvchange', '--permission', 'r', '--deltag', 'cowstack_cstate:copying'],
        ...['--addtag', 'cowstack_cstate:complete', '--addtag', `cowstack_used:${NOW}`, `${CACHE_VG}/${RP}`],
      ])
      .expect(install(F.record))
      .expect(ssdStop(F.pid))
      .expect(journalEnd('image', 'stage'))
      .expect(['rm', '-f', '--', F.image]);
    // Every node's journal entry of the run ends once its client is stopped.
    n1.expect(ssdStop(F.pid))
      .expect(ssdStop(F.trackerPid))
      .expect(journalEnd('image', 'stage'))
      .expect(['cat', '--', '/proc/net/dev'], { stdout: NET_AFTER })
      .expect(['rm', '-f', '--', F.image]);
    const r = await stage(optsFor({ node1: n1, node2: n2 }));
    n1.verify();
    n2.verify();
    expect(r).toMatchObject({ infoHash: HASH, seedCopied: true, seedSentBytes: SIZE, sha256: SHA, sizeBytes: SIZE });
    expect(r.hosts).toEqual([expect.objectContaining({ host: 'node2', action: 'replicated', sha256: SHA })]);
  });

  it('a downloaded file that does not verify is never copied into a replica', async () => {
    const n1 = recorder('node1');
    const n2 = recorder('node2');
    expectObserve(n1, [sealed()]);
    expectCache(n2, []);
    // A verified seed copy is already there: the LUN is not read again.
    n1.expect(['cat', '--', '/proc/net/dev'], { stdout: NET })
      .expect(stat, { stdout: `${SIZE} ${SIZE / 512} 512\n` })
      .expect(['test', '-f', F.control], { exitCode: 1 })
      .expect(['sha256sum', F.image], { stdout: `${SHA}  ${F.image}\n` });
    expectSeeding(n1, 'ZA==')
      .expect(ssdStop(F.pid))
      .expect(ssdStop(F.trackerPid))
      .expect(journalEnd('image', 'stage'))
      .expect(install(F.record));
    expectDownload(n2, 'ee'.repeat(32))
      .expect(['test', '-f', F.control], { exitCode: 1 })
      .expect(stat, { stdout: `${SIZE} ${SIZE / 512} 512\n` })
      .expect(ssdStop(F.pid))
      .expect(journalEnd('image', 'stage'))
      .expect(install(F.record));
    const e = await rejectionOf(stage(optsFor({ node1: n1, node2: n2 })), EXIT.FAILED);
    expect(e.message).toContain(`does not have the image's sha256 ${SHA}`);
    // Both records say so (cache list shows them): the last write of each node is the failed record.
    for (const r of [n1, n2]) expect(JSON.parse(String(r.calls.at(-1)!.input)).phase).toBe('failed');
    n1.verify();
    n2.verify();
  });
});
