/**
 * The repository server: a third guest exports a LUN with LIO (kernel target) and then with
 * tgt; the two nodes attach it through qemu's loopback forward, with ACLs and CHAP. Data
 * written by one node through one backend is read back, byte for byte, by the other node
 * and through the other backend (the same device behind both).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TargetView } from '../../src/core/target.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { cowstack, type CliResult } from './cli.js';
import { MiB, pattern, sha256, writeAt } from './data.js';

let tb: Testbed;
const run = Date.now().toString(36).slice(-5);
const LIO_IQN = `iqn.2003-01.org.example.cowstack:lio-${run}`;
const TGT_IQN = `iqn.2003-01.org.example.cowstack:tgt-${run}`;
const SECRET = `chap-${run}-s3cret-42`;
const DATA = pattern(4 * MiB, 77);
const DATA_SHA = sha256(DATA);

const cs = (host: string, args: string[], input?: string): Promise<CliResult> =>
  cowstack(tb, ['--host', host, '--json', ...args], { input });
const ok = async (host: string, args: string[], input?: string) => {
  const r = await cs(host, args, input);
  expect(r.exitCode, `${host}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  expect(`${r.stdout}${r.stderr}`, 'the CHAP secret is never printed').not.toContain(SECRET);
  return r.json.result;
};
const node = (i: number) => tb.nodes[i - 1]!;

/** sha256 of the first 4 MiB of the LUN as a node sees it, read around its page cache. */
async function headSha(host: string, device: string): Promise<string> {
  const r = await tb.sh(host, `dd if=${device} bs=1M count=4 iflag=direct status=none | sha256sum`);
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout.split(/\s+/)[0]!;
}

async function nodeRecords(host: string): Promise<string> {
  return (await tb.ssh(host, ['iscsiadm', '-m', 'node'])).stdout;
}

beforeAll(async () => {
  tb = await attachMine();
  if (!tb.isRunning(tb.server.name)) await tb.boot(tb.server.name);
}, 300_000);

afterAll(async () => {
  for (const n of tb.nodes) {
    for (const iqn of [LIO_IQN, TGT_IQN])
      await cs(n.name, ['initiator', 'logout', tb.server.portal, iqn, '--forget', '--force']);
  }
  if (tb.isRunning(tb.server.name)) await tb.powerOff(tb.server.name);
}, 300_000);

