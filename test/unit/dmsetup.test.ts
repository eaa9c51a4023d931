import { describe, expect, it } from 'vitest';
import { CommandError } from '../../src/exec/errors.js';
import * as dm from '../../src/tools/dmsetup.js';
import { capture, recorder } from './support.js';
import { DM_INFO } from './repoFixtures.js';

/*
 * SYNTHETIC fixtures unless marked REAL: table, status and `info -c` lines written by hand in
 * the kernel's formats (device-mapper admin-guide). The REAL captures from the testbed
 * (test/fixtures/lvm2-2.03.16-bookworm) are replayed in fixtures.test.ts.
 */

const split = (status: string) => status.trim().split(/\s+/);

describe('table builders', () => {
  it('linear', () => {
    expect(dm.linearTable(131072, '/dev/mapper/repo-img1')).toBe('0 131072 linear /dev/mapper/repo-img1 0');
    expect(dm.linearTable(8, '/dev/sdb', 2048)).toBe('0 8 linear /dev/sdb 2048');
  });

  it.each(['P', 'PO', 'N'] as const)('snapshot in mode %s', (mode) => {
    expect(dm.snapshotTable(131072, '/dev/repo/img1', '/dev/repo/c1', mode, 8)).toBe(
      `0 131072 snapshot /dev/repo/img1 /dev/repo/c1 ${mode} 8`,
    );
  });

  it.each([8, 16, 64, 1024, 2 ** 20])('accepts the power-of-two chunk %d', (chunk) => {
    expect(dm.snapshotTable(8, 'o', 'c', 'P', chunk).split(' ').at(-1)).toBe(String(chunk));
  });

  it.each([0, 4, 7, 12, 24, 1000, 8.5, -8, Number.NaN])('rejects the chunk size %d', (chunk) => {
    expect(() => dm.snapshotTable(8, 'o', 'c', 'P', chunk)).toThrow(`got ${chunk}`);
  });

  it('cache with policy arguments', () => {
    expect(
      dm.cacheTable(131072, '/dev/local/m', '/dev/local/d', '/dev/repo/img1', 128, 'writethrough', 'smq', {
        migration_threshold: 2048,
      }),
    ).toBe('0 131072 cache /dev/local/m /dev/local/d /dev/repo/img1 128 1 writethrough smq 2 migration_threshold 2048');
  });

  it('cache without policy arguments ends in "0" with no trailing space', () => {
    expect(dm.cacheTable(64, 'm', 'd', 'o', 64, 'writeback')).toBe('0 64 cache m d o 64 1 writeback smq 0');
    expect(dm.cacheTable(64, 'm', 'd', 'o', 2097152, 'passthrough', 'cleaner')).toBe(
      '0 64 cache m d o 2097152 1 passthrough cleaner 0',
    );
  });

  it.each([0, 32, 63, 96, 2097216, 4194304])('rejects the cache block size %d', (block) => {
    expect(() => dm.cacheTable(64, 'm', 'd', 'o', block, 'writeback')).toThrow(`got ${block}`);
  });

  it('writecache', () => {
    expect(dm.writecacheTable(131072, '/dev/repo/c1', '/dev/local/wc')).toBe(
      '0 131072 writecache s /dev/repo/c1 /dev/local/wc 4096 0',
    );
    expect(dm.writecacheTable(8, 'o', 'c', 512, ['high_watermark', '50', 'writeback_jobs', '1024'])).toBe(
      '0 8 writecache s o c 512 4 high_watermark 50 writeback_jobs 1024',
    );
  });
});

describe('parseDmLines', () => {
  it('splits start, length, target and arguments of each line', () => {
    expect(dm.parseDmLines('0 131072 snapshot 16/131072 16\n')).toEqual([
      { start: 0, length: 131072, target: 'snapshot', args: ['16/131072', '16'] },
    ]);
    expect(dm.parseDmLines('0 100 linear 8:16 0\n100 50 linear 8:32 0\n\n')).toHaveLength(2);
    expect(dm.parseDmLines('')).toEqual([]);
  });
});

