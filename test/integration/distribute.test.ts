/**
 * Peer-to-peer pre-staging of replicas (issue 14) on a three-node cluster: a signed list
 * with two good images and a tampered one is synced (the tampered one refused, nothing of it
 * sealed or replicated), one image is staged to node1..3 by BitTorrent (`catalog stage`:
 * aria2 peers, opentracker on the seed), every replica is complete and its device's sha256,
 * computed on its node, is the one computed here on the host; the LUN is read about once in
 * total (all nodes' iSCSI disk reads, sanlock's lease reads excluded); a clone mapped on node3
 * stands on node3's replica (the image LV is not even active there) and reads the image.
 * Pull mode: the list also signs the info hash of the raw image's torrent; one front-end command
 * (`catalog sync --replicas --hosts node1,node2,node3 --seed node1`) starts the repository
 * side's BitTorrent seed on node1 (the image LV read once, its sha512 checked, aria2c as nobody)
 * and runs every node's pull without the web seed (node1 first; once its copy verified the seed
 * stops and node2 and node3 get theirs from the nodes): the http server sends nothing and the
 * seed at most 1.5x the image (its process's own write count); each replica's sha256 and
 * sha512, read on its node, are the ones computed here; a torrent whose info hash is not the
 * signed one is refused; `catalog seed` alone is idempotent and `--stop` ends it.
 *
 * Networking: qemu user networking puts every guest behind 10.0.2.2. Each node's client
 * listens on its own port P, forwarded 127.0.0.1:P -> guest:P, and announces P to a tracker
 * inside node1 reached by all (itself too) at 10.0.2.2:T; the tracker sees every peer as
 * 10.0.2.2 and hands out 10.0.2.2:P, which every guest reaches. In pull mode the tracker runs
 * inside node2 (at node2's tracker port) and node1's repository seed listens on node1's tracker
 * port, free by then.
 */
import { promises as fsp } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Testbed, TestbedNode } from '../testbed/index.js';
import { attachMine, repoDevice } from './testbeds.js';
import { clusterCli, cowstack, ROOT } from './cli.js';
import { REPO_VG } from './cluster.js';
import { serveDir } from './serveDir.js';
import { createHash } from 'node:crypto';
import { MiB, pattern, sha256 } from './data.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/minisign-0.11');
const KEY = path.join(FIXTURES, 'test.key');
const PUB = path.join(FIXTURES, 'test.pub');
const EXIT_REFUSED = 6;
const EXIT_NOT_FOUND = 7;
const run = Date.now().toString(36).slice(-5);
const LIST_ID = `p2p-${run}`;
const BIG = `p2p${run}`;
const SMALL = `p2s${run}`;
const BAD = `p2b${run}`;
const RAW = pattern(32 * MiB, 1401);
const CLONE = `p2c${run}`;
// Pulled by every node: 6 MiB, so its sealed image (whole 4 MiB extents) is padded with zeros.
const PULLED = pattern(6 * MiB, 1402);
const TRACKER_PID = '/run/cowstack-test-tracker.pid';
const CACHE_VG = 'cowstack_cache';

let tb: Testbed;
let nodes: TestbedNode[];
let dir: string;
let server: Server;
let base: string;
let served: Map<string, number>;
const lun: Record<string, { sdx: string; lockDm: string }> = {};
const cacheVgMadeOn: TestbedNode[] = [];

