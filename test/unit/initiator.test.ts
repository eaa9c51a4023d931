import { describe, expect, it } from 'vitest';
import { session } from '../../src/core/node.js';
import { discover, login, logout, recordValue, sessions } from '../../src/core/initiator.js';
import { setRecordValues } from '../../src/tools/iscsiadm.js';
import { CommandError, EXIT } from '../../src/exec/errors.js';
import { capture, recorder, rejectionOf } from './support.js';

// SYNTHETIC unless marked REAL: iscsiadm, realpath and udevadm outputs are hand-written in open-iscsi 2.1.8's formats.

const IQN = 'iqn.2003-01.org.example.repo:vg0';
const PORTAL = '192.0.2.10:3260';
const LINK = `/dev/disk/by-path/ip-${PORTAL}-iscsi-${IQN}-lun-1`;

const SESSIONS = ['iscsiadm', '-m', 'session', '-P', '3'];
const NODE_SHOW = ['iscsiadm', '-m', 'node', '-T', IQN, '-p', PORTAL];
const NODE_NEW = ['iscsiadm', '-m', 'node', '-o', 'new', '-T', IQN, '-p', PORTAL];
const NODE_DELETE = ['iscsiadm', '-m', 'node', '-o', 'delete', '-T', IQN, '-p', PORTAL];
const LOGIN = ['iscsiadm', '-m', 'node', '-T', IQN, '-p', PORTAL, '--login'];
const LOGOUT = ['iscsiadm', '-m', 'node', '-T', IQN, '-p', PORTAL, '--logout'];
const DISCOVER = ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', PORTAL, '-o', 'nonpersistent'];

// SYNTHETIC: `iscsiadm -m session -P 3` (open-iscsi 2.1.8 layout, abridged), one session to the repository.
// The REAL capture (iscsiadm-session-P3.txt) is replayed in the first login test and in fixtures.test.ts.
const LOGGED_IN = `iSCSI Transport Class version 2.0-870
version 2.1.8
Target: ${IQN} (non-flash)
\tCurrent Portal: ${PORTAL},1
\tPersistent Portal: ${PORTAL},1
\t\t**********
\t\tInterface:
\t\t**********
\t\tIface Name: default
\t\tIface Transport: tcp
\t\tIface Initiatorname: iqn.1993-08.org.debian:01:6f3c2a1b9d0e
\t\tIface IPaddress: 192.0.2.21
\t\tIface HWaddress: default
\t\tIface Netdev: default
\t\tSID: 1
\t\tiSCSI Connection State: LOGGED IN
\t\tiSCSI Session State: LOGGED_IN
\t\tInternal iscsid Session State: NO CHANGE
\t\t************************
\t\tAttached SCSI devices:
\t\t************************
\t\tHost Number: 2\tState: running
\t\tscsi2 Channel 00 Id 0 Lun: 0
\t\tscsi2 Channel 00 Id 0 Lun: 1
\t\t\tAttached scsi disk sdb\t\tState: running
`;

const NO_SESSIONS = { kind: 'read' as const, exitCode: 21, stderr: 'iscsiadm: No active sessions.\n' };

