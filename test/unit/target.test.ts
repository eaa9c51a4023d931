import { describe, expect, it } from 'vitest';
import { session } from '../../src/core/node.js';
import {
  aclAdd,
  createTarget,
  deleteTarget,
  setChap,
  storeName,
  validateChap,
  type BackendChoice,
  type TargetSession,
} from '../../src/core/target.js';
import type { Runner } from '../../src/exec/types.js';
import { EXIT } from '../../src/exec/errors.js';
import { recorder, rejectionOf, thrownBy } from './support.js';

const ts = (runner: Runner, backend: BackendChoice) => session<TargetSession>({ runner, backend });

// SYNTHETIC unless marked REAL: configfs listings and tgtadm output in the shapes of Linux 6.1 LIO and tgt 1.0.85.

const IQN = 'iqn.2003-01.org.example.cowstack:lio1';
const NODE1 = 'iqn.2003-01.org.example.node1:initiator';
const CFG = '/sys/kernel/config/target';
const TPG = `${CFG}/iscsi/${IQN}/tpgt_1`;
const STORE = storeName(IQN);
const R = { kind: 'read' as const };
const W = { kind: 'write' as const };
const SECRET = 'correct-horse-battery';

const ls = (dir: string) => ['ls', '-1', '-A', '--', dir];
const cat = (file: string) => ['cat', '--', file];

/** The reads of `resolveBackend('lio')`, then `readTarget` of a target that does not exist. */
function lioAbsent(r: ReturnType<typeof recorder>) {
  return r
    .expect(['test', '-x', '/usr/bin/targetcli'], R)
    .expect(ls(`${CFG}/iscsi`), { ...R, stdout: 'discovery_auth\n' });
}

/** `readTarget` of IQN exporting /dev/vda as LUN 1, with these ACLs and sessions. */
function lioPresent(r: ReturnType<typeof recorder>, acls: string[] = [], sessions: string[] = [], auth = false) {
  r.expect(['test', '-x', '/usr/bin/targetcli'], R)
    .expect(ls(`${CFG}/iscsi`), { ...R, stdout: `discovery_auth\n${IQN}\n` })
    .expect(ls(`${CFG}/core`), { ...R, stdout: 'alua\niblock_0\n' })
    .expect(ls(`${CFG}/core/iblock_0`), { ...R, stdout: `hba_info\nhba_mode\n${STORE}\n` })
    .expect(cat(`${CFG}/core/iblock_0/${STORE}/udev_path`), { ...R, stdout: '/dev/vda\n' })
    .expect(ls(`${TPG}/lun`), { ...R, stdout: 'lun_1\n' })
    .expect(['find', `${TPG}/lun/lun_1`, '-maxdepth', '1', '-type', 'l', '-printf', '%l\n'], {
      ...R,
      stdout: `../../../../../../target/core/iblock_0/${STORE}\n`,
    })
    .expect(ls(`${TPG}/acls`), { ...R, stdout: acls.map((a) => `${a}\n`).join('') });
  for (const a of acls) {
    r.expect(cat(`${TPG}/acls/${a}/info`), {
      ...R,
      stdout: sessions.includes(a)
        ? `InitiatorName: ${a}\nLIO Session ID: 1   ISID: 0x23d000000   TSIH: 1  SessionType: Normal\n`
        : 'No active iSCSI Session for Initiator Endpoint: x\n',
    });
  }
  return r
    .expect(ls(`${TPG}/np`), { ...R, stdout: '0.0.0.0:3260\n' })
    .expect(cat(`${TPG}/attrib/authentication`), { ...R, stdout: auth ? '1\n' : '0\n' });
}

