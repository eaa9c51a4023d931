/**
 * `cowstack metrics`: what one collection reads (the status observation with the cache VG,
 * the capacity report, lvmlockd's locks, nothing else), the numbers it turns them into, the
 * Prometheus text (HELP/TYPE, escaping), and the atomic file write.
 * SYNTHETIC: LV rows, dm devices and statuses come from repoFixtures; the status lines are
 * hand-written in the kernel's formats (snapshot, writecache, cache).
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../src/cli/atomicFile.js';
import { validateOutput } from '../../src/cli/commands/metrics.js';
import { familiesOf, metricFamilies } from '../../src/core/metricFamilies.js';
import { acrossRepositories, collectMetrics } from '../../src/core/metrics.js';
import { nodeSession } from '../../src/core/node.js';
import { escapeLabelValue, promText } from '../../src/core/promText.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  CACHE_VG,
  chainDevs,
  chainRows,
  compact,
  DM_INFO,
  DM_STATUS,
  DM_TABLE,
  dmInfo,
  dmStatus,
  expectAllLvUuids,
  expectCache,
  expectCapacityReads,
  expectJournalRead,
  leaseRows,
  LOCK_INFO,
  lockInfo,
  replicaRow,
  spaceRow,
  U,
  VG,
  type Dev,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, thrownBy } from './support.js';

const STARTED = '2026-11-30T10:31:02.000Z';
const dev = (role: 'wb' | 'lc', uuid: string, minor: number): Dev => ({
  name: `cowstack-${role}-${compact(uuid)}`,
  uuid: `COWSTACK-${role}-${compact(uuid)}`,
  open: 1,
  minor,
});
// The mapped chain (image -> c1 -> c2 -> c3 live), c3 under a write-back cache, the image on a lazy cache.
const rows = chainRows({ mapped: true });
const devs = [...chainDevs(1), dev('wb', U.c3, 10), dev('lc', U.image, 11)];
const statuses = dmStatus({
  [`cowstack-ro-${compact(U.c1)}`]: '0 131072 snapshot 96/32768 16',
  [`cowstack-ro-${compact(U.c2)}`]: '0 131072 snapshot 1040/32768 16',
  [`cowstack-rw-${compact(U.c3)}`]: '0 131072 snapshot Overflow',
  // error total free writeback, then read_blocks read_hits write_blocks write_hits_uncommitted write_hits_committed
  [`cowstack-wb-${compact(U.c3)}`]: '0 131072 writecache 0 1024 1000 0 500 400 300 100 50',
  [`cowstack-lc-${compact(U.image)}`]:
    '0 131072 cache 8 72/1024 128 10/512 40 60 0 0 0 5 0 1 writethrough 2 migration_threshold 2048 smq 0 ro -',
});
const tables = dmStatus(
  Object.fromEntries(devs.filter((d) => d.uuid.startsWith('COWSTACK-')).map((d) => [d.name, '0 131072 zero'])),
);

/**
 * One collection's reads, in the order collectMetrics makes them. `elsewhere`: the uuids of the
 * LVs of every VG (asked because the img2 replica's image is not in this VG).
 */
function expectCollection(r: RecordingRunner, elsewhere: readonly string[] = [U.image]): RecordingRunner {
  // The observation with the cache VG (replicas: the image's complete one, a stale one of a gone LV).
  expectCache(r, [replicaRow(), replicaRow({ origin: U.img2, state: 'copying', copied: 16 * 2 ** 20 })]);
  r.expect(lvsArgv(VG), { kind: 'read', stdout: lvsJson(rows) }).expect(DM_INFO, {
    kind: 'read',
    stdout: dmInfo(devs),
  });
  r.expect(DM_STATUS, { kind: 'read', stdout: statuses }).expect(DM_TABLE, { kind: 'read', stdout: tables });
  expectJournalRead(r, {
    [`${VG}.c9.commit.json`]: JSON.stringify({ op: 'commit', vg: VG, name: 'c9', started: STARTED }),
  });
  expectCapacityReads(r, spaceRow({ vg: VG }), leaseRows(62), '4096', VG);
  r.expect(LOCK_INFO, { kind: 'read', stdout: lockInfo(rows) });
  return expectAllLvUuids(r, elsewhere);
}

