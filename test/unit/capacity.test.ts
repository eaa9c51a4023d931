import { describe, expect, it } from 'vitest';
import {
  leaseAlignBytes,
  leaseBytesFor,
  metadataMiBFor,
  repoCapacity,
  sizingFor,
  type CapacityReport,
} from '../../src/core/capacity.js';
import * as lvm from '../../src/tools/lvm.js';
import { lockIo } from '../../src/core/doctor.js';
import { expectCapacityReads, leaseRows, spaceRow, SPACE_COLUMNS } from './repoFixtures.js';
import { capture, lvsJson, recorder, REPORT, vgsJson } from './support.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('sizing at cluster init', () => {
  it('sizes the metadata area for the default 2000 LVs at 5 MiB (LVM fills only half of it)', () => {
    expect(metadataMiBFor(2000)).toBe(5);
    expect(metadataMiBFor(100)).toBe(1);
    expect(metadataMiBFor(10000)).toBe(20);
  });

  it('spaces leases 8 MiB apart on 4K-sector LUNs and 1 MiB on 512, after 67 reserved slots', () => {
    expect(leaseAlignBytes(4096)).toBe(8 * MiB);
    expect(leaseAlignBytes(512)).toBe(1 * MiB);
    // The testbed's first lvmlock: 1 GiB holds 128 - 67 = 61 LV leases.
    expect(leaseBytesFor(61, 8 * MiB)).toBe(1 * GiB);
    expect(leaseBytesFor(62, 8 * MiB)).toBe(1.25 * GiB);
    expect(leaseBytesFor(2000, 8 * MiB)).toBe(65 * 256 * MiB);
    expect(leaseBytesFor(2000, 1 * MiB)).toBe(9 * 256 * MiB);
  });

  it('explains the metadata area and the lease space in words', () => {
    const s = sizingFor(2000, 4096);
    expect(s.metadataMiB).toBe(5);
    expect(s.explanation.join('\n')).toMatch(/metadata area 5 MiB: room for about 2000 LVs/);
    expect(s.explanation.join('\n')).toMatch(/8 MiB sanlock lease .* to 16\.25 GiB for 2000 LVs/);
  });

  it('passes the size to vgcreate in MiB', () => {
    expect(lvm.createVgReq('repo', '/dev/sdb', { lockType: 'sanlock', metadataMiB: 4 }).argv).toEqual([
      'vgcreate',
      '--shared',
      '--lock-type',
      'sanlock',
      '--metadatasize',
      '4m',
      '--setautoactivation',
      'n',
      'repo',
      '/dev/sdb',
    ]);
  });
});