describe('login', () => {
  it('reuses the REAL captured testbed session (portal with a non-default port)', async () => {
    const iqn = 'iqn.2003-01.org.example.cowstack:repo';
    const link = `/dev/disk/by-path/ip-10.0.2.2:36143-iscsi-${iqn}-lun-1`;
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: capture('iscsiadm-session-P3.txt') })
      .expect(['realpath', '-e', '--', link], { kind: 'read', stdout: '/dev/sda\n' });
    expect(await login(session({ runner: r }), '10.0.2.2:36143', iqn)).toEqual({
      portal: '10.0.2.2:36143',
      iqn,
      lun: 1,
      device: link,
      disk: '/dev/sda',
      alreadyLoggedIn: true,
    });
    r.verify();
  });

  it('reuses an existing session: no login, only the wait for the disk', async () => {
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: LOGGED_IN })
      .expect(['realpath', '-e', '--', LINK], { kind: 'read', stdout: '/dev/sdb\n' });
    expect(await login(session({ runner: r }), '192.0.2.10', IQN)).toEqual({
      portal: PORTAL,
      iqn: IQN,
      lun: 1,
      device: LINK,
      disk: '/dev/sdb',
      alreadyLoggedIn: true,
    });
    r.verify();
  });

  it('logs in fresh: creates the node record, logs in, waits for the by-path link', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21, stderr: 'iscsiadm: No records found\n' })
      .expect(DISCOVER, { kind: 'read', stdout: `10.0.2.15:3260,1 ${IQN}\n` })
      .expect(NODE_NEW, {
        kind: 'write',
        stdout: `New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] 192.0.2.10,3260,-1 ${IQN}] added\n`,
      })
      .expect(LOGIN, {
        kind: 'write',
        stdout:
          `Logging in to [iface: default, target: ${IQN}, portal: 192.0.2.10,3260]\n` +
          `Login to [iface: default, target: ${IQN}, portal: 192.0.2.10,3260] successful.\n`,
      })
      .expect(['realpath', '-e', '--', LINK], { kind: 'read', stdout: '/dev/sdb\n' });
    expect(await login(session({ runner: r }), '192.0.2.10:3260', IQN)).toEqual({
      portal: PORTAL,
      iqn: IQN,
      lun: 1,
      device: LINK,
      disk: '/dev/sdb',
      alreadyLoggedIn: false,
    });
    expect(r.calls.filter((c) => c.argv[0] === 'iscsiadm').every((c) => c.root === true && c.timeout === 'iscsi')).toBe(
      true,
    );
    r.verify();
  });

  it('keeps an existing node record and treats "session exists" (15) as success', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', stdout: `# BEGIN RECORD 2.1.8\nnode.name = ${IQN}\n# END RECORD\n` })
      .expect(LOGIN, {
        kind: 'write',
        exitCode: 15,
        stderr: 'iscsiadm: default: 1 session requested, but 1 already present.\n',
      })
      .expect(['realpath', '-e', '--', LINK], { kind: 'read', stdout: '/dev/sdb\n' });
    expect((await login(session({ runner: r }), PORTAL, IQN)).disk).toBe('/dev/sdb');
    r.verify();
  });

  it('waits for the link with udevadm settle until it appears', async () => {
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: LOGGED_IN })
      .expect(['realpath', '-e', '--', LINK.replace('lun-1', 'lun-2')], {
        kind: 'read',
        exitCode: 1,
        stderr: 'realpath: No such file or directory\n',
      })
      .expect(['udevadm', 'settle', '--timeout=5'], { kind: 'read' })
      .expect(['realpath', '-e', '--', LINK.replace('lun-1', 'lun-2')], { kind: 'read', stdout: '/dev/sdc\n' });
    expect(await login(session({ runner: r }), PORTAL, IQN, { lun: 2 })).toMatchObject({ lun: 2, disk: '/dev/sdc' });
    r.verify();
  });

  it('dry run: plans the login and does not wait for a disk', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', stdout: 'node.name = x\n' })
      .expect(LOGIN, { kind: 'write' });
    expect(await login(session({ runner: r, dryRun: true }), PORTAL, IQN)).toEqual({
      portal: PORTAL,
      iqn: IQN,
      lun: 1,
      device: LINK,
      disk: '',
      alreadyLoggedIn: false,
    });
    r.verify();
  });

  it('an authorization failure (24) is PERMISSION (8), and the node record it created is deleted', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21, stderr: 'iscsiadm: No records found\n' })
      .expect(DISCOVER, { kind: 'read', stdout: `10.0.2.15:3260,1 ${IQN}\n` })
      .expect(NODE_NEW, { kind: 'write' })
      .expect(LOGIN, {
        kind: 'write',
        exitCode: 24,
        stderr:
          `iscsiadm: Could not login to [iface: default, target: ${IQN}, portal: 192.0.2.10,3260].\n` +
          'iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n' +
          'iscsiadm: Could not log into all portals\n',
      })
      .expect(NODE_DELETE, { kind: 'write' });
    const e = await rejectionOf(login(session({ runner: r }), PORTAL, IQN), EXIT.PERMISSION);
    expect(e.message).toBe(`the target ${IQN} at ${PORTAL} refused this initiator (authorization failure)`);
    expect(e.cause).toBeInstanceOf(CommandError);
    expect(e.data).toMatchObject({ argv: LOGIN, exitCode: 24 });
    r.verify();
  });

  it('a failed login keeps a node record that existed before', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', stdout: 'node.name = x\n' })
      .expect(LOGIN, {
        kind: 'write',
        exitCode: 24,
        stderr: 'iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n',
      });
    await rejectionOf(login(session({ runner: r }), PORTAL, IQN), EXIT.PERMISSION);
    r.verify();
  });

  it.each([
    [8, 'iscsiadm: connection login retries (reopen_max) 5 exceeded\n', EXIT.UNREACHABLE],
    [19, 'iscsiadm: Could not login to [...]: target not found\n', EXIT.NOT_FOUND],
    [4, 'iscsiadm: initiator reported error (4 - encountered connection failure)\n', EXIT.FAILED],
  ] as const)('maps login exit %s to exit code %s', async (code, stderr, exitCode) => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21 })
      .expect(DISCOVER, { kind: 'read', stdout: `10.0.2.15:3260,1 ${IQN}\n` })
      .expect(NODE_NEW, { kind: 'write' })
      .expect(LOGIN, { kind: 'write', exitCode: code, stderr })
      .expect(NODE_DELETE, { kind: 'write' });
    await rejectionOf(login(session({ runner: r }), PORTAL, IQN), exitCode);
    r.verify();
  });

  it('a portal that refuses connections fails in the discovery probe (9), before any record exists', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21 })
      // REAL: what iscsiadm 2.1.8 printed in the testbed for a closed port, after ~5 s.
      .expect(DISCOVER, {
        kind: 'read',
        exitCode: 11,
        stderr:
          'iscsiadm: cannot make connection to 10.0.2.2: Connection refused\n' +
          'iscsiadm: connection login retries (reopen_max) 5 exceeded\n' +
          'iscsiadm: Could not perform SendTargets discovery: iSCSI PDU timed out\n',
      });
    expect((await rejectionOf(login(session({ runner: r }), PORTAL, IQN), EXIT.UNREACHABLE)).message).toContain(PORTAL);
    r.verify();
  });

  it('an IQN the portal does not offer is not found (7), before any record exists', async () => {
    const r = recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21 })
      .expect(DISCOVER, { kind: 'read', stdout: '10.0.2.15:3260,1 iqn.2003-01.org.example.repo:other\n' });
    expect((await rejectionOf(login(session({ runner: r }), PORTAL, IQN), EXIT.NOT_FOUND)).message).toContain(
      `does not offer ${IQN}`,
    );
    r.verify();
  });

  it('rejects a bad portal or IQN (2) before running anything', async () => {
    const r = recorder();
    expect((await rejectionOf(login(session({ runner: r }), 'repo:99999', IQN), EXIT.USAGE)).message).toContain(
      '"repo:99999"',
    );
    expect(
      (await rejectionOf(login(session({ runner: r }), PORTAL, 'iqn.2003-13.org.example:x'), EXIT.USAGE)).message,
    ).toContain('"iqn.2003-13.org.example:x"');
    expect(r.calls).toEqual([]);
    r.verify();
  });

  it('sessions: an iscsiadm failure other than "no sessions" is an error', async () => {
    const r = recorder().expect(SESSIONS, {
      kind: 'read',
      exitCode: 12,
      stderr: 'iscsiadm: Could not connect to iscsid\n',
    });
    await expect(sessions(r)).rejects.toBeInstanceOf(CommandError);
    r.verify();
  });
});