describe('parseSnapshotStatus', () => {
  it('reads allocated/total and metadata sectors', () => {
    expect(dm.parseSnapshotStatus(split('16/131072 16'))).toEqual({
      state: 'active',
      allocatedSectors: 16,
      totalSectors: 131072,
      metadataSectors: 16,
      usedPercent: 0.01,
    });
    expect(dm.parseSnapshotStatus(split('98304/131072 384'))).toMatchObject({
      allocatedSectors: 98304,
      usedPercent: 75,
    });
    expect(dm.parseSnapshotStatus(split('0/0 0'))).toMatchObject({ totalSectors: 0, usedPercent: 0 });
  });

  it.each([
    ['Invalid', 'invalid'],
    ['Overflow', 'overflow'],
    ['Merge failed', 'merge-failed'],
    ['Unknown', 'unknown'],
  ])('%s -> %s', (text, state) => {
    expect(dm.parseSnapshotStatus(split(text))).toEqual({ state });
  });

  it.each(['Merge', 'garbage', '16-131072 16', ''])('refuses to guess on %j', (text) => {
    expect(() => dm.parseSnapshotStatus(text ? split(text) : [])).toThrow('unrecognised snapshot status');
  });
});

describe('parseCacheStatus', () => {
  // The arguments after "0 LEN cache" of `dmsetup status` on the testbed's 6.1 kernel shape.
  it('reads a writethrough smq cache', () => {
    const args = split('8 27/4096 128 0/1024 0 0 0 0 0 0 0 1 writethrough 2 migration_threshold 2048 smq 0 rw -');
    expect(dm.parseCacheStatus(args)).toEqual({
      metadataBlockSectors: 8,
      metadataUsed: 27,
      metadataTotal: 4096,
      cacheBlockSectors: 128,
      cacheUsed: 0,
      cacheTotal: 1024,
      readHits: 0,
      readMisses: 0,
      writeHits: 0,
      writeMisses: 0,
      demotions: 0,
      promotions: 0,
      dirty: 0,
      features: ['writethrough'],
      coreArgs: { migration_threshold: '2048' },
      policy: 'smq',
      policyArgs: {},
      mode: 'rw',
      needsCheck: false,
    });
  });

  it('keeps used and dirty blocks apart, and reads needs_check', () => {
    const args = split(
      '8 70/4096 128 597/1024 3117 1802 411 29 5 597 41 2 metadata2 writeback 2 migration_threshold 2048 smq 0 ro ' +
        'needs_check',
    );
    const s = dm.parseCacheStatus(args);
    expect(s).toMatchObject({
      cacheUsed: 597,
      readHits: 3117,
      readMisses: 1802,
      writeHits: 411,
      writeMisses: 29,
      demotions: 5,
      promotions: 597,
      dirty: 41,
      features: ['metadata2', 'writeback'],
      mode: 'ro',
      needsCheck: true,
    });
  });

  it('reads the cleaner policy with no core arguments', () => {
    const s = dm.parseCacheStatus(split('8 27/4096 128 12/1024 0 0 0 0 0 0 12 1 writeback 0 cleaner 0 rw -'));
    expect(s).toMatchObject({ dirty: 12, coreArgs: {}, policy: 'cleaner', mode: 'rw', needsCheck: false });
  });

  it.each(['Fail', 'Error'])('reports %s as failed', (word) => {
    expect(dm.parseCacheStatus([word])).toMatchObject({ failed: true, dirty: 0, needsCheck: false });
  });
});