const ok = async (node: string, args: string[]) => {
  const r = await clusterCli(tb, node, args);
  expect(r.exitCode, `${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.json.result;
};

const sh = async (node: string, script: string): Promise<string> => {
  const r = await tb.sh(node, script, { timeoutMs: 300_000 });
  expect(r.exitCode, `${node}: ${script}\n${r.stderr}`).toBe(0);
  return r.stdout;
};

/** LUN bytes read by a node since boot, sanlock's lease LV excluded (its reads count on both). */
async function lunBytes(node: string): Promise<number> {
  const { sdx, lockDm } = lun[node]!;
  const [disk, lock] = (await sh(node, `cat /sys/block/${sdx}/stat /sys/block/${lockDm}/stat`))
    .trim()
    .split('\n')
    .map((l) => Number(l.trim().split(/\s+/)[2]));
  return (disk! - lock!) * 512;
}

beforeAll(async () => {
  tb = await attachMine(1_100_000, 3);
  nodes = tb.nodes;
  expect(nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node3']);
  for (const n of nodes)
    expect(n.peerPort && n.trackerPort, `${n.name} has no peer/tracker port forwards`).toBeTruthy();
  dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-p2p-'));
  await fsp.writeFile(path.join(dir, 'big.raw.gz'), gzipSync(RAW, { level: 1 }));
  await fsp.writeFile(path.join(dir, 'small.raw'), PULLED);
  await fsp.writeFile(path.join(dir, 'bad.raw'), pattern(MiB, 1403));
  const images = [
    `${BIG}@1=${path.join(dir, 'big.raw.gz')}`,
    `${SMALL}@1=${path.join(dir, 'small.raw')}`,
    `${BAD}@1=${path.join(dir, 'bad.raw')}`,
  ];
  ({ server, base, sent: served } = await serveDir(dir));
  // The guests reach the host's loopback as 10.0.2.2; pull mode's tracker runs inside node2.
  const tracker = `http://10.0.2.2:${nodes[1]!.trackerPort}/announce`;
  const pub = await cowstack(tb, [
    ...['--json', 'catalog', 'publish', path.join(dir, 'list.json'), ...images],
    ...['--key', KEY, '--id', LIST_ID, '--list-version', '1'],
    ...['--torrent-tracker', tracker, '--web-seed', base.replace('127.0.0.1', '10.0.2.2')],
  ]);
  expect(pub.exitCode, pub.stdout + pub.stderr).toBe(0);
  // Raw images get a torrent (its info hash signed), the gzip-compressed one none.
  const torrents = pub.json.result.images.map((i: { torrent?: { infoHash: string } }) => i.torrent?.infoHash);
  expect(torrents[0]).toBeUndefined();
  expect(torrents[1]).toMatch(/^[0-9a-f]{40}$/);
  // Flipped after signing: the list still says what the endorser published.
  const bad = await fsp.readFile(path.join(dir, 'bad.raw'));
  const at = MiB / 2 + 3; // one bit of one byte
  bad[at] = bad[at]! ^ 0x01;
  await fsp.writeFile(path.join(dir, 'bad.raw'), bad);
  for (const n of nodes) {
    const [sdx, lockDm] = (await sh(n.name, `readlink -f ${repoDevice(tb)} /dev/mapper/${REPO_VG}-lvmlock`))
      .trim()
      .split('\n')
      .map((p) => path.basename(p));
    expect(sdx).toMatch(/^sd[a-z]+$/);
    expect(lockDm).toMatch(/^dm-\d+$/);
    lun[n.name] = { sdx: sdx!, lockDm: lockDm! };
    // Every node's own disk holds its cache VG (created here unless an earlier file did).
    const list = await ok(n.name, ['cache', 'list']);
    if (!list.exists) {
      await ok(n.name, ['cache', 'init', n.localDisk]);
      cacheVgMadeOn.push(n);
    }
  }
});

// What this file made goes, so a later file on the cluster sees none of it.
afterAll(async () => {
  server?.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
  if (!tb) return;
  await tb.sh('node2', `start-stop-daemon --stop --pidfile ${TRACKER_PID} --remove-pidfile --oknodo`);
  // A repository seed left by a failed pull test (catalog seed --stop is what a site runs).
  await tb.sh(
    'node1',
    'for p in /var/lib/cowstack/staging/seed/*.pid; do [ -e "$p" ] && start-stop-daemon --stop --pidfile "$p" ' +
      '--remove-pidfile --retry TERM/10/KILL/5 --oknodo; done; true',
  );
  await clusterCli(tb, 'node3', ['clone', 'discard', CLONE]);
  for (const n of nodes ?? []) {
    await clusterCli(tb, n.name, ['cache', 'drop', `${BIG}-1`]);
    await clusterCli(tb, n.name, ['cache', 'drop', `${SMALL}-1`]);
    await tb.sh(n.name, 'rm -rf /var/lib/cowstack/staging');
  }
  // A later file on this cluster may start from "node2 has no cache VG" (cache.test does).
  for (const n of cacheVgMadeOn) {
    const gone = await tb.ssh(n.name, [
      'sh',
      '-c',
      'vgremove -y "$1" && pvremove -y "$2"',
      'sh',
      CACHE_VG,
      n.localDisk,
    ]);
    expect(gone.exitCode, `${n.name}: removing the cache VG this file made\n${gone.stderr}`).toBe(0);
  }
  const vgTags = [BIG, SMALL, BAD].map((x) => `--deltag cowstack_approved:${x}:1`).join(' ');
  await tb.sh(
    'node1',
    `vgchange ${vgTags} ${REPO_VG}; lvremove -y ${REPO_VG}/${BIG}-1 ${REPO_VG}/${SMALL}-1 2>/dev/null; ` +
      `lvremove -y ${REPO_VG}/${BAD}-1 2>/dev/null; ` +
      `rm -f /var/lib/cowstack/catalog/${LIST_ID}.json`,
  );
  // node3 serves only this file (first in the suite's order): it leaves the lockspace and
  // powers off, so the files after it on this cluster share the machine with two guests, not
  // three (under TCG an idle guest still renews its lease and costs the others CPU).
  await tb.ssh('node3', ['vgchange', '--lockstop', REPO_VG]);
  await tb.powerOff('node3');
}, 300_000);

