import { describe, expect, it } from 'vitest';
import { activate, deactivate } from '../../src/core/activation.js';
import { nodeSession } from '../../src/core/node.js';
import { EXIT } from '../../src/exec/errors.js';
import {
  capture,
  conflictStderr,
  deltaDumpArgv,
  leaseDump,
  lvsArgv,
  recorder,
  rejectionOf,
  vgsArgv,
  vgsJson,
  T1_UUID as UUID,
  t1,
} from './support.js';

// SYNTHETIC unless marked REAL: the command outputs below (lvs rows, realpath, holders, dm names)
// are hand-written in the tools' formats; REAL ones come from test/fixtures/lvm2-2.03.16-bookworm.

// SYNTHETIC: t1's paxos lease at the offset in its lock args, held by host 2, in the real layout.
const T1_LEASE = ['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock:70254592:1048576'];
const T1_HELD = leaseDump({ offset: 70254592, vg: 'repo', uuid: UUID, owner: 2, timestamp: 10398, lver: 3 });
// REAL: the delta leases of lockspace lvm_repo, one per host, named <uuid>.node1 / .node2.
const DELTA = capture('sanlock-dump-delta.txt');

// REAL: `vgs repo` with hosts 1 and 2 tagged cowstack_host:1:node1, cowstack_host:2:node2.
const REPO_VG = capture('vgs-repo.json');

// The REAL refusal (lvchange-aey-conflict.stderr) with the LV name changed.
const LOCK_REFUSED = conflictStderr().replace(/repo\/probe/g, 'repo/t1');