describe('parseWritecacheStatus', () => {
  it('reads error, total, free and writeback blocks; dirty = total - free', () => {
    expect(dm.parseWritecacheStatus(split('0 16384 12288 256'))).toEqual({
      error: 0,
      totalBlocks: 16384,
      freeBlocks: 12288,
      writebackBlocks: 256,
      dirtyBlocks: 4096,
    });
  });

  it('ignores the statistics newer kernels append', () => {
    expect(dm.parseWritecacheStatus(split('0 16384 16384 0 1200 300 900 100 50 40 10 7 0'))).toMatchObject({
      dirtyBlocks: 0,
      writebackBlocks: 0,
    });
  });

  it('passes the error indicator through', () => {
    expect(dm.parseWritecacheStatus(split('-5 16384 100 0')).error).toBe(-5);
  });
});

describe('parseInfoColumns', () => {
  it('reads name|uuid|open|major|minor|attr rows', () => {
    const out = [
      'repo-img1|LVM-Wb1dd0hI2q9d3ZfJ0y8yD1p0l2QbW7yOaQ3zI0x1y2z3a4b5c6d7e8f9g0h1i2|2|253|4|L--r',
      'cowstack-snap-3f2a|COWSTACK-snap-3f2a9c|0|253|7|L--w',
      'cowstack-wc-3f2a|COWSTACK-wc-3f2a9c|1|253|8|LIsw',
      'plain||0|253|9|L--w',
      '',
    ].join('\n');
    expect(dm.parseInfoColumns(out)).toEqual([
      {
        name: 'repo-img1',
        uuid: 'LVM-Wb1dd0hI2q9d3ZfJ0y8yD1p0l2QbW7yOaQ3zI0x1y2z3a4b5c6d7e8f9g0h1i2',
        open: 2,
        major: 253,
        minor: 4,
        attr: 'L--r',
        readOnly: true,
        suspended: false,
        uses: [],
      },
      {
        name: 'cowstack-snap-3f2a',
        uuid: 'COWSTACK-snap-3f2a9c',
        open: 0,
        major: 253,
        minor: 7,
        attr: 'L--w',
        readOnly: false,
        suspended: false,
        uses: [],
      },
      {
        name: 'cowstack-wc-3f2a',
        uuid: 'COWSTACK-wc-3f2a9c',
        open: 1,
        major: 253,
        minor: 8,
        attr: 'LIsw',
        readOnly: false,
        suspended: true,
        uses: [],
      },
      {
        name: 'plain',
        uuid: '',
        open: 0,
        major: 253,
        minor: 9,
        attr: 'L--w',
        readOnly: false,
        suspended: false,
        uses: [],
      },
    ]);
  });

  it('reads devs_used: the devices each one stands on (REAL: lvm2 2.03.16, a clone mapped on its image)', () => {
    const out =
      'cowstack-rw-2Th2tVchMgkcwOOYjWJClanGhfG1X4S1|COWSTACK-rw-2Th2tVchMgkcwOOYjWJClanGhfG1X4S1|0|253|3|L--w|' +
      'repo-c1,repo-im1\n' +
      'repo-c1|LVM-FesFAvhy4g2egWxSyxZ1nQauTIViJ2c42Th2tVchMgkcwOOYjWJClanGhfG1X4S1|1|253|2|L--w|\n' +
      'repo-im1|LVM-FesFAvhy4g2egWxSyxZ1nQauTIViJ2c4YQl9pfcbqDSSRPHu79AoXrYmn0EXFAKf|1|253|1|L--r|\n';
    expect(dm.parseInfoColumns(out).map((d) => [d.name, d.uses])).toEqual([
      ['cowstack-rw-2Th2tVchMgkcwOOYjWJClanGhfG1X4S1', ['repo-c1', 'repo-im1']],
      ['repo-c1', []],
      ['repo-im1', []],
    ]);
  });

  it('reads "No devices found" as no devices', () => {
    expect(dm.parseInfoColumns('No devices found\n')).toEqual([]);
    expect(dm.parseInfoColumns('')).toEqual([]);
  });
});

const INFO = DM_INFO;