describe.sequential('peer-to-peer staging (catalog stage)', () => {
  const expected = sha256(RAW); // 32 MiB: a whole number of extents, no padding
  let uuid: string;

  it('syncs both good images of the signed list; the tampered one is refused and leaves nothing', async () => {
    // The list is accepted first (nothing approved, nothing imported), then the site approves.
    await ok('node1', ['catalog', 'sync', `${base}/list.json`, '--pubkey', PUB]);
    await ok('node1', ['catalog', 'approve', `${BIG}@1`, `${SMALL}@1`, `${BAD}@1`]);
    const sync = await clusterCli(tb, 'node1', ['catalog', 'sync', `${base}/list.json`, '--pubkey', PUB]);
    expect(sync.exitCode, sync.stdout + sync.stderr).toBe(EXIT_REFUSED);
    const byLv = Object.fromEntries(sync.json.result.images.map((i: { lv: string }) => [i.lv, i]));
    expect(byLv[`${BIG}-1`]).toMatchObject({ action: 'imported', sha256: expected });
    expect(byLv[`${SMALL}-1`]).toMatchObject({ action: 'imported' });
    expect(byLv[`${BAD}-1`]).toMatchObject({ action: 'failed' });
    expect(byLv[`${BAD}-1`].error).toMatch(/sha512/);
    const lvs = await sh('node1', `lvs --noheadings -o lv_name,lv_uuid,lv_tags ${REPO_VG}`);
    expect(lvs, 'nothing of the tampered image is sealed').not.toContain(`${BAD}-1`);
    uuid = new RegExp(`${BIG}-1\\s+(\\S+)`).exec(lvs)![1]!;
    // Nor can it be staged: there is no such image.
    const refused = await cowstack(tb, [
      '--json',
      'catalog',
      'stage',
      `${BAD}-1`,
      '--vg',
      REPO_VG,
      '--hosts',
      'node1,node2',
    ]);
    expect(refused.exitCode, refused.stdout).not.toBe(0);
    expect(refused.exitCode).toBe(EXIT_NOT_FOUND);
    expect(refused.json.message).toBe(`no image or clone named ${BAD}-1 in ${REPO_VG}`);
  });

  it('stages an image to node1..3 by BitTorrent: replicas verified on each node, the LUN read about once', async () => {
    const [n1] = nodes;
    const hosts = nodes.map((n) => `${n.name}:${n.peerPort}`).join(',');
    const args = [
      ...['--json', 'catalog', 'stage', `${BIG}-1`, '--vg', REPO_VG, '--hosts', hosts],
      ...['--seed', `${n1!.name}:${n1!.peerPort}`, '--tracker', `http://10.0.2.2:${n1!.trackerPort}/announce`],
      ...['--tracker-port', String(n1!.trackerPort)],
    ];
    // The exact plan first, and nothing done by it.
    const dry = await cowstack(tb, ['--dry-run', ...args]);
    expect(dry.exitCode, dry.stdout + dry.stderr).toBe(0);
    const planned = dry.json.result.plan.map((p: { host: string; argv: string[] }) => `${p.host} ${p.argv[0]}`);
    expect(planned).toEqual(
      expect.arrayContaining(['node1 dd', 'node1 mktorrent', 'node2 start-stop-daemon', 'node3 start-stop-daemon']),
    );
    expect(await sh('node2', 'ls /var/lib/cowstack/staging 2>/dev/null | wc -l')).toBe('0\n');

    const before = await Promise.all(nodes.map((n) => lunBytes(n.name)));
    const t0 = Date.now();
    const r = await cowstack(tb, args, { timeoutMs: 900_000 });
    const seconds = (Date.now() - t0) / 1000;
    const after = await Promise.all(nodes.map((n) => lunBytes(n.name)));
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const res = r.json.result;
    expect(res.infoHash).toMatch(/^[0-9a-f]{40}$/);
    expect(res.seedCopied).toBe(true);
    expect(res.hosts.map((h: { host: string; action: string }) => [h.host, h.action])).toEqual([
      ['node1', 'replicated'],
      ['node2', 'replicated'],
      ['node3', 'replicated'],
    ]);
    const read = after.map((a, i) => a - before[i]!);
    const total = read.reduce((a, b) => a + b, 0);
    process.stderr.write(
      `[distribute] ${RAW.length / MiB} MiB to 3 nodes in ${seconds.toFixed(1)} s; LUN bytes read per node ` +
        `${read.map((b) => (b / MiB).toFixed(2)).join(' / ')} MiB (total ${(total / MiB).toFixed(2)}); ` +
        `seed sent ${(res.seedSentBytes / MiB).toFixed(2)} MiB; complete at ` +
        `${res.hosts.map((h: { completeAt: number }) => h.completeAt.toFixed(1)).join(' / ')} s\n`,
    );
    expect(total).toBeLessThanOrEqual(1.5 * RAW.length);
    // What node2 and node3 read from the LUN is LVM metadata (a few MiB, whatever the image's size), no image copy.
    for (const i of [1, 2])
      expect(read[i]!, `${nodes[i]!.name} read no copy of the image`).toBeLessThan(RAW.length / 4);

    // Each replica, read on its node, is the content computed here.
    const rp = `rp_${uuid.replace(/-/g, '')}`;
    for (const n of nodes) {
      const list = await ok(n.name, ['cache', 'list']);
      expect(list.caches).toContainEqual(
        expect.objectContaining({ kind: 'replica', name: rp, state: 'complete', copiedBytes: RAW.length }),
      );
      const sum = await sh(n.name, `dd if=/dev/mapper/cowstack_cache-${rp} bs=4M iflag=direct status=none | sha256sum`);
      expect(sum.split(/\s+/)[0], `${n.name}'s replica`).toBe(expected);
      // The staged image file is gone, its torrent and record stay.
      expect(await sh(n.name, `ls /var/lib/cowstack/staging`)).not.toMatch(/\.img\b/);
    }
    const again = await cowstack(tb, args);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    expect(again.json.result.hosts.map((h: { action: string }) => h.action)).toEqual(['none', 'none', 'none']);
  }, 900_000);

  it('a clone mapped on node3 stands on its replica (the image LV is not active there), reads the image', async () => {
    await ok('node1', ['clone', 'create', CLONE, '--from', `${BIG}-1`]);
    const map = await ok('node3', ['clone', 'map', CLONE]);
    const rp = `rp_${uuid.replace(/-/g, '')}`;
    expect(map.replica).toBe(rp);
    const [maj, min] = (await sh('node3', `dmsetup info -c --noheadings -o major,minor cowstack_cache-${rp}`))
      .trim()
      .split(':');
    const tables = await sh('node3', 'dmsetup table');
    expect(tables).toContain(`${maj}:${min}`);
    expect(await sh('node3', `dmsetup ls | grep -c "^${REPO_VG}-${BIG}--1\\s" || true`)).toBe('0\n');
    const sum = await sh('node3', `dd if=${map.device} bs=4M iflag=direct status=none | sha256sum`);
    expect(sum.split(/\s+/)[0]).toBe(expected);
    await ok('node3', ['clone', 'unmap', CLONE]);
    // catalog list on node3 says which catalogue images it holds a verified replica of.
    const listed = (await ok('node3', ['catalog', 'list'])).images as Array<{ lv: string; replicated: boolean }>;
    expect(listed.find((i) => i.lv === `${BIG}-1`)?.replicated).toBe(true);
    expect(listed.find((i) => i.lv === `${SMALL}-1`)?.replicated).toBe(false);
  });
});

