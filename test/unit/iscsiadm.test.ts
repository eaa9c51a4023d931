import { describe, expect, it } from 'vitest';
import * as iscsi from '../../src/tools/iscsiadm.js';

/*
 * SYNTHETIC fixtures, written by hand in the layout open-iscsi 2.1.8 prints for
 * `iscsiadm -m session -P 3` (tabs as in its printf calls), for cases the testbed did not
 * produce (several targets and sessions, failed sessions, LUNs without a disk). The REAL
 * capture (one session) is replayed in fixtures.test.ts.
 */
const session = (o: { portal?: string; sid: number; state?: string; host: number; luns: Array<[number, string?]> }) =>
  [
    ...(o.portal ? [`\tCurrent Portal: ${o.portal},1`, `\tPersistent Portal: ${o.portal},1`] : ['']),
    '\t\t**********',
    '\t\tInterface:',
    '\t\t**********',
    '\t\tIface Name: default',
    '\t\tIface Transport: tcp',
    '\t\tIface Initiatorname: iqn.1993-08.org.debian:01:6f3c2a1b9d0e',
    '\t\tIface IPaddress: 192.0.2.21',
    '\t\tIface HWaddress: default',
    '\t\tIface Netdev: default',
    `\t\tSID: ${o.sid}`,
    '\t\tiSCSI Connection State: LOGGED IN',
    `\t\tiSCSI Session State: ${o.state ?? 'LOGGED_IN'}`,
    '\t\tInternal iscsid Session State: NO CHANGE',
    '\t\t*********',
    '\t\tTimeouts:',
    '\t\t*********',
    '\t\tRecovery Timeout: 120',
    '\t\tTarget Reset Timeout: 30',
    '\t\tLUN reset Timeout: 30',
    '\t\tAbort Timeout: 15',
    '\t\t*****',
    '\t\tCHAP:',
    '\t\t*****',
    '\t\tusername: <empty>',
    '\t\tpassword: ********',
    '\t\tusername_in: <empty>',
    '\t\tpassword_in: ********',
    '\t\t************************',
    '\t\tNegotiated iSCSI params:',
    '\t\t************************',
    '\t\tHeaderDigest: None',
    '\t\tDataDigest: None',
    '\t\tMaxRecvDataSegmentLength: 262144',
    '\t\tMaxXmitDataSegmentLength: 262144',
    '\t\tFirstBurstLength: 65536',
    '\t\tMaxBurstLength: 262144',
    '\t\tImmediateData: Yes',
    '\t\tInitialR2T: Yes',
    '\t\tMaxOutstandingR2T: 1',
    '\t\t************************',
    '\t\tAttached SCSI devices:',
    '\t\t************************',
    `\t\tHost Number: ${o.host}\tState: running`,
    ...o.luns.flatMap(([lun, disk]) => [
      `\t\tscsi${o.host} Channel 00 Id 0 Lun: ${lun}`,
      ...(disk ? [`\t\t\tAttached scsi disk ${disk}\t\tState: running`] : []),
    ]),
  ].join('\n');

const HEADER = 'iSCSI Transport Class version 2.0-870\nversion 2.1.8\n';

// Two targets: tgtd's LUN 0 is the controller (no disk), LUN 1 the repository disk.
const TWO_TARGETS =
  HEADER +
  [
    'Target: iqn.2003-01.org.example.repo:vg0 (non-flash)',
    session({ portal: '192.0.2.10:3260', sid: 1, host: 2, luns: [[0], [1, 'sdb']] }),
    'Target: iqn.2003-01.org.example.scratch:disk2 (non-flash)',
    session({ portal: '192.0.2.11:3260', sid: 2, state: 'FAILED', host: 3, luns: [[0], [1, 'sdc'], [2, 'sdd']] }),
  ].join('\n') +
  '\n';