describe('activate', () => {
  it('activates an inactive LV exclusively: one read, then lvchange -aey', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write' });
    expect(await activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive')).toEqual({
      vg: 'repo',
      lv: 't1',
      uuid: UUID,
      mode: 'exclusive',
      action: 'activated',
      device: '/dev/repo/t1',
    });
    expect(r.calls[1]).toMatchObject({ root: true, timeout: 'change', title: 'activate repo/t1 exclusive' });
    r.verify();
  });

  it('activates an inactive LV shared with lvchange -asy', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-asy', 'repo/t1'], { kind: 'write' });
    expect((await activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'shared')).action).toBe('activated');
    r.verify();
  });

  it('scopes both commands to the repository devices', async () => {
    const config = ['--config', 'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }'];
    const r = recorder()
      .expect(lvsArgv('repo/t1', config), { kind: 'read', stdout: t1() })
      .expect(['lvchange', ...config, '-aey', 'repo/t1'], { kind: 'write' });
    await activate(nodeSession({ runner: r, vg: 'repo', scope: { devices: ['/dev/sdb'] } }), 't1', 'exclusive');
    r.verify();
  });

  it('refreshes an LV that is already active exclusively', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` })
      .expect(['lvchange', '--refresh', 'repo/t1'], { kind: 'write' });
    expect((await activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive')).action).toBe('refreshed');
    r.verify();
  });

  const lvmlockdDecidesExclusivity =
    'trusts lvmlockd over LVM on exclusivity: an LV LVM calls exclusive but lvmlockd holds shared is refreshed shared';
  it(lvmlockdDecidesExclusivity, async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV sh ${UUID}\n` })
      .expect(['lvchange', '--refresh', 'repo/t1'], { kind: 'write' });
    expect((await activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'shared')).action).toBe('refreshed');
    r.verify();
  });

  it('refreshes an LV that is already active shared when shared is asked', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV sh ${UUID}\n` })
      .expect(['lvchange', '--refresh', 'repo/t1'], { kind: 'write' });
    expect((await activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'shared')).action).toBe('refreshed');
    r.verify();
  });

  it('refuses (6) to switch an LV active shared to exclusive, and runs nothing', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV sh ${UUID}\n` });
    const e = await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is already active shared on this host; refusing to switch to exclusive');
    expect(e.hint).toContain('cowstack deactivate repo/t1');
    r.verify();
  });

  it('refuses (6) to switch an LV active exclusively to shared', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'shared'), EXIT.REFUSED)).message,
    ).toContain('already active exclusively');
    r.verify();
  });

  it('turns a lock refusal into LOCK_CONFLICT (4) naming the LV and the holding host', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, { kind: 'read', stdout: T1_HELD })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: REPO_VG })
      .expect(deltaDumpArgv('repo'), { kind: 'read', stdout: DELTA });
    const e = await rejectionOf(
      activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'),
      EXIT.LOCK_CONFLICT,
    );
    expect(e.message).toBe('repo/t1 is locked by another host (held by node2, sanlock host_id 2)');
    expect(e.data).toEqual({
      vg: 'repo',
      lv: 't1',
      uuid: UUID,
      holder: { hostId: 2, host: 'node2' },
      stderr: LOCK_REFUSED.trim(),
    });
    expect(r.calls.slice(2).every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('reads the lease at the offset in the LV lock args, on the lvmlock LV of a VG name with a dash', async () => {
    const r = recorder()
      .expect(lvsArgv('my-repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'my-repo/t1'], {
        kind: 'write',
        exitCode: 5,
        stderr: '  LV locked by other host: my-repo/t1\n',
      })
      .expect(lvsArgv('my-repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/my--repo-lvmlock:70254592:1048576'], {
        kind: 'read',
        stdout: leaseDump({ offset: 70254592, vg: 'my-repo', uuid: UUID, owner: 2, timestamp: 10398 }),
      })
      .expect(vgsArgv('my-repo'), {
        kind: 'read',
        stdout: vgsJson([{ vg_name: 'my-repo', vg_tags: ['cowstack_host:2:node2'] }]),
      })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/my--repo-lvmlock'], {
        kind: 'read',
        stdout: DELTA.replace(/lvm_repo/g, 'lvm_my-repo'),
      });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'my-repo' }), 't1', 'exclusive'), EXIT.LOCK_CONFLICT))
        .message,
    ).toBe('my-repo/t1 is locked by another host (held by node2, sanlock host_id 2)');
    r.verify();
  });

  it('names the holder from the delta leases when no host tag maps it', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, { kind: 'read', stdout: T1_HELD })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: vgsJson([{ vg_name: 'repo', vg_tags: [] }]) })
      .expect(deltaDumpArgv('repo'), { kind: 'read', stdout: DELTA });
    const e = await rejectionOf(
      activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'),
      EXIT.LOCK_CONFLICT,
    );
    expect(e.message).toBe('repo/t1 is locked by another host (held by node2, sanlock host_id 2)');
    expect(e.data?.holder).toEqual({ hostId: 2, host: 'node2' });
    r.verify();
  });

  it('prefers the host tag over the delta lease name', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, { kind: 'read', stdout: T1_HELD })
      .expect(vgsArgv('repo'), {
        kind: 'read',
        stdout: vgsJson([{ vg_name: 'repo', vg_tags: ['cowstack_host:2:hv-b.example'] }]),
      })
      .expect(deltaDumpArgv('repo'), { kind: 'read', stdout: DELTA });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.LOCK_CONFLICT))
        .message,
    ).toBe('repo/t1 is locked by another host (held by hv-b.example, sanlock host_id 2)');
    r.verify();
  });

  it('names only the host id when neither a host tag nor a readable delta lease maps it', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, { kind: 'read', stdout: T1_HELD })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: vgsJson([{ vg_name: 'repo', vg_tags: [] }]) })
      .expect(deltaDumpArgv('repo'), { kind: 'read', exitCode: 1, stderr: 'open error -2 /dev/mapper/repo-lvmlock\n' });
    const e = await rejectionOf(
      activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'),
      EXIT.LOCK_CONFLICT,
    );
    expect(e.message).toBe('repo/t1 is locked by another host (held by sanlock host_id 2)');
    expect(e.data?.holder).toEqual({ hostId: 2, host: undefined });
    r.verify();
  });

  it('still reports the conflict (4) when the lease dump cannot be read', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, { kind: 'read', exitCode: 1, stderr: 'open error -2 /dev/mapper/repo-lvmlock\n' });
    const e = await rejectionOf(
      activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'),
      EXIT.LOCK_CONFLICT,
    );
    expect(e.message).toBe('repo/t1 is locked by another host');
    expect(e.data).toEqual({ vg: 'repo', lv: 't1', uuid: UUID, holder: undefined, stderr: LOCK_REFUSED.trim() });
    r.verify();
  });

  it('still reports the conflict (4) when the LV cannot be read again', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), {
        kind: 'read',
        exitCode: 5,
        stderr: '  Reading VG repo without a lock.\n  Cannot process volume group repo\n',
      });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.LOCK_CONFLICT))
        .message,
    ).toBe('repo/t1 is locked by another host');
    r.verify();
  });

  it('names no holder when the lease was released (timestamp 0, owner kept) before it was read', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, {
        kind: 'read',
        stdout: leaseDump({ offset: 70254592, vg: 'repo', uuid: UUID, owner: 2, timestamp: 0, lver: 3 }),
      });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.LOCK_CONFLICT))
        .message,
    ).toBe('repo/t1 is locked by another host');
    r.verify();
  });

  it('does not take the lease of another LV at that offset for the holder', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(T1_LEASE, {
        kind: 'read',
        stdout: leaseDump({
          offset: 70254592,
          vg: 'repo',
          uuid: 'ZbrHVB-1Ojq-Qsmf-BcAe-gVnS-fCUC-huCqf4',
          owner: 2,
          timestamp: 663,
        }),
      });
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.LOCK_CONFLICT))
        .message,
    ).toBe('repo/t1 is locked by another host');
    r.verify();
  });

  it('passes other lvchange failures through as FAILED (1) without looking for a holder', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], {
        kind: 'write',
        exitCode: 5,
        stderr: '  device-mapper: reload ioctl on (253:3) failed: Invalid argument\n',
      });
    const e = await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't1', 'exclusive'), EXIT.FAILED);
    expect(e.message).toContain('lvchange -aey repo/t1 exited with 5');
    r.verify();
  });

  it('NOT_FOUND (7) for an LV that does not exist', async () => {
    const r = recorder().expect(lvsArgv('repo/t9'), {
      kind: 'read',
      exitCode: 5,
      stderr: '  Failed to find logical volume "repo/t9"\n',
    });
    const e = await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 't9', 'exclusive'), EXIT.NOT_FOUND);
    expect(e.message).toBe('logical volume repo/t9 does not exist');
    r.verify();
  });

  it('rejects a bad name (2) before running anything', async () => {
    const r = recorder();
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: 'repo' }), 'a;b', 'exclusive'), EXIT.USAGE)).message,
    ).toContain('"a;b"');
    expect(
      (await rejectionOf(activate(nodeSession({ runner: r, vg: '-repo' }), 't1', 'exclusive'), EXIT.USAGE)).message,
    ).toContain('"-repo"');
    expect(r.calls).toEqual([]);
    r.verify();
  });
});

