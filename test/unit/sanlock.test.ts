import { describe, expect, it } from 'vitest';
import * as sanlock from '../../src/tools/sanlock.js';

/*
 * SYNTHETIC fixtures, written by hand in the formats sanlock's own printf calls use
 * (`client gets`: "s NAME:HOST_ID:PATH:OFFSET FLAGS", "h ID gen G timestamp T STATE";
 * `direct dump`: "%08llu %36s %48s %010llu %04llu %04llu [%llu]"), with cases the testbed
 * did not produce (a DEAD host, a second lockspace, shared-mode blocks, rindex rows). The
 * REAL sanlock 3.8.5 captures (gets, the delta-lease dump of the lvmlock LV, one LV lease
 * held and released) are replayed in fixtures.test.ts.
 */

const GETS = [
  's lvm_repo:1:/dev/mapper/repo-lvmlock:0 ', // sanlock prints a trailing space when there are no flags
  'h 1 gen 3 timestamp 10423 LIVE',
  'h 2 gen 1 timestamp 10410 LIVE',
  'h 3 gen 2 timestamp 9022 DEAD',
  's lvm_other--vg:7:/dev/mapper/other--vg-lvmlock:0 ADD',
  '',
].join('\n');

describe('parseGets', () => {
  it('reads lockspaces with their host id, lease path and the hosts seen', () => {
    expect(sanlock.parseGets(GETS)).toEqual([
      {
        name: 'lvm_repo',
        hostId: 1,
        path: '/dev/mapper/repo-lvmlock',
        hosts: [
          { hostId: 1, generation: 3, timestamp: 10423, flags: 'LIVE' },
          { hostId: 2, generation: 1, timestamp: 10410, flags: 'LIVE' },
          { hostId: 3, generation: 2, timestamp: 9022, flags: 'DEAD' },
        ],
      },
      { name: 'lvm_other--vg', hostId: 7, path: '/dev/mapper/other--vg-lvmlock', hosts: [] },
    ]);
  });

  it('reads nothing from empty output, and ignores host lines before any lockspace', () => {
    expect(sanlock.parseGets('')).toEqual([]);
    expect(sanlock.parseGets('h 1 gen 1 timestamp 5 LIVE\n')).toEqual([]);
  });

  it("lockspaceName is lvmlockd's lvm_<VG>", () => {
    expect(sanlock.lockspaceName('repo')).toBe('lvm_repo');
  });
});

/** One row the way sanlock's direct dump prints it (right-aligned fixed widths). */
const row = (offset: number, ls: string, res: string, ts: number, own: number, gen: number, lver?: number) => {
  const ids = `${String(ts).padStart(10, '0')} ${String(own).padStart(4, '0')} ${String(gen).padStart(4, '0')}`;
  const tail = lver === undefined ? '' : ` ${lver}`;
  return `${String(offset).padStart(8, '0')} ${ls.padStart(36)} ${res.padStart(48)} ${ids}${tail}`;
};

const LV_T1 = 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M';
const LV_IMG = 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q';

// SYNTHETIC: rows no single real dump shows together (a real `direct dump LVMLOCK` stops after
// the delta leases; an LV lease is read at its own offset), spaced as on the testbed (4096).
const DUMP = [
  '  offset                            lockspace                                         resource  timestamp  own  ' +
    'gen lver',
  row(0, 'lvm_repo', '0b5e0b7e-9d1c-4bb0-8d2a-3b6f1f0c9a11.node1', 10423, 1, 3),
  row(4096, 'lvm_repo', '5f8a2c44-0e3b-4a9a-b6c1-9c2d7e1f0a22.node2', 10410, 2, 1),
  row(1048576, 'lvm_repo', 'GLLK', 0, 0, 0, 0),
  row(2097152, 'lvm_repo', 'VGLK', 0, 1, 3, 14),
  row(70254592, 'lvm_repo', LV_T1, 10398, 2, 1, 3),
  row(71303168, 'lvm_repo', LV_IMG, 0, 1, 3, 2),
  // the mode block of a shared lease: indented, owner and generation only
  `${' '.repeat(106)}0001 0003 SH`,
  // an rindex header (sanlock >= 3.7) also starts with an offset but is not a lease
  `${String(1048576 * 2).padStart(8, '0')} ${'lvm_repo'.padStart(36)} rindex_header 0x1 512 2000 3145728`,
  '',
].join('\n');

describe('parseDirectDump', () => {
  it('reads delta and paxos leases, skipping the header, mode blocks and rindex rows', () => {
    expect(sanlock.parseDirectDump(DUMP)).toEqual([
      {
        offset: 0,
        lockspace: 'lvm_repo',
        resource: '0b5e0b7e-9d1c-4bb0-8d2a-3b6f1f0c9a11.node1',
        timestamp: 10423,
        owner: 1,
        generation: 3,
        lver: 0,
      },
      {
        offset: 4096,
        lockspace: 'lvm_repo',
        resource: '5f8a2c44-0e3b-4a9a-b6c1-9c2d7e1f0a22.node2',
        timestamp: 10410,
        owner: 2,
        generation: 1,
        lver: 0,
      },
      { offset: 1048576, lockspace: 'lvm_repo', resource: 'GLLK', timestamp: 0, owner: 0, generation: 0, lver: 0 },
      { offset: 2097152, lockspace: 'lvm_repo', resource: 'VGLK', timestamp: 0, owner: 1, generation: 3, lver: 14 },
      { offset: 70254592, lockspace: 'lvm_repo', resource: LV_T1, timestamp: 10398, owner: 2, generation: 1, lver: 3 },
      { offset: 71303168, lockspace: 'lvm_repo', resource: LV_IMG, timestamp: 0, owner: 1, generation: 3, lver: 2 },
    ]);
  });

  it('reads nothing from the header alone or from empty output', () => {
    expect(sanlock.parseDirectDump(DUMP.split('\n')[0]!)).toEqual([]);
    expect(sanlock.parseDirectDump('')).toEqual([]);
  });
});

describe('leaseOffset', () => {
  it('is the offset in an LV lock args "VERSION:OFFSET"', () => {
    expect(sanlock.leaseOffset('1.0.0:70254592')).toBe(70254592);
    expect(sanlock.leaseOffset(' 1.0.0:0\n')).toBe(0);
  });

  it.each(['', '1.0.0:lvmlock', '70254592', '1.0:70254592', '1.0.0:-1', '1.0.0:7e7'])(
    'is undefined for %j (no sanlock lease)',
    (args) => {
      expect(sanlock.leaseOffset(args)).toBeUndefined();
    },
  );
});

describe('sanlock requests', () => {
  it.each([
    [sanlock.clientStatusReq(), ['sanlock', 'client', 'status']],
    [sanlock.clientGetsReq(), ['sanlock', 'client', 'gets', '-h', '1']],
    [sanlock.hostStatusReq('lvm_repo'), ['sanlock', 'client', 'host_status', '-s', 'lvm_repo']],
    [sanlock.directDumpReq('/dev/mapper/repo-lvmlock'), ['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock']],
    [
      sanlock.directDumpReq('/dev/mapper/repo-lvmlock:570425344:1048576'),
      ['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock:570425344:1048576'],
    ],
    [sanlock.lvmlockctlInfoReq(), ['lvmlockctl', '--info']],
  ])('%#: exact argv, read, as root', (req, argv) => {
    expect(req.argv).toEqual(argv);
    expect(req).toMatchObject({ kind: 'read', root: true, allowFailure: true });
  });
});
