import { describe, expect, it } from 'vitest';
import { activate, deactivate } from '../../src/core/activation.js';
import { EXIT } from '../../src/exec/errors.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, vgsArgv, vgsJson } from './support.js';

const UUID = 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M';

/** `lvs repo/t1` as lvm2 2.03 json_std --binary prints it, in the given activation state. */
const t1 = (state: { active?: boolean; exclusive?: boolean; open?: boolean } = {}) =>
  lvsJson([
    {
      lv_name: 't1',
      vg_name: 'repo',
      lv_uuid: UUID,
      lv_size: 8388608,
      lv_attr: state.active ? `-wi-a${state.open ? '-o' : '--'}---` : '-wi-------',
      lv_tags: ['cowstack_role:clone'],
      lv_active_locally: state.active ? 1 : 0,
      lv_active_exclusively: state.exclusive ? 1 : 0,
      lv_permissions: 'writeable',
      lv_device_open: state.open ? 1 : 0,
      lv_dm_path: '/dev/mapper/repo-t1',
      lv_lock_args: '1.0.0:70254592',
      lv_time: '2026-01-12 10:25:44 +0000',
      lv_kernel_major: state.active ? 253 : -1,
      lv_kernel_minor: state.active ? 3 : -1,
    },
  ]);

// SYNTHETIC: `sanlock direct dump` of the VG's lvmlock LV, in sanlock's column layout.
const DUMP = [
  '  offset                            lockspace                                         resource  timestamp  own  gen lver',
  '00000000                             lvm_repo       0b5e0b7e-9d1c-4bb0-8d2a-3b6f1f0c9a11.node1 0000010423 0001 0003',
  '00000512                             lvm_repo       5f8a2c44-0e3b-4a9a-b6c1-9c2d7e1f0a22.node2 0000010410 0002 0001',
  '01048576                             lvm_repo                                             GLLK 0000000000 0000 0000 0',
  '02097152                             lvm_repo                                             VGLK 0000000000 0001 0003 14',
  `70254592                             lvm_repo           ${UUID} 0000010398 0002 0001 3`,
  '',
].join('\n');

const REPO_VG = vgsJson([
  {
    vg_name: 'repo',
    vg_uuid: 'e1Xq0L-7yP2-aB3c-Dd4E-fG5h-Ij6K-lM7nOp',
    vg_size: 1069547520,
    vg_free: 989855744,
    vg_extent_size: 4194304,
    vg_lock_type: 'sanlock',
    vg_lock_args: '1.0.0:lvmlock',
    vg_shared: 1,
    vg_tags: ['cowstack_host:1:node1', 'cowstack_host:2:node2'],
    pv_count: 1,
    lv_count: 2,
  },
]);

const LOCK_REFUSED = '  LV locked by other host: repo/t1\n  Failed to lock logical volume repo/t1.\n';