describe('logout', () => {
  it('refuses (6) while something sits on the disk, naming it', async () => {
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: LOGGED_IN })
      .expect(['realpath', '-e', '--', '/dev/sdb'], { kind: 'read', stdout: '/dev/sdb\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/sdb/holders'], { kind: 'read', stdout: 'dm-0\n' })
      .expect(['cat', '--', '/sys/class/block/dm-0/dm/name'], { kind: 'read', stdout: 'repo-lvmlock\n' });
    const e = await rejectionOf(logout(session({ runner: r }), PORTAL, IQN), EXIT.REFUSED);
    expect(e.message).toBe(`the iSCSI disk of ${IQN} is in use by repo-lvmlock; refusing to log out`);
    expect(e.data).toEqual({ holders: [{ kernel: 'dm-0', name: 'repo-lvmlock' }] });
    r.verify();
  });

  it('logs out when nothing holds the disk, and forgets the record on request', async () => {
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: LOGGED_IN })
      .expect(['realpath', '-e', '--', '/dev/sdb'], { kind: 'read', stdout: '/dev/sdb\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/sdb/holders'], { kind: 'read', stdout: '' })
      .expect(LOGOUT, { kind: 'write' })
      .expect(NODE_DELETE, { kind: 'write' });
    expect(await logout(session({ runner: r }), PORTAL, IQN, { forget: true })).toEqual({
      portal: PORTAL,
      iqn: IQN,
      action: 'logged-out',
      forgotten: true,
    });
    r.verify();
  });

  it('with --force logs out despite holders', async () => {
    const r = recorder()
      .expect(SESSIONS, { kind: 'read', stdout: LOGGED_IN })
      .expect(['realpath', '-e', '--', '/dev/sdb'], { kind: 'read', stdout: '/dev/sdb\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/sdb/holders'], { kind: 'read', stdout: 'dm-0\n' })
      .expect(['cat', '--', '/sys/class/block/dm-0/dm/name'], { kind: 'read', stdout: 'repo-lvmlock\n' })
      .expect(LOGOUT, { kind: 'write' });
    expect((await logout(session({ runner: r }), PORTAL, IQN, { force: true })).action).toBe('logged-out');
    r.verify();
  });

  it('does nothing without a session', async () => {
    const r = recorder().expect(SESSIONS, NO_SESSIONS);
    expect(await logout(session({ runner: r }), '192.0.2.10', IQN)).toEqual({
      portal: PORTAL,
      iqn: IQN,
      action: 'none',
      forgotten: false,
    });
    r.verify();
  });
});