describe('LIO on the repository server', () => {
  const S = () => tb.server.name;

  it('rejects a malformed IQN before touching anything, naming it and the rule', async () => {
    const r = await cs(S(), ['target', 'create', 'iqn.2026-13.org.example:x', '--device', '/dev/vda']);
    expect(r.exitCode).toBe(2);
    expect(r.json.message).toContain('"iqn.2026-13.org.example:x"');
    expect(r.json.hint).toContain('iqn.YYYY-MM');
  });

  it('exports a block device as LUN 1 without the target page cache; a re-run is a no-op', async () => {
    const created = await ok(S(), ['target', 'create', LIO_IQN, '--device', '/dev/vda', '--backend', 'lio']);
    expect(created).toMatchObject({ action: 'created', backend: 'lio' });
    expect(created.target).toMatchObject({
      iqn: LIO_IQN,
      acls: [],
      chap: false,
      luns: [{ lun: 1, backing: '/dev/vda', store: 'block', direct: true }],
    });
    expect((await ok(S(), ['target', 'create', LIO_IQN, '--device', '/dev/vda', '--backend', 'lio'])).action).toBe(
      'none',
    );
    const other = await cs(S(), [
      'target',
      'create',
      LIO_IQN,
      '--file',
      '/root/x.img',
      '--size',
      '64M',
      '--backend',
      'lio',
    ]);
    expect(other.exitCode, 'the same IQN on another backing store is refused').toBe(6);
    const list = await ok(S(), ['target', 'list', '--backend', 'lio']);
    expect(list.map((t: TargetView) => t.iqn)).toContain(LIO_IQN);
  });

  it('discovery from a node lists the target and the portal that answered', async () => {
    const found = await ok(node(1).name, ['initiator', 'discover', tb.server.portal]);
    expect(found).toContainEqual(expect.objectContaining({ iqn: LIO_IQN, portal: tb.server.portal }));
  });

  it('lets in only ACL members with the right CHAP secret; data crosses between the nodes', async () => {
    const [n1, n2] = [node(1), node(2)];
    await ok(S(), ['target', 'acl', 'add', LIO_IQN, n1.initiatorIqn, '--backend', 'lio']);
    const auth = await ok(
      S(),
      ['target', 'auth', LIO_IQN, '--chap', 'cowstack', '--secret-file', '-', '--backend', 'lio'],
      `${SECRET}\n`,
    );
    expect(auth.target).toMatchObject({ chap: true, acls: [n1.initiatorIqn] });
    // The secret is in LIO's ACL, and nowhere in what the target's config shows in argv form.
    expect(
      (
        await tb.ssh(S(), [
          'cat',
          `/sys/kernel/config/target/iscsi/${LIO_IQN}/tpgt_1/acls/${n1.initiatorIqn}/auth/password`,
        ])
      ).stdout.trim(),
    ).toBe(SECRET);

    const login = await ok(
      n1.name,
      ['initiator', 'login', tb.server.portal, LIO_IQN, '--chap-user', 'cowstack', '--secret-file', '-'],
      SECRET,
    );
    expect(login.device).toBe(`/dev/disk/by-path/ip-${tb.server.portal}-iscsi-${LIO_IQN}-lun-1`);
    const startup = await tb.ssh(n1.name, ['iscsiadm', '-m', 'node', '-T', LIO_IQN, '-p', tb.server.portal]);
    expect(startup.stdout).toMatch(/^node\.startup = automatic$/m);
    await writeAt(tb, n1.name, login.device, 0, DATA);
    expect(await headSha(n1.name, login.device)).toBe(DATA_SHA);

    // node2 is not in the ACL: refused, with the permission exit code, and no record left behind.
    const denied = await cs(
      n2.name,
      ['initiator', 'login', tb.server.portal, LIO_IQN, '--chap-user', 'cowstack', '--secret-file', '-'],
      SECRET,
    );
    expect(denied.exitCode, denied.stdout).toBe(8);
    expect(denied.json.message).toMatch(/refused this initiator/);
    expect(await nodeRecords(n2.name)).not.toContain(LIO_IQN);

    // In the ACL now (auth again: CHAP is per ACL), but with a wrong secret: refused the same way.
    await ok(S(), ['target', 'acl', 'add', LIO_IQN, n2.initiatorIqn, '--backend', 'lio']);
    await ok(S(), ['target', 'auth', LIO_IQN, '--chap', 'cowstack', '--backend', 'lio'], SECRET);
    const wrong = await cs(
      n2.name,
      ['initiator', 'login', tb.server.portal, LIO_IQN, '--chap-user', 'cowstack', '--secret-file', '-'],
      'not-the-secret-at-all',
    );
    expect(wrong.exitCode, wrong.stdout).toBe(8);
    const in2 = await ok(
      n2.name,
      ['initiator', 'login', tb.server.portal, LIO_IQN, '--chap-user', 'cowstack', '--secret-file', '-'],
      SECRET,
    );
    expect(await headSha(n2.name, in2.device), 'node2 reads what node1 wrote').toBe(DATA_SHA);

    const shown = await ok(S(), ['target', 'show', LIO_IQN, '--backend', 'lio']);
    expect(new Set(shown.sessions)).toEqual(new Set([n1.initiatorIqn, n2.initiatorIqn]));
  });

  it('refuses to delete a target with sessions or to revoke a logged-in node; saves the configuration', async () => {
    const del = await cs(S(), ['target', 'delete', LIO_IQN, '--backend', 'lio']);
    expect(del.exitCode).toBe(6);
    expect(del.json.message).toContain('has sessions');
    const revoke = await cs(S(), ['target', 'acl', 'rm', LIO_IQN, node(2).initiatorIqn, '--backend', 'lio']);
    expect(revoke.exitCode).toBe(6);
    const saved = await ok(S(), ['target', 'save', '--backend', 'lio']);
    expect(saved.file).toBe('/etc/rtslib-fb-target/saveconfig.json');
    const file = await tb.ssh(S(), ['grep', '-c', LIO_IQN, saved.file]);
    expect(Number(file.stdout.trim())).toBeGreaterThan(0);
  });

  it('reports a closed portal as unreachable and a wrong IQN as not found', async () => {
    const closed = await cs(node(1).name, ['initiator', 'login', '10.0.2.2:1', LIO_IQN, '--wait', '5']);
    expect(closed.exitCode, closed.stdout).toBe(9);
    const missing = await cs(node(1).name, ['initiator', 'login', tb.server.portal, `${LIO_IQN}-nope`, '--wait', '5']);
    expect(missing.exitCode, missing.stdout).toBe(7);
    expect(await nodeRecords(node(1).name)).not.toContain(`${LIO_IQN}-nope`);
  });

  it('logs out, revokes and deletes; the device keeps its data', async () => {
    for (const n of tb.nodes)
      expect((await ok(n.name, ['initiator', 'logout', tb.server.portal, LIO_IQN, '--forget'])).action).toBe(
        'logged-out',
      );
    expect((await ok(S(), ['target', 'acl', 'rm', LIO_IQN, node(2).initiatorIqn, '--backend', 'lio'])).action).toBe(
      'changed',
    );
    expect((await ok(S(), ['target', 'delete', LIO_IQN, '--backend', 'lio'])).action).toBe('deleted');
    expect((await ok(S(), ['target', 'delete', LIO_IQN, '--backend', 'lio'])).action).toBe('none');
    expect(await headSha(S(), '/dev/vda')).toBe(DATA_SHA);
  });
});