describe('collectMetrics', () => {
  it('reads the status observation, capacity and lvmlockd once each, and only reads', async () => {
    const r = expectCollection(recorder('node1'));
    const m = await collectMetrics(nodeSession({ runner: r, vg: VG, cacheVg: CACHE_VG }), { now: () => 1795000000123 });
    r.verify();
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    expect(m).toMatchObject({ vg: VG, host: 'node1', collectedAt: 1795000000 });
    expect(m.cows).toEqual([
      // levels: the COWs down to the image (image -> c1 -> c2 -> c3)
      { clone: 'c1', mode: 'ro', state: 'active', levels: 1, allocatedBytes: 96 * 512, sizeBytes: 32768 * 512 },
      { clone: 'c2', mode: 'ro', state: 'active', levels: 2, allocatedBytes: 1040 * 512, sizeBytes: 32768 * 512 },
      { clone: 'c3', mode: 'rw', state: 'overflow', levels: 3 },
    ]);
    expect(m.caches).toEqual([
      // 1024 - 1000 blocks in use; hits 400 read + 150 write; misses 500 reads - 400 hits
      {
        kind: 'writeback',
        lv: 'c3',
        device: `cowstack-wb-${compact(U.c3)}`,
        blocks: 1024,
        dirtyBlocks: 24,
        hits: 550,
        misses: 100,
        failed: false,
      },
      {
        kind: 'lazy',
        lv: 'image',
        device: `cowstack-lc-${compact(U.image)}`,
        blocks: 512,
        dirtyBlocks: 0,
        hits: 40,
        misses: 60,
        failed: false,
      },
    ]);
    expect(m.replicas.map((x) => [x.image, x.state, x.copiedBytes])).toEqual([
      ['image', 'complete', 64 * 2 ** 20],
      [undefined, 'stale', 16 * 2 ** 20],
    ]);
    expect(m.locks.map((l) => [l.lv, l.mode])).toEqual([
      ['image', 'sh'],
      ['c1', 'sh'],
      ['c2', 'sh'],
      ['c3', 'ex'],
    ]);
    expect(m.interrupted).toEqual([{ op: 'commit', name: 'c9', started: STARTED }]);
    expect(m.capacity?.extents.free).toBe(641);
  });

  it('renders every family with HELP and TYPE, and the values of the collection', async () => {
    const r = expectCollection(recorder('node1'));
    const m = await collectMetrics(nodeSession({ runner: r, vg: VG, cacheVg: CACHE_VG }), { now: () => 1795000000000 });
    const text = promText(metricFamilies(m));
    const lines = text.trimEnd().split('\n');
    // Every sample belongs to the family whose HELP and TYPE came just before it.
    let family = '';
    for (const l of lines) {
      const help = /^# HELP (\S+) \S/.exec(l);
      if (help) family = help[1]!;
      else if (l.startsWith('# TYPE ')) expect(l).toMatch(new RegExp(`^# TYPE ${family} (gauge|counter)$`));
      else expect(l, l).toMatch(new RegExp(`^${family}(\\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\\})? -?[0-9.e+]+$`));
    }
    const has = (line: string) => expect(lines).toContain(line);
    has('cowstack_metrics_collected_time_seconds{vg="vg"} 1795000000');
    has('cowstack_cow_allocated_bytes{vg="vg",clone="c2",mode="ro"} 532480');
    has('cowstack_cow_overflow{vg="vg",clone="c3",mode="rw"} 1');
    has('cowstack_cow_overflow{vg="vg",clone="c1",mode="ro"} 0');
    has('cowstack_cow_chain_levels{vg="vg",clone="c3",mode="rw"} 3');
    has('cowstack_cache_dirty_blocks{vg="vg",kind="writeback",lv="c3"} 24');
    has('cowstack_cache_misses_total{vg="vg",kind="lazy",lv="image"} 60');
    has(`cowstack_replica_state{vg="vg",image="image",origin_uuid="${U.image}",state="complete"} 1`);
    has(`cowstack_replica_state{vg="vg",image="",origin_uuid="${U.img2}",state="stale"} 1`);
    has(`cowstack_replica_state{vg="vg",image="",origin_uuid="${U.img2}",state="copying"} 0`);
    has('cowstack_lv_lock_held{vg="vg",lv="c3",kind="clone",state="live",mode="ex"} 1');
    has('cowstack_vg_free_extents{vg="vg"} 641');
    has('cowstack_vg_leases_used{vg="vg"} 62');
    has('cowstack_interrupted_operations{vg="vg"} 1');
    const started = Date.parse(STARTED) / 1000;
    has(`cowstack_interrupted_operation_started_time_seconds{vg="vg",op="commit",name="c9"} ${started}`);
    // c3 overflowed: it has no byte counts, only its state
    expect(lines.some((l) => l.startsWith('cowstack_cow_allocated_bytes{vg="vg",clone="c3"'))).toBe(false);
  });

  it('an idle node (nothing mapped, no cache VG, nothing active) does not ask lvmlockd', async () => {
    const r = recorder('node1');
    expectCache(r, []);
    r.expect(lvsArgv(VG), { kind: 'read', stdout: lvsJson(chainRows()) }).expect(DM_INFO, {
      kind: 'read',
      stdout: dmInfo([]),
    });
    r.expect(DM_STATUS, { kind: 'read', stdout: '' }).expect(DM_TABLE, { kind: 'read', stdout: '' });
    expectJournalRead(r, {});
    expectCapacityReads(r, spaceRow({ vg: VG }), leaseRows(4), '512', VG);
    const m = await collectMetrics(nodeSession({ runner: r, vg: VG, cacheVg: CACHE_VG }));
    r.verify();
    expect([m.cows, m.caches, m.locks, m.interrupted]).toEqual([[], [], [], []]);
    const text = promText(metricFamilies(m));
    expect(text).toContain('# TYPE cowstack_cow_allocated_bytes gauge\n# HELP cowstack_cow_size_bytes');
    expect(text).toContain('cowstack_interrupted_operations{vg="vg"} 0\n');
  });

  it("a replica of another repository's image is that repository's, not stale here", async () => {
    // img2 is an LV of another VG (lvs of every VG lists it): this collection leaves it out.
    const r = expectCollection(recorder('node1'), [U.image, U.img2]);
    const m = await collectMetrics(nodeSession({ runner: r, vg: VG, cacheVg: CACHE_VG }), { now: () => 0 });
    r.verify();
    expect(m.replicas.map((x) => [x.image, x.state])).toEqual([['image', 'complete']]);
  });

  it('several repositories: one text, each family once, every sample labelled with its VG', async () => {
    const r = expectCollection(recorder('node1'));
    const first = await collectMetrics(nodeSession({ runner: r, vg: VG, cacheVg: CACHE_VG }), { now: () => 0 });
    // The second repository's view of the node's one cache VG: its own image's replica, and the
    // stale one (its image in no VG), which every collection reports.
    const mine = { image: 'base2', originUuid: U.d1, state: 'complete' as const, sizeBytes: 1, copiedBytes: 1 };
    const second = {
      ...first,
      vg: 'repo2',
      cows: [],
      caches: [],
      locks: [],
      interrupted: [],
      replicas: [{ originUuid: U.img2, state: 'stale' as const, sizeBytes: 1, copiedBytes: 1 }, mine],
      capacity: { ...first.capacity!, vg: 'repo2', lvCount: 7 },
    };
    const both = acrossRepositories([first, second]);
    // Each replica once: the stale one in the first collection only.
    expect(both[1]!.replicas).toEqual([mine]);
    expect(both[0]!.replicas.map((x) => x.originUuid)).toEqual([U.image, U.img2]);
    const lines = promText(familiesOf(both)).split('\n');
    const helps = lines.filter((l) => l.startsWith('# HELP '));
    expect(new Set(helps).size).toBe(helps.length);
    expect(lines).toContain('cowstack_vg_lvs{vg="vg"} 62');
    expect(lines).toContain('cowstack_vg_lvs{vg="repo2"} 7');
    expect(lines).toContain(
      `cowstack_replica_state{vg="repo2",image="base2",origin_uuid="${U.d1}",state="complete"} 1`,
    );
    expect(lines.filter((l) => l.startsWith('cowstack_metrics_collected_time_seconds{'))).toEqual([
      'cowstack_metrics_collected_time_seconds{vg="vg"} 0',
      'cowstack_metrics_collected_time_seconds{vg="repo2"} 0',
    ]);
  });
});