describe('target create (LIO)', () => {
  it('makes a block backstore named for the IQN, the target, LUN 1 and ACL-only access', async () => {
    const r = lioAbsent(recorder())
      .expect(['test', '-x', '/usr/bin/targetcli'], R)
      .expect(ls(`${CFG}/core`), { ...R, stdout: 'alua\n' })
      .expect(['targetcli', '/backstores/block', 'create', `name=${STORE}`, 'dev=/dev/vda'], W)
      .expect(['targetcli', '/iscsi', 'create', IQN], W)
      .expect(['targetcli', `/iscsi/${IQN}/tpg1/luns`, 'create', `/backstores/block/${STORE}`, 'lun=1'], W)
      .expect(
        [
          'targetcli',
          `/iscsi/${IQN}/tpg1`,
          'set',
          'attribute',
          'authentication=0',
          'generate_node_acls=0',
          'demo_mode_write_protect=1',
        ],
        W,
      );
    lioPresent(r);
    const out = await createTarget(ts(r, 'lio'), IQN, { device: '/dev/vda' });
    expect(out).toMatchObject({
      action: 'created',
      backend: 'lio',
      target: { luns: [{ lun: 1, backing: '/dev/vda', store: 'block', direct: true }], acls: [], chap: false },
    });
    r.verify();
  });

  it('undoes the backstore and the target when the LUN cannot be made', async () => {
    const r = lioAbsent(recorder())
      .expect(['test', '-x', '/usr/bin/targetcli'], R)
      .expect(ls(`${CFG}/core`), { ...R, stdout: '' })
      .expect(['targetcli', '/backstores/block', 'create', `name=${STORE}`, 'dev=/dev/vda'], W)
      .expect(['targetcli', '/iscsi', 'create', IQN], W)
      .expect(['targetcli', `/iscsi/${IQN}/tpg1/luns`, 'create', `/backstores/block/${STORE}`, 'lun=1'], {
        ...W,
        exitCode: 1,
        stderr: 'No such path /backstores/block\n',
      })
      .expect(['targetcli', '/iscsi', 'delete', IQN], W)
      .expect(['targetcli', '/backstores/block', 'delete', STORE], W);
    await expect(createTarget(ts(r, 'lio'), IQN, { device: '/dev/vda' })).rejects.toThrow();
    r.verify();
  });

  it('is a no-op when the target already exports that device, and refuses another device', async () => {
    const r = lioPresent(recorder());
    expect((await createTarget(ts(r, 'lio'), IQN, { device: '/dev/vda' })).action).toBe('none');
    r.verify();
    const r2 = lioPresent(recorder());
    const e = await rejectionOf(createTarget(ts(r2, 'lio'), IQN, { device: '/dev/vdb' }), EXIT.REFUSED);
    expect(e.message).toContain('exports /dev/vda, not /dev/vdb');
    r2.verify();
  });

  it('validates the IQN, the device and the size before running anything', async () => {
    const r = recorder();
    expect(
      (await rejectionOf(createTarget(ts(r, 'lio'), 'iqn.2026-13.org.example:x', { device: '/dev/vda' }), EXIT.USAGE))
        .message,
    ).toContain('"iqn.2026-13.org.example:x"');
    expect(
      (await rejectionOf(createTarget(ts(r, 'lio'), IQN, { device: '/dev/../etc/shadow' }), EXIT.USAGE)).message,
    ).toContain('/dev/../etc/shadow');
    expect((await rejectionOf(createTarget(ts(r, 'lio'), IQN, { file: '/srv/x.img' }), EXIT.USAGE)).message).toContain(
      '--size',
    );
    expect(
      (await rejectionOf(createTarget(ts(r, 'lio'), IQN, { file: 'rel/x.img', size: '1G' }), EXIT.USAGE)).message,
    ).toContain('rel/x.img');
    expect((await rejectionOf(createTarget(ts(r, 'lio'), IQN, {}), EXIT.USAGE)).message).toContain('--device');
    r.verify();
  });
});