describe('tgt on the repository server', () => {
  const S = () => tb.server.name;

  it('tells the admin to start tgtd when it is not running', async () => {
    const r = await cs(S(), ['target', 'list', '--backend', 'tgt']);
    expect(r.exitCode).toBe(3);
    expect(r.json.message).toContain('tgtd is not running');
  });

  it('exports the same device with O_DIRECT; ACLs apply; CHAP is refused rather than put in an argv', async () => {
    expect((await tb.ssh(S(), ['tgtd'])).exitCode).toBe(0);
    const created = await ok(S(), ['target', 'create', TGT_IQN, '--device', '/dev/vda', '--backend', 'tgt']);
    expect(created.target).toMatchObject({
      iqn: TGT_IQN,
      backend: 'tgt',
      luns: [{ lun: 1, backing: '/dev/vda', direct: true }],
    });
    expect((await ok(S(), ['target', 'create', TGT_IQN, '--device', '/dev/vda', '--backend', 'tgt'])).action).toBe(
      'none',
    );
    const chap = await cs(S(), ['target', 'auth', TGT_IQN, '--chap', 'cowstack', '--backend', 'tgt'], SECRET);
    expect(chap.exitCode).toBe(6);
    expect(chap.json.message).toContain('tgtadm');

    await ok(S(), ['target', 'acl', 'add', TGT_IQN, node(1).initiatorIqn, '--backend', 'tgt']);
    const in1 = await ok(node(1).name, ['initiator', 'login', tb.server.portal, TGT_IQN]);
    expect(await headSha(node(1).name, in1.device), 'what node1 wrote through LIO, now served by tgt').toBe(DATA_SHA);
    // tgt hides targets from initiators outside their ACL already in discovery.
    const denied = await cs(node(2).name, ['initiator', 'login', tb.server.portal, TGT_IQN, '--wait', '5']);
    expect(denied.exitCode, denied.stdout).toBe(7);
    expect(denied.json.message).toContain('offers no targets to this initiator');
    expect(await nodeRecords(node(2).name)).not.toContain(TGT_IQN);

    const saved = await ok(S(), ['target', 'save', '--backend', 'tgt']);
    expect((await tb.ssh(S(), ['grep', '-c', TGT_IQN, saved.file])).stdout.trim()).not.toBe('0');
    expect((await ok(node(1).name, ['initiator', 'logout', tb.server.portal, TGT_IQN, '--forget'])).action).toBe(
      'logged-out',
    );
    expect((await ok(S(), ['target', 'delete', TGT_IQN, '--backend', 'tgt'])).action).toBe('deleted');
    expect((await ok(S(), ['target', 'list', '--backend', 'tgt'])).map((t: TargetView) => t.iqn)).not.toContain(
      TGT_IQN,
    );
  });
});