describe('promText', () => {
  it('escapes backslash, double quote and line feed in label values, and line feed in HELP', () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    const text = promText([
      {
        name: 'x_total',
        help: 'one "help"\\ line\nand more',
        type: 'counter',
        samples: [{ labels: { lv: 'q"\n' }, value: 3 }],
      },
      { name: 'y', help: 'no samples', type: 'gauge', samples: [] },
      {
        name: 'z',
        help: 'special values',
        type: 'gauge',
        samples: [{ value: NaN }, { labels: { a: '' }, value: Infinity }],
      },
    ]);
    expect(text).toBe(
      [
        '# HELP x_total one "help"\\\\ line\\nand more',
        '# TYPE x_total counter',
        'x_total{lv="q\\"\\n"} 3',
        '# HELP y no samples',
        '# TYPE y gauge',
        '# HELP z special values',
        '# TYPE z gauge',
        'z NaN',
        'z{a=""} +Inf',
        '',
      ].join('\n'),
    );
  });

  it('refuses a bad metric or label name and a family listed twice, naming it', () => {
    const one = (name: string, labels?: Record<string, string>) => ({
      name,
      help: 'h',
      type: 'gauge' as const,
      samples: [{ labels, value: 1 }],
    });
    expect(thrownBy(() => promText([one('cowstack-x')]), EXIT.USAGE).message).toContain('"cowstack-x"');
    expect(thrownBy(() => promText([one('ok', { 'bad-label': 'v' })]), EXIT.USAGE).message).toContain('"bad-label"');
    expect(thrownBy(() => promText([one('ok', { __name__: 'v' })]), EXIT.USAGE).message).toContain('"__name__"');
    expect(thrownBy(() => promText([one('ok'), one('ok')]), EXIT.USAGE).message).toContain('ok is listed twice');
  });
});