describe('login with CHAP and node.startup', () => {
  // REAL layout (open-iscsi 2.1.8 in the testbed): `-o new` without a TPGT writes the file ADDR,PORT.
  const RECORD = `/etc/iscsi/nodes/${IQN}/192.0.2.10,3260`;
  // SYNTHETIC: an open-iscsi 2.1.8 node record as `iscsiadm -o new` writes it (abridged).
  const RECORD_TEXT =
    `# BEGIN RECORD 2.1.8\nnode.name = ${IQN}\nnode.tpgt = -1\nnode.startup = manual\n` +
    'node.session.auth.authmethod = CHAP\nnode.session.auth.username = cowstack\nnode.conn[0].address = 192.0.2.10\n' +
    '# END RECORD\n';
  const SECRET = 'correct-horse-battery';
  /** A first login with CHAP, up to the login itself: probe, record, method and user, secret. */
  const freshChapLogin = () =>
    recorder()
      .expect(SESSIONS, NO_SESSIONS)
      .expect(NODE_SHOW, { kind: 'read', exitCode: 21 })
      .expect(DISCOVER, { kind: 'read', stdout: `10.0.2.15:3260,1 ${IQN}\n` })
      .expect(NODE_NEW, { kind: 'write' })
      .expect([...NODE_SHOW, '-o', 'update', '-n', 'node.session.auth.authmethod', '-v', 'CHAP'], { kind: 'write' })
      .expect([...NODE_SHOW, '-o', 'update', '-n', 'node.session.auth.username', '-v', 'cowstack'], { kind: 'write' })
      .expect(['cat', '--', RECORD], { kind: 'read', stdout: RECORD_TEXT })
      .expect(['install', '-m', '0600', '/proc/self/fd/0', RECORD], { kind: 'write' });

  it('puts the secret into the record file on stdin, never into an argv, then logs in and sets startup', async () => {
    const r = freshChapLogin()
      .expect(LOGIN, { kind: 'write' })
      .expect(NODE_SHOW, { kind: 'read', stdout: RECORD_TEXT })
      .expect([...NODE_SHOW, '-o', 'update', '-n', 'node.startup', '-v', 'automatic'], { kind: 'write' })
      .expect(['realpath', '-e', '--', LINK], { kind: 'read', stdout: '/dev/sdb\n' });
    const out = await login(session({ runner: r }), PORTAL, IQN, {
      chap: { user: 'cowstack', secret: SECRET },
      startup: 'automatic',
    });
    expect(out.disk).toBe('/dev/sdb');
    const write = r.calls.find((c) => c.argv[0] === 'install')!;
    expect(String(write.input)).toContain(`node.session.auth.password = ${SECRET}\n# END RECORD`);
    expect(String(write.input)).toContain('node.session.auth.username = cowstack');
    expect(r.calls.flatMap((c) => c.argv).join(' ')).not.toContain(SECRET);
    r.verify();
  });

  it('a refused CHAP login is a permission error and removes the record it made', async () => {
    const r = freshChapLogin()
      .expect(LOGIN, {
        kind: 'write',
        exitCode: 24,
        stderr:
          'iscsiadm: Login failed to authenticate with target\n' +
          'iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n',
      })
      .expect(NODE_DELETE, { kind: 'write' });
    const e = await rejectionOf(
      login(session({ runner: r }), PORTAL, IQN, { chap: { user: 'cowstack', secret: SECRET } }),
      EXIT.PERMISSION,
    );
    expect(e.message).toContain('refused this initiator');
    r.verify();
  });

  it('rejects a weak secret before running anything', async () => {
    const r = recorder();
    const e = await rejectionOf(
      login(session({ runner: r }), PORTAL, IQN, { chap: { user: 'cowstack', secret: 'short' } }),
      EXIT.USAGE,
    );
    expect(e.message).not.toContain('short');
    r.verify();
  });
});

describe('discover and records', () => {
  it('parses SendTargets answers and keeps the portal that answered', async () => {
    const r = recorder().expect(
      ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', PORTAL, '-o', 'nonpersistent'],
      {
        kind: 'read',
        stdout: `10.0.2.15:3260,1 ${IQN}\n[fe80::1]:3260,1 ${IQN}\n`,
      },
    );
    expect(await discover(session({ runner: r }), PORTAL)).toEqual([
      { iqn: IQN, announced: '10.0.2.15:3260', tpgt: 1, portal: PORTAL },
      { iqn: IQN, announced: '[fe80::1]:3260', tpgt: 1, portal: PORTAL },
    ]);
    r.verify();
  });

  it('sets record values in place or before the end marker', () => {
    const text = '# BEGIN RECORD 2.1.8\nnode.startup = manual\n# END RECORD\n';
    expect(setRecordValues(text, { 'node.startup': 'automatic', 'node.session.auth.password': 'x' })).toBe(
      '# BEGIN RECORD 2.1.8\nnode.startup = automatic\nnode.session.auth.password = x\n# END RECORD\n',
    );
    expect(recordValue('node.startup = automatic\nnode.tpgt = 1\n', 'node.startup')).toBe('automatic');
  });
});