describe('target ACLs, CHAP and delete (LIO)', () => {
  it('adds an ACL once; a second add is a no-op', async () => {
    const r = lioPresent(recorder()).expect(['targetcli', `/iscsi/${IQN}/tpg1/acls`, 'create', NODE1], W);
    lioPresent(r, [NODE1]);
    expect((await aclAdd(ts(r, 'lio'), IQN, NODE1)).target?.acls).toEqual([NODE1]);
    r.verify();
    const r2 = lioPresent(recorder(), [NODE1]);
    expect((await aclAdd(ts(r2, 'lio'), IQN, NODE1)).action).toBe('none');
    r2.verify();
  });

  it('writes the CHAP user and secret into each ACL on stdin (tee, echo discarded), never in an argv', async () => {
    const r = lioPresent(recorder(), [NODE1])
      .expect(['tee', `${TPG}/acls/${NODE1}/auth/userid`], W)
      .expect(['tee', `${TPG}/acls/${NODE1}/auth/password`], W)
      .expect(
        [
          'targetcli',
          `/iscsi/${IQN}/tpg1`,
          'set',
          'attribute',
          'authentication=1',
          'generate_node_acls=0',
          'demo_mode_write_protect=1',
        ],
        W,
      );
    lioPresent(r, [NODE1], [], true);
    const out = await setChap(ts(r, 'lio'), IQN, 'cowstack', SECRET);
    expect(out.target?.chap).toBe(true);
    const tees = r.calls.filter((c) => c.argv[0] === 'tee');
    expect(tees.map((c) => [c.input, c.stdoutFile])).toEqual([
      ['cowstack', '/dev/null'],
      [SECRET, '/dev/null'],
    ]);
    expect(r.calls.flatMap((c) => c.argv).join(' ')).not.toContain(SECRET);
    expect(JSON.stringify(out)).not.toContain(SECRET);
    r.verify();
  });

  it('refuses CHAP on a target with no ACL, and a weak or odd secret without echoing it', async () => {
    const r = lioPresent(recorder());
    expect((await rejectionOf(setChap(ts(r, 'lio'), IQN, 'cowstack', SECRET), EXIT.REFUSED)).hint).toContain(
      'target acl add',
    );
    r.verify();
    for (const bad of ['short', 'has a space in it', 'quote"inside-it-x']) {
      const e = thrownBy(() => validateChap('cowstack', bad), EXIT.USAGE);
      expect(e.message).not.toContain(bad);
    }
    expect(thrownBy(() => validateChap('bad user', SECRET), EXIT.USAGE).message).toContain('"bad user"');
  });

  it('refuses to delete a target that has sessions unless forced; deletes target and backstore otherwise', async () => {
    const r = lioPresent(recorder(), [NODE1], [NODE1]);
    const e = await rejectionOf(deleteTarget(ts(r, 'lio'), IQN), EXIT.REFUSED);
    expect(e.message).toContain(NODE1);
    r.verify();
    const r2 = lioPresent(recorder(), [NODE1])
      .expect(['targetcli', '/iscsi', 'delete', IQN], W)
      .expect(['targetcli', '/backstores/block', 'delete', STORE], W);
    expect((await deleteTarget(ts(r2, 'lio'), IQN)).action).toBe('deleted');
    r2.verify();
  });
});

describe('tgtadm --op show (REAL capture, tgt 1.0.85 in the testbed server)', () => {
  it('finds the target, its disk LUN with O_DIRECT, the ACL and the logged-in initiator', async () => {
    const { parseShow } = await import('../../src/tools/tgt.js');
    const text = (await import('node:fs')).readFileSync(
      new URL('../fixtures/tgt-1.0.85-bookworm/tgtadm-show-target.txt', import.meta.url),
      'utf8',
    );
    const [t, ...rest] = parseShow(text);
    expect(rest).toEqual([]);
    expect(t).toEqual({
      tid: 1,
      iqn: 'iqn.2003-01.org.example.cowstack:cap',
      luns: [
        { lun: 0, type: 'controller', path: '', flags: [], sizeBytes: 0 },
        { lun: 1, type: 'disk', path: '/dev/vda', flags: ['direct'], sizeBytes: 2147_000_000 },
      ],
      acls: [NODE1],
      accounts: [],
      sessions: [NODE1],
    });
  });
});