describe('metrics --output', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cowstack-metrics-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts only a *.prom file (the textfile collector reads nothing else), naming the bad value', () => {
    expect(validateOutput('/var/lib/node-exporter/cowstack.prom')).toBe('/var/lib/node-exporter/cowstack.prom');
    for (const bad of ['/tmp/cowstack.txt', '/tmp/.prom', '/tmp/cowstack.prom/', ''])
      expect(thrownBy(() => validateOutput(bad), EXIT.USAGE).message).toContain(`"${bad}"`);
  });

  it('replaces the file whole and leaves no temporary file behind', async () => {
    const file = path.join(dir, 'cowstack.prom');
    await writeFile(file, 'old\n');
    await writeFileAtomic(file, 'new 1\n');
    expect(await readFile(file, 'utf8')).toBe('new 1\n');
    expect(await readdir(dir)).toEqual(['cowstack.prom']);
  });

  it('a directory that does not exist: fails naming the file, says what to do, leaves nothing', async () => {
    const file = path.join(dir, 'missing', 'cowstack.prom');
    const e = await rejectionOf(writeFileAtomic(file, 'x 1\n'), EXIT.FAILED);
    expect(e.message).toContain(`cannot write ${file}`);
    expect(e.hint).toMatch(/create the directory/);
    expect(await readdir(dir)).toEqual([]);
  });
});