describe('parseSessions', () => {
  it('reads two targets with their portal, SID, state and disks', () => {
    expect(iscsi.parseSessions(TWO_TARGETS)).toEqual([
      {
        id: 1,
        portal: '192.0.2.10:3260',
        iqn: 'iqn.2003-01.org.example.repo:vg0',
        state: 'LOGGED_IN',
        disks: [{ lun: 1, device: '/dev/sdb', state: 'running' }],
      },
      {
        id: 2,
        portal: '192.0.2.11:3260',
        iqn: 'iqn.2003-01.org.example.scratch:disk2',
        state: 'FAILED',
        disks: [
          { lun: 1, device: '/dev/sdc', state: 'running' },
          { lun: 2, device: '/dev/sdd', state: 'running' },
        ],
      },
    ]);
  });

  it('reads a target without the (non-flash) suffix of older versions, and an IPv6 portal', () => {
    const s = session({ portal: '[2001:db8::10]:3260', sid: 5, host: 4, luns: [[1, 'sde']] });
    const out = `${HEADER}Target: iqn.2003-01.org.example.repo:vg0\n${s}\n`;
    expect(iscsi.parseSessions(out)).toEqual([
      {
        id: 5,
        portal: '[2001:db8::10]:3260',
        iqn: 'iqn.2003-01.org.example.repo:vg0',
        state: 'LOGGED_IN',
        disks: [{ lun: 1, device: '/dev/sde', state: 'running' }],
      },
    ]);
  });

  // iscsiadm prints "Target:" once per target, then one "Current Portal:" block per portal
  // (and a blank line instead when a second session uses the same portal).
  it('splits two portals of one target into two sessions, each with its own portal and disk', () => {
    const out = [
      HEADER + 'Target: iqn.2003-01.org.example.repo:vg0 (non-flash)',
      session({ portal: '192.0.2.10:3260', sid: 1, host: 2, luns: [[1, 'sdb']] }),
      session({ portal: '198.51.100.10:3260', sid: 2, host: 3, luns: [[1, 'sdc']] }),
      session({ sid: 3, host: 4, luns: [[1, 'sdd']] }),
    ].join('\n');
    expect(iscsi.parseSessions(out).map((s) => [s.id, s.portal, s.iqn, s.disks.map((d) => d.device)])).toEqual([
      [1, '192.0.2.10:3260', 'iqn.2003-01.org.example.repo:vg0', ['/dev/sdb']],
      [2, '198.51.100.10:3260', 'iqn.2003-01.org.example.repo:vg0', ['/dev/sdc']],
      [3, '198.51.100.10:3260', 'iqn.2003-01.org.example.repo:vg0', ['/dev/sdd']],
    ]);
  });

  it('reads a session whose LUN has no disk yet as a session without disks', () => {
    const s = session({ portal: '192.0.2.10:3260', sid: 1, host: 2, luns: [[0], [1]] });
    const out = `${HEADER}Target: iqn.2003-01.org.example.repo:vg0 (non-flash)\n${s}\n`;
    expect(iscsi.parseSessions(out)).toMatchObject([{ id: 1, disks: [] }]);
  });

  it('reads no sessions from empty output or the bare header', () => {
    expect(iscsi.parseSessions('')).toEqual([]);
    expect(iscsi.parseSessions(HEADER)).toEqual([]);
  });
});

describe('iscsiadm requests', () => {
  const IQN = 'iqn.2003-01.org.example.repo:vg0';
  const P = '192.0.2.10:3260';
  it.each([
    [iscsi.sessionsReq(), ['-m', 'session', '-P', '3'], 'read'],
    [iscsi.nodeShowReq(IQN, P), ['-m', 'node', '-T', IQN, '-p', P], 'read'],
    [iscsi.nodeNewReq(IQN, P), ['-m', 'node', '-o', 'new', '-T', IQN, '-p', P], 'write'],
    [
      iscsi.nodeUpdateReq(IQN, P, 'node.startup', 'automatic'),
      ['-m', 'node', '-T', IQN, '-p', P, '-o', 'update', '-n', 'node.startup', '-v', 'automatic'],
      'write',
    ],
    [iscsi.nodeDeleteReq(IQN, P), ['-m', 'node', '-o', 'delete', '-T', IQN, '-p', P], 'write'],
    [iscsi.loginReq(IQN, P), ['-m', 'node', '-T', IQN, '-p', P, '--login'], 'write'],
    [iscsi.logoutReq(IQN, P), ['-m', 'node', '-T', IQN, '-p', P, '--logout'], 'write'],
    [iscsi.rescanReq(IQN, P), ['-m', 'node', '-T', IQN, '-p', P, '--rescan'], 'read'],
  ])('%#: exact argv and tag', (req, args, kind) => {
    expect(req.argv).toEqual(['iscsiadm', ...args]);
    expect(req).toMatchObject({ kind, root: true, timeout: 'iscsi', allowFailure: true });
  });

  it('byPathLink is the link udev makes for the LUN', () => {
    expect(iscsi.byPathLink(P, IQN)).toBe(
      '/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2003-01.org.example.repo:vg0-lun-1',
    );
    expect(iscsi.byPathLink(P, IQN, 3)).toBe(
      '/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2003-01.org.example.repo:vg0-lun-3',
    );
  });
});