describe.sequential('pull mode (catalog sync --replicas)', () => {
  const listUrl = () => `${base}/list.json`;
  const pull = (node: TestbedNode, dryRun: string[] = []) =>
    cowstack(tb, [
      ...[...dryRun, '--host', node.name, '--json', 'catalog', 'sync', listUrl(), '--pubkey', PUB, '--replicas'],
      ...['--peer-port', String(node.peerPort), '--vg', REPO_VG],
    ]);
  const padded = Buffer.concat([PULLED, Buffer.alloc(8 * MiB - PULLED.length)]);
  // node1's tracker port: the stage test's tracker has stopped; pull mode's runs inside node2.
  const seedAt = () => `node1:${nodes[0]!.trackerPort}`;
  const sha512 = createHash('sha512').update(PULLED).digest('hex');
  let rp: string;

  beforeAll(async () => {
    const uuid = (await sh('node1', `lvs --noheadings -o lv_uuid ${REPO_VG}/${SMALL}-1`)).trim();
    rp = `rp_${uuid.replace(/-/g, '')}`;
    // The repository side's tracker (Debian's opentracker tracks only whitelisted info hashes).
    const list = JSON.parse(await fsp.readFile(path.join(dir, 'list.json'), 'utf8'));
    const hash = list.images.find((i: { name: string }) => i.name === SMALL).torrent.infoHash;
    await sh(
      'node2',
      `echo ${hash} > /run/cowstack-test-tracker.wl && start-stop-daemon --start --background --make-pidfile ` +
        `--pidfile ${TRACKER_PID} --oknodo --exec /usr/bin/opentracker -- -p ${nodes[1]!.trackerPort} ` +
        '-w /run/cowstack-test-tracker.wl',
    );
  });

  it('refuses a torrent whose info hash is not the signed one; nothing is staged or replicated', async () => {
    const file = path.join(dir, `${SMALL}-1.torrent`);
    const good = await fsp.readFile(file);
    const bad = Buffer.from(good);
    bad[bad.indexOf('.img')] = 'x'.charCodeAt(0); // the file's name, inside the info dictionary
    await fsp.writeFile(file, bad);
    try {
      const r = await pull(nodes[1]!);
      expect(r.exitCode, r.stdout + r.stderr).toBe(EXIT_REFUSED);
      const entry = r.json.result.images.find((i: { lv: string }) => i.lv === `${SMALL}-1`);
      expect(entry.action).toBe('failed');
      expect(entry.error).toMatch(/has info hash [0-9a-f]{40}, the signed list says [0-9a-f]{40}: not used/);
    } finally {
      await fsp.writeFile(file, good);
    }
    const uuid = rp.slice(3);
    const left = await sh('node2', `ls /var/lib/cowstack/staging 2>/dev/null | tr -d - | grep ${uuid} || true`);
    expect(left, 'no torrent or image file of it on node2').not.toMatch(/\.(torrent|img)$/m);
    expect((await ok('node2', ['cache', 'list'])).caches).not.toContainEqual(expect.objectContaining({ name: rp }));
  });

  it('one command pulls on every node at once from the repository seed: web seed 0, seed at most 1.5x', async () => {
    const dry = await pull(nodes[0]!, ['--dry-run']);
    expect(dry.exitCode, dry.stdout + dry.stderr).toBe(0);
    const plan = dry.json.result.plan as Array<{ argv: string[] }>;
    expect(plan.map((p) => p.argv[0])).toEqual(
      expect.arrayContaining(['install', 'aria2c', 'start-stop-daemon', 'truncate', 'rm']),
    );
    expect(plan.find((p) => p.argv.includes('--start'))?.argv).toContain(`--listen-port=${nodes[0]!.peerPort}`);

    const t0 = Date.now();
    const fromRepo = served.get('small.raw') ?? 0; // sync read it once to import it
    const r = await cowstack(
      tb,
      [
        ...['--json', 'catalog', 'sync', listUrl(), '--pubkey', PUB, '--replicas', '--vg', REPO_VG],
        ...['--hosts', nodes.map((n) => `${n.name}:${n.peerPort}`).join(','), '--seed', seedAt()],
      ],
      { timeoutMs: 600_000 },
    );
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const res = r.json.result;
    // What the repository side sent: its http server (the web seed), and its BitTorrent seed.
    const web = (served.get('small.raw') ?? 0) - fromRepo;
    const seeded = res.seed.images.find((x: { lv: string }) => x.lv === `${SMALL}-1`);
    expect(seeded).toMatchObject({ action: 'seeding', readLun: true, port: nodes[0]!.trackerPort });
    const sent = res.seedStopped.images.find((x: { lv: string }) => x.lv === `${SMALL}-1`);
    expect(sent.action).toBe('stopped');
    process.stderr.write(
      `[distribute] pull: ${PULLED.length / MiB} MiB on 3 nodes in ${(Date.now() - t0) / 1000} s (one command); ` +
        `the seed on node1 sent ${(sent.sentBytes / MiB).toFixed(2)} MiB, the web seed ${(web / MiB).toFixed(2)} ` +
        `MiB; nodes done at ${res.hosts.map((h: { seconds: number }) => h.seconds.toFixed(1)).join(' / ')} s\n`,
    );
    // aria2's own count, as it logged it when it stopped: the same bytes less its log and announces.
    const own = await sh('node1', 'grep -h "share ratio" /var/lib/cowstack/staging/seed/peer/*.log || true');
    process.stderr.write(`[distribute] pull: the seed's aria2c said: ${own.trim().split('] ').pop()}\n`);
    expect(web, 'the http server sent none of it').toBe(0);
    // Every byte of the first copy came from the seed (nobody else had any), at most half a copy more.
    expect(sent.sentBytes).toBeGreaterThanOrEqual(PULLED.length);
    expect(sent.sentBytes).toBeLessThanOrEqual(1.5 * PULLED.length);
    expect(res.hosts.map((h: { host: string }) => h.host)).toEqual(nodes.map((n) => n.name));
    for (const h of res.hosts) {
      expect(h.error, `${h.host}: ${h.error?.message}`).toBeUndefined();
      const byLv = Object.fromEntries(h.result.images.map((x: { lv: string }) => [x.lv, x]));
      expect(byLv[`${SMALL}-1`]).toMatchObject({ action: 'replicated', sha256: sha256(padded) });
      expect(byLv[`${BIG}-1`].action).toBe('no-torrent');
      expect(byLv[`${BAD}-1`].action).toBe('not-present');
    }
    for (const n of nodes) {
      const dev = `/dev/mapper/cowstack_cache-${rp}`;
      const [s256, s512] = (
        await sh(
          n.name,
          `dd if=${dev} bs=4M iflag=direct status=none | sha256sum; head -c ${PULLED.length} ${dev} | sha512sum`,
        )
      )
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/)[0]);
      expect(s256, `${n.name}'s replica`).toBe(sha256(padded));
      expect(s512, `${n.name}'s replica`).toBe(sha512);
      const list = await ok(n.name, ['cache', 'list']);
      expect(list.caches).toContainEqual(expect.objectContaining({ name: rp, state: 'complete' }));
      expect(list.staging).toContainEqual(expect.objectContaining({ image: `${SMALL}-1`, phase: 'complete' }));
      expect(await sh(n.name, 'pgrep -c aria2c || true')).toBe('0\n');
    }
    // Again: nothing to do.
    const again = await pull(nodes[2]!);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    expect(again.json.result.images.find((x: { lv: string }) => x.lv === `${SMALL}-1`).action).toBe('none');

    // The seed alone (pull mode from timers): runs as nobody, a second start is a no-op, --stop ends it.
    const seed = (more: string[] = []) =>
      cowstack(tb, [
        ...['--host', 'node1', '--json', 'catalog', 'seed', listUrl(), '--pubkey', PUB, '--vg', REPO_VG],
        ...['--seed-port', String(nodes[0]!.trackerPort), ...more],
      ]);
    const small = (x: { json: { result: { images: Array<{ lv: string; action: string }> } } }) =>
      x.json.result.images.find((i) => i.lv === `${SMALL}-1`);
    const first = await seed();
    expect(first.exitCode, first.stdout + first.stderr).toBe(0);
    expect(small(first)?.action).toBe('seeding');
    const user = await sh('node1', 'ps -o user= -p "$(cat /var/lib/cowstack/staging/seed/*.peer.pid)"');
    expect(user.trim()).toBe('nobody');
    const second = await seed();
    expect(second.exitCode, second.stdout + second.stderr).toBe(0);
    expect(small(second)?.action).toBe('none');
    const stop = await seed(['--stop']);
    expect(stop.exitCode, stop.stdout + stop.stderr).toBe(0);
    expect(small(stop)?.action).toBe('stopped');
    expect(await sh('node1', 'pgrep -c aria2c || true')).toBe('0\n');
    expect(await sh('node1', 'ls /var/lib/cowstack/staging/seed/peer')).not.toMatch(/\.img\b/);
  }, 600_000);
});