describe('deactivate', () => {
  it('does nothing for an inactive LV', async () => {
    const r = recorder().expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() });
    expect(await deactivate(nodeSession({ runner: r, vg: 'repo' }), 't1')).toEqual({
      vg: 'repo',
      lv: 't1',
      uuid: UUID,
      mode: 'inactive',
      action: 'none',
      device: '/dev/repo/t1',
    });
    r.verify();
  });

  it('deactivates an active LV nothing uses', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' })
      .expect(['lvchange', '-an', 'repo/t1'], { kind: 'write' });
    expect((await deactivate(nodeSession({ runner: r, vg: 'repo' }), 't1')).action).toBe('deactivated');
    r.verify();
  });

  it('refuses (6) to deactivate an open LV without --force', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' });
    const e = await rejectionOf(deactivate(nodeSession({ runner: r, vg: 'repo' }), 't1'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is open by a process; refusing to deactivate');
    expect(e.hint).toContain('--force');
    r.verify();
  });

  it('refuses (6) naming the device-mapper devices stacked on it', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: 'dm-7\n' })
      .expect(['cat', '--', '/sys/class/block/dm-7/dm/name'], { kind: 'read', stdout: 'cowstack-snap-t1\n' });
    const e = await rejectionOf(deactivate(nodeSession({ runner: r, vg: 'repo' }), 't1'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is used by cowstack-snap-t1; refusing to deactivate');
    expect(e.data).toEqual({ vg: 'repo', lv: 't1', holders: [{ kernel: 'dm-7', name: 'cowstack-snap-t1' }] });
    r.verify();
  });

  it('deactivates an open LV with --force', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['lvmlockctl', '--info'], { kind: 'read', stdout: `LS sanlock lvm_repo\nLK LV ex ${UUID}\n` })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' })
      .expect(['lvchange', '-an', 'repo/t1'], { kind: 'write' });
    expect((await deactivate(nodeSession({ runner: r, vg: 'repo' }), 't1', { force: true })).action).toBe(
      'deactivated',
    );
    r.verify();
  });
});