describe('repository capacity', () => {
  it('reports metadata, lease space and extents from one read of each', async () => {
    const r = expectCapacityReads(recorder(), spaceRow(), leaseRows(62));
    const c = (await repoCapacity(r, 'repo')) as CapacityReport;
    r.verify();
    expect(c.lvCount).toBe(62);
    expect(c.metadata).toEqual({
      areaBytes: 1044480,
      usableBytes: 522240,
      freeBytes: 489984,
      usedPercent: 6,
      bytesPerLv: 520,
      lvsLeft: 942,
    });
    expect(c.leases).toEqual({
      lvmlockBytes: 1342177280,
      alignBytes: 8 * MiB,
      slots: 160 - 67,
      inUse: 62,
      free: 31,
      usedPercent: 67,
      growBytes: 256 * MiB,
      canGrow: true,
    });
    expect(c.extents).toMatchObject({ total: 1023, free: 641, usedPercent: 37 });
    expect(c.warnings).toEqual([]);
  });

  it('warns at the threshold, each with its fix, and on leases only when lvmlock cannot grow', async () => {
    const r = expectCapacityReads(
      recorder(),
      spaceRow({ free: 200 * MiB, freeCount: 50, mdaFree: 40000, lvCount: 90 }),
      leaseRows(90),
    );
    const c = (await repoCapacity(r, 'repo', { warnPercent: 80 })) as CapacityReport;
    r.verify();
    expect(c.warnings.map((w) => w.what)).toEqual(['metadata', 'leases', 'extents']);
    expect(c.warnings[0]!.fix).toMatch(/cluster init --max-lvs/);
    expect(c.warnings[1]!.message).toMatch(/90 of 93 leases/);
    expect(c.warnings[2]!.fix).toMatch(/pvresize/);
  });

  it('says nothing about leases in a VG without lvmlock (dlm or local)', async () => {
    const r = recorder()
      .expect(['vgs', '--nolocking', ...REPORT, '-o', SPACE_COLUMNS, 'repo'], {
        kind: 'read',
        stdout: vgsJson([spaceRow()]),
      })
      .expect(['lvs', '-a', '--nolocking', ...REPORT, '-o', 'lv_name,lv_size,lv_lock_args', 'repo'], {
        kind: 'read',
        stdout: lvsJson([]),
      });
    const c = (await repoCapacity(r, 'repo')) as CapacityReport;
    r.verify();
    expect(c.leases).toBeUndefined();
  });

  it('is undefined when the VG does not exist', async () => {
    const r = recorder().expect(['vgs', '--nolocking', ...REPORT, '-o', SPACE_COLUMNS, 'nope'], {
      kind: 'read',
      exitCode: 5,
      stderr: '  Volume group "nope" not found\n',
    });
    expect(await repoCapacity(r, 'nope')).toBeUndefined();
  });

  it('reads lease offsets from lock args', () => {
    expect(lvm.leaseOffset('1.0.0:562036736')).toBe(562036736);
    expect(lvm.leaseOffset('')).toBeUndefined();
    expect(lvm.leaseOffset('1.0.0:lvmlock')).toBeUndefined();
  });
});

describe('REAL lvm2 2.03.16 reports (testbed, right after cluster init --max-lvs 2000)', () => {
  it('reads the 6 MiB metadata area LVM made of --metadatasize 5m and the 1 GiB lvmlock', async () => {
    const r = recorder()
      .expect(['vgs', '--nolocking', ...REPORT, '-o', SPACE_COLUMNS, 'repo'], {
        kind: 'read',
        stdout: capture('vgs-space-repo.json'),
      })
      .expect(['lvs', '-a', '--nolocking', ...REPORT, '-o', 'lv_name,lv_size,lv_lock_args', 'repo'], {
        kind: 'read',
        stdout: capture('lvs-a-leases-empty.json'),
      })
      .expect(['blockdev', '--getpbsz', '/dev/sda'], { kind: 'read', stdout: '4096\n' });
    const c = (await repoCapacity(r, 'repo', { pvDevice: '/dev/sda' })) as CapacityReport;
    r.verify();
    // LVM rounds the area up so that the first extent starts on a MiB boundary (pe_start 6 MiB).
    expect(c.metadata).toMatchObject({ areaBytes: 6287360, freeBytes: 3141632, usedPercent: 0 });
    // An empty VG has nothing to average: the estimate uses the measured 490 bytes per clone.
    expect(c.metadata.lvsLeft).toBe(Math.floor(3141632 / 490));
    expect(c.leases).toMatchObject({ lvmlockBytes: GiB, slots: 61, inUse: 0, canGrow: true });
    expect(c.extents).toMatchObject({ extentBytes: 4 * MiB, total: 1022, free: 766 });
  });
});

describe('doctor: what the lock manager reads', () => {
  it('derives the sector size from the lease alignment (2048 host slots) and the reads from both', () => {
    const k4 = lockIo(8 * 1024 * 1024);
    expect(k4).toMatchObject({ id: 'repository:lock-io', status: 'ok' });
    expect(k4.message).toBe(
      'sanlock leases on 4096-byte sectors: each lease operation reads about 8 MiB from the LUN and an idle ' +
        'host about 419 kB/s (a LUN with 512-byte physical sectors reads 8x less: README, Lock-manager I/O)',
    );
    expect(lockIo(1024 * 1024).message).toBe(
      'sanlock leases on 512-byte sectors: each lease operation reads about 1 MiB from the LUN and an idle ' +
        'host about 52 kB/s',
    );
  });
});