describe('dmsetup reads through the runner', () => {
  it('lists devices', async () => {
    const r = recorder().expect(INFO, { kind: 'read', stdout: 'repo-lvmlock|LVM-abc|1|253|0|L--w\n' });
    expect(await dm.listDevices(r)).toMatchObject([{ name: 'repo-lvmlock', open: 1 }]);
    expect(r.calls[0]).toMatchObject({ root: true, timeout: 'query' });
    r.verify();
  });

  it('deviceInfo: one device, or undefined when it does not exist', async () => {
    const r = recorder()
      .expect([...INFO, 'repo-img1'], { kind: 'read', stdout: 'repo-img1|LVM-x|0|253|4|L--r\n' })
      .expect([...INFO, 'gone'], { kind: 'read', exitCode: 1, stderr: 'Device does not exist.\nCommand failed.\n' });
    expect(await dm.deviceInfo(r, 'repo-img1')).toMatchObject({ name: 'repo-img1', readOnly: true });
    expect(await dm.deviceInfo(r, 'gone')).toBeUndefined();
    r.verify();
  });

  it('deviceInfo: another failure is an error', async () => {
    const r = recorder().expect([...INFO, 'x'], {
      kind: 'read',
      exitCode: 1,
      stderr: '/dev/mapper/control: open failed: Permission denied\n',
    });
    await expect(dm.deviceInfo(r, 'x')).rejects.toBeInstanceOf(CommandError);
    r.verify();
  });

  it('status and table', async () => {
    const r = recorder()
      .expect(['dmsetup', 'status', 'cowstack-snap-1'], { kind: 'read', stdout: '0 131072 snapshot 16/131072 16\n' })
      .expect(['dmsetup', 'table', 'cowstack-snap-1'], { kind: 'read', stdout: '0 131072 snapshot 253:4 253:5 P 8\n' });
    expect(await dm.status(r, 'cowstack-snap-1')).toEqual([
      { start: 0, length: 131072, target: 'snapshot', args: ['16/131072', '16'] },
    ]);
    expect((await dm.table(r, 'cowstack-snap-1'))[0]!.args).toEqual(['253:4', '253:5', 'P', '8']);
    r.verify();
  });

  it('targets, versions without the v (REAL capture)', async () => {
    const r = recorder().expect(['dmsetup', 'targets'], { kind: 'read', stdout: capture('dmsetup-targets.txt') });
    const t = await dm.targets(r);
    expect(t.get('snapshot')).toBe('1.16.0');
    expect(t.get('writecache')).toBe('1.6.0');
    expect(t.get('cache')).toBe('2.3.0');
    expect([...t.keys()]).toEqual([
      'thin-pool',
      'thin',
      'writecache',
      'cache',
      'snapshot-merge',
      'snapshot-origin',
      'snapshot',
      'striped',
      'linear',
      'error',
    ]);
    r.verify();
  });
});

describe('dmsetup write requests', () => {
  const table = '0 131072 snapshot /dev/repo/img1 /dev/repo/c1 P 8';
  it.each([
    [
      dm.createReq('cowstack-snap-1', 'COWSTACK-snap-1', table),
      ['create', 'cowstack-snap-1', '--uuid', 'COWSTACK-snap-1', '--table', table],
    ],
    [
      dm.createReq('ro', 'COWSTACK-ro', table, { readOnly: true }),
      ['create', 'ro', '--uuid', 'COWSTACK-ro', '--readonly', '--table', table],
    ],
    [dm.reloadReq('x', table), ['reload', 'x', '--table', table]],
    [dm.suspendReq('x'), ['suspend', 'x']],
    [dm.suspendReq('x', true), ['suspend', '--noflush', 'x']],
    [dm.resumeReq('x'), ['resume', 'x']],
    [dm.removeReq('x'), ['remove', '--retry', 'x']],
    [dm.messageReq('x', 'cleaner'), ['message', 'x', '0', 'cleaner']],
  ])('%#: exact argv, tagged write, as root', (req, args) => {
    expect(req.argv).toEqual(['dmsetup', ...args]);
    expect(req).toMatchObject({ kind: 'write', root: true, timeout: 'change' });
  });
});
