/**
 * Foundation on a real kernel: doctor (over ssh and as the single-file bundle inside a
 * guest), the shared VG on both nodes, idempotent iSCSI login, and the cluster lock:
 * an LV exclusive on node1 is refused on node2 with cowstack's lock-conflict exit code.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { ClusterStatus } from '../../src/core/cluster.js';
import type { Check } from '../../src/core/doctor.js';
import type { IscsiSession } from '../../src/tools/iscsiadm.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { cowstack, ROOT } from './cli.js';
import { REPO_VG } from './cluster.js';

let tb: Testbed;
beforeAll(async () => {
  tb = await attachMine();
});

const EXIT_LOCK_CONFLICT = 4;

describe('doctor', () => {
  it('reports a healthy node on both nodes when run from the host over ssh', async () => {
    for (const node of tb.nodes) {
      const r = await cowstack(tb, ['--host', node.name, '--json', 'doctor', '--vg', REPO_VG]);
      expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      expect(r.json.ok).toBe(true);
      expect(r.json.host).toBe(node.name);
      const checks = Object.fromEntries(r.json.result.checks.map((c: Check) => [c.id, c]));
      for (const id of [
        'kernel:dm-targets',
        'daemon:sanlock',
        'daemon:lvmlockd',
        'daemon:iscsid',
        'lvm:use_lvmlockd',
        'lvm:host_id',
        'repository:vg',
        'repository:lockspace',
        'cluster:host_id-unique',
        'journal:synchronous',
      ]) {
        expect(checks[id]?.status, `${node.name} ${id}: ${checks[id]?.message}`).toBe('ok');
      }
      expect(checks['lvm:host_id'].message).toContain(`host_id = ${node.hostId}`);
      expect(checks['kernel:dm-targets'].message).toMatch(/snapshot .*cache .*writecache/);
    }
  });

  it('runs as the single-file bundle on a guest with only node installed', async () => {
    // npm run build wrote the bundle (the CLI the tests run is the same file).
    const node = tb.nodes[1]!;
    await tb.copyTo(node.name, path.join(ROOT, 'dist/cowstack.mjs'), '/root/cowstack.mjs');
    const r = await tb.ssh(node.name, ['node', '/root/cowstack.mjs', '--json', 'doctor', '--vg', REPO_VG]);
    expect(r.exitCode, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.ok).toBe(true);
    expect(doc.host).toBe('local');
    expect(doc.result.errors).toBe(0);
    // No node_modules on the guest: the bundle carried everything.
    expect((await tb.ssh(node.name, ['test', '-e', '/root/node_modules'])).exitCode).not.toBe(0);
  });

  it('fails with the missing exit code and a fix when the VG is not there', async () => {
    const r = await cowstack(tb, ['--host', 'node1', '--json', 'doctor', '--vg', 'novg']);
    expect(r.exitCode).toBe(3);
    const vgCheck = r.json.result.checks.find((c: Check) => c.id === 'repository:vg');
    expect(vgCheck.status).toBe('error');
    expect(vgCheck.fix).toContain('initiator login');
  });
});

describe('cluster', () => {
  it('shows the shared VG and both hosts live from either node', async () => {
    for (const node of tb.nodes) {
      const r = await cowstack(tb, ['--host', node.name, '--json', 'cluster', 'status', '--vg', REPO_VG]);
      expect(r.exitCode, r.stderr).toBe(0);
      const s = r.json.result;
      expect(s.visible).toBe(true);
      expect(s.shared).toBe(true);
      expect(s.lockType).toBe('sanlock');
      expect(s.thisHost).toMatchObject({ name: node.name, hostId: node.hostId, lockspaceStarted: true });
      const names = Object.fromEntries(s.hosts.map((h: ClusterStatus['hosts'][number]) => [h.hostId, h.name]));
      expect(names).toMatchObject({ 1: 'node1', 2: 'node2' });
    }
  });

  it('join is idempotent: a second run changes nothing', async () => {
    const r = await cowstack(tb, ['--host', 'node2', '--json', 'cluster', 'join', '--vg', REPO_VG, '--host-id', '2']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json.result.changed).toEqual([]);
  });

  it('refuses to take a host_id another host registered', async () => {
    const r = await cowstack(tb, ['--host', 'node2', '--json', 'cluster', 'join', '--vg', REPO_VG, '--host-id', '1']);
    expect(r.exitCode).toBe(6);
    expect(r.json.message).toMatch(/host_id|lockspace/);
  });
});

describe('initiator', () => {
  it('login is idempotent and sessions lists the LUN', async () => {
    const r = await cowstack(tb, ['--host', 'node1', '--json', 'initiator', 'login', tb.portal, tb.targetIqn]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json.result.alreadyLoggedIn).toBe(true);
    expect(r.json.result.disk).toMatch(/^\/dev\/sd[a-z]+$/);
    const s = await cowstack(tb, ['--host', 'node1', '--json', 'initiator', 'sessions']);
    const mine = s.json.result.find((x: IscsiSession) => x.iqn === tb.targetIqn);
    expect(mine.state).toBe('LOGGED_IN');
    expect(mine.disks[0].device).toBe(r.json.result.disk);
  });

  it('logout refuses while the VG sits on the disk', async () => {
    const r = await cowstack(tb, ['--host', 'node1', '--json', 'initiator', 'logout', tb.portal, tb.targetIqn]);
    expect(r.exitCode).toBe(6);
    expect(r.json.message).toContain('in use by');
    expect(r.json.message).toContain('lvmlock');
  });

  it('rejects a malformed IQN before running anything', async () => {
    const r = await cowstack(tb, [
      '--host',
      'node1',
      '--json',
      'initiator',
      'login',
      tb.portal,
      'iqn.2026-13.Bad Name',
    ]);
    expect(r.exitCode).toBe(2);
    expect(r.json.message).toContain('iqn.2026-13.Bad Name');
  });
});

describe('exclusive activation across nodes', () => {
  const lv = 'cs-locktest';
  it('node2 is refused while node1 holds the LV, and gets it once released', async () => {
    await tb.ssh('node1', ['lvremove', '-y', `${REPO_VG}/${lv}`]);
    const created = await tb.ssh('node1', [
      'lvcreate',
      '-an',
      '--setautoactivation',
      'n',
      '-L',
      '8M',
      '-n',
      lv,
      REPO_VG,
    ]);
    expect(created.exitCode, created.stderr).toBe(0);

    const a1 = await cowstack(tb, ['--host', 'node1', '--json', 'activate', `${REPO_VG}/${lv}`, '--exclusive']);
    expect(a1.exitCode, a1.stderr).toBe(0);
    expect(a1.json.result.action).toBe('activated');

    // Idempotent: a second activation refreshes.
    const again = await cowstack(tb, ['--host', 'node1', '--json', 'activate', `${REPO_VG}/${lv}`, '--exclusive']);
    expect(again.json.result.action).toBe('refreshed');

    const a2 = await cowstack(tb, ['--host', 'node2', '--json', 'activate', `${REPO_VG}/${lv}`, '--exclusive']);
    expect(a2.exitCode).toBe(EXIT_LOCK_CONFLICT);
    expect(a2.json.error).toBe('lock-conflict');
    expect(a2.json.message).toContain(`${REPO_VG}/${lv}`);
    expect(a2.json.message).toContain('node1');

    // Shared activation is refused too while node1 holds it exclusively.
    const s2 = await cowstack(tb, ['--host', 'node2', '--json', 'activate', `${REPO_VG}/${lv}`, '--shared']);
    expect(s2.exitCode).toBe(EXIT_LOCK_CONFLICT);

    const status = await cowstack(tb, ['--host', 'node2', '--json', 'cluster', 'status', '--vg', REPO_VG]);
    expect(status.json.result.locks).toContainEqual(expect.objectContaining({ lv, owner: 'node1', ownerHostId: 1 }));

    const d1 = await cowstack(tb, ['--host', 'node1', '--json', 'deactivate', `${REPO_VG}/${lv}`]);
    expect(d1.json.result.action).toBe('deactivated');

    const b2 = await cowstack(tb, ['--host', 'node2', '--json', 'activate', `${REPO_VG}/${lv}`, '--exclusive']);
    expect(b2.exitCode, b2.stderr).toBe(0);
    const d2 = await cowstack(tb, ['--host', 'node2', '--json', 'deactivate', `${REPO_VG}/${lv}`]);
    expect(d2.json.result.action).toBe('deactivated');
    expect((await tb.ssh('node1', ['lvremove', '-y', `${REPO_VG}/${lv}`])).exitCode).toBe(0);
  });

  it('--dry-run prints the lvchange argv and changes nothing', async () => {
    const created = await tb.ssh('node1', [
      'lvcreate',
      '-an',
      '--setautoactivation',
      'n',
      '-L',
      '8M',
      '-n',
      'cs-dry',
      REPO_VG,
    ]);
    expect(created.exitCode, created.stderr).toBe(0);
    const r = await cowstack(tb, [
      '--host',
      'node1',
      '--json',
      '--dry-run',
      'activate',
      `${REPO_VG}/cs-dry`,
      '--exclusive',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    // The node lock a run takes, then the activation.
    expect(r.json.dryRun).toEqual([
      expect.objectContaining({ host: 'node1', argv: expect.arrayContaining(['flock', 'tee']) }),
      expect.objectContaining({ host: 'node1', argv: ['lvchange', '-aey', `${REPO_VG}/cs-dry`] }),
    ]);
    const lvs = await tb.ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_active', `${REPO_VG}/cs-dry`]);
    expect(lvs.stdout.trim()).toBe('');
    expect((await tb.ssh('node1', ['lvremove', '-y', `${REPO_VG}/cs-dry`])).exitCode).toBe(0);
  });
});