describe('activate', () => {
  it('activates an inactive LV exclusively: one read, then lvchange -aey', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write' });
    expect(await activate(r, 'repo', 't1', 'exclusive')).toEqual({ vg: 'repo', lv: 't1', uuid: UUID, mode: 'exclusive', action: 'activated', device: '/dev/repo/t1' });
    expect(r.calls[1]).toMatchObject({ root: true, timeout: 'change', title: 'activate repo/t1 exclusive' });
    r.verify();
  });

  it('activates an inactive LV shared with lvchange -asy', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-asy', 'repo/t1'], { kind: 'write' });
    expect((await activate(r, 'repo', 't1', 'shared')).action).toBe('activated');
    r.verify();
  });

  it('scopes both commands to the repository devices', async () => {
    const config = ['--config', 'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }'];
    const r = recorder()
      .expect(lvsArgv('repo/t1', config), { kind: 'read', stdout: t1() })
      .expect(['lvchange', ...config, '-aey', 'repo/t1'], { kind: 'write' });
    await activate(r, 'repo', 't1', 'exclusive', { scope: { devices: ['/dev/sdb'] } });
    r.verify();
  });

  it('refreshes an LV that is already active exclusively', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['lvchange', '--refresh', 'repo/t1'], { kind: 'write' });
    expect((await activate(r, 'repo', 't1', 'exclusive')).action).toBe('refreshed');
    r.verify();
  });

  it('refreshes an LV that is already active shared when shared is asked', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true }) })
      .expect(['lvchange', '--refresh', 'repo/t1'], { kind: 'write' });
    expect((await activate(r, 'repo', 't1', 'shared')).action).toBe('refreshed');
    r.verify();
  });

  it('refuses (6) to switch an LV active shared to exclusive, and runs nothing', async () => {
    const r = recorder().expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true }) });
    const e = await rejectionOf(activate(r, 'repo', 't1', 'exclusive'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is already active shared on this host; refusing to switch to exclusive');
    expect(e.hint).toContain('cowstack deactivate repo/t1');
    r.verify();
  });

  it('refuses (6) to switch an LV active exclusively to shared', async () => {
    const r = recorder().expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) });
    expect((await rejectionOf(activate(r, 'repo', 't1', 'shared'), EXIT.REFUSED)).message).toContain('already active exclusively');
    r.verify();
  });

  it('turns a lock refusal into LOCK_CONFLICT (4) naming the LV and the holding host', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock'], { kind: 'read', stdout: DUMP })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: REPO_VG });
    const e = await rejectionOf(activate(r, 'repo', 't1', 'exclusive'), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('repo/t1 is locked by another host (held by node2, sanlock host_id 2)');
    expect(e.data).toEqual({ vg: 'repo', lv: 't1', uuid: UUID, holder: { hostId: 2, host: 'node2' }, stderr: LOCK_REFUSED.trim() });
    r.verify();
  });

  it('finds the lease when sanlock names it by the uuid without dashes, and a VG name with a dash', async () => {
    const bare = UUID.replace(/-/g, '');
    const r = recorder()
      .expect(lvsArgv('my-repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'my-repo/t1'], { kind: 'write', exitCode: 5, stderr: '  LV locked by other host: my-repo/t1\n' })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/my--repo-lvmlock'], { kind: 'read', stdout: DUMP.replace(UUID, bare.padStart(UUID.length)) })
      .expect(vgsArgv('my-repo'), { kind: 'read', stdout: vgsJson([{ vg_name: 'my-repo', vg_tags: ['cowstack_host:2:node2'] }]) });
    expect((await rejectionOf(activate(r, 'my-repo', 't1', 'exclusive'), EXIT.LOCK_CONFLICT)).message).toContain('held by node2, sanlock host_id 2');
    r.verify();
  });

  it('names only the host id when no host tag maps it', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock'], { kind: 'read', stdout: DUMP })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: vgsJson([{ vg_name: 'repo', vg_tags: [] }]) });
    expect((await rejectionOf(activate(r, 'repo', 't1', 'exclusive'), EXIT.LOCK_CONFLICT)).message).toBe(
      'repo/t1 is locked by another host (held by sanlock host_id 2)',
    );
    r.verify();
  });

  it('still reports the conflict (4) when the lease dump cannot be read', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: LOCK_REFUSED })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock'], { kind: 'read', exitCode: 1, stderr: 'open error -2 /dev/mapper/repo-lvmlock\n' });
    const e = await rejectionOf(activate(r, 'repo', 't1', 'exclusive'), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('repo/t1 is locked by another host');
    r.verify();
  });

  it('passes other lvchange failures through as FAILED (1) without looking for a holder', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() })
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write', exitCode: 5, stderr: '  device-mapper: reload ioctl on (253:3) failed: Invalid argument\n' });
    const e = await rejectionOf(activate(r, 'repo', 't1', 'exclusive'), EXIT.FAILED);
    expect(e.message).toContain('lvchange -aey repo/t1 exited with 5');
    r.verify();
  });

  it('NOT_FOUND (7) for an LV that does not exist', async () => {
    const r = recorder().expect(lvsArgv('repo/t9'), { kind: 'read', exitCode: 5, stderr: '  Failed to find logical volume "repo/t9"\n' });
    const e = await rejectionOf(activate(r, 'repo', 't9', 'exclusive'), EXIT.NOT_FOUND);
    expect(e.message).toBe('logical volume repo/t9 does not exist');
    r.verify();
  });

  it('rejects a bad name (2) before running anything', async () => {
    const r = recorder();
    expect((await rejectionOf(activate(r, 'repo', 'a;b', 'exclusive'), EXIT.USAGE)).message).toContain('"a;b"');
    expect((await rejectionOf(activate(r, '-repo', 't1', 'exclusive'), EXIT.USAGE)).message).toContain('"-repo"');
    expect(r.calls).toEqual([]);
    r.verify();
  });
});

describe('deactivate', () => {
  it('does nothing for an inactive LV', async () => {
    const r = recorder().expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1() });
    expect(await deactivate(r, 'repo', 't1')).toEqual({ vg: 'repo', lv: 't1', uuid: UUID, mode: 'inactive', action: 'none', device: '/dev/repo/t1' });
    r.verify();
  });

  it('deactivates an active LV nothing uses', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true }) })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' })
      .expect(['lvchange', '-an', 'repo/t1'], { kind: 'write' });
    expect((await deactivate(r, 'repo', 't1')).action).toBe('deactivated');
    r.verify();
  });

  it('refuses (6) to deactivate an open LV without --force', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' });
    const e = await rejectionOf(deactivate(r, 'repo', 't1'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is open by a process; refusing to deactivate');
    expect(e.hint).toContain('--force');
    r.verify();
  });

  it('refuses (6) naming the device-mapper devices stacked on it', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: 'dm-7\n' })
      .expect(['cat', '--', '/sys/class/block/dm-7/dm/name'], { kind: 'read', stdout: 'cowstack-snap-t1\n' });
    const e = await rejectionOf(deactivate(r, 'repo', 't1'), EXIT.REFUSED);
    expect(e.message).toBe('repo/t1 is used by cowstack-snap-t1; refusing to deactivate');
    expect(e.data).toEqual({ vg: 'repo', lv: 't1', holders: [{ kernel: 'dm-7', name: 'cowstack-snap-t1' }] });
    r.verify();
  });

  it('deactivates an open LV with --force', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: t1({ active: true, exclusive: true, open: true }) })
      .expect(['realpath', '-e', '--', '/dev/mapper/repo-t1'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' })
      .expect(['lvchange', '-an', 'repo/t1'], { kind: 'write' });
    expect((await deactivate(r, 'repo', 't1', { force: true })).action).toBe('deactivated');
    r.verify();
  });
});
