import { describe, expect, it } from 'vitest';
import { configSteps, lockspaceStarted } from '../../src/core/cluster.js';
import { getConfValue } from '../../src/core/lvmConf.js';
import { runPlan } from '../../src/core/plan.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { recorder, rejectionOf } from './support.js';

// SYNTHETIC: the lvm.conf / lvmlocal.conf excerpts and the `sanlock client gets` lines are hand-written
// (the REAL gets output is replayed in fixtures.test.ts).

const LVM_CONF = `# This is an example configuration file for the LVM2 system.
config {
	checks = 1
}

global {
	umask = 077
	# Configuration option global/use_lvmlockd.
	# use_lvmlockd = 0
	locking_dir = "/run/lock/lvm"
}
`;

const LVMLOCAL_CONF = `# This is a local configuration file template for the LVM2 system
local {
	# Configuration option local/host_id.
	# host_id = 0
}
`;

const setup = { vg: 'repo', hostId: 2, lockType: 'sanlock' as const };

const readsConf = (r: RecordingRunner, lvmConf: string | undefined, local: string | undefined) =>
  r
    .expect(
      ['cat', '--', '/etc/lvm/lvm.conf'],
      lvmConf === undefined
        ? { kind: 'read', exitCode: 1, stderr: 'cat: /etc/lvm/lvm.conf: No such file or directory\n' }
        : { kind: 'read', stdout: lvmConf },
    )
    .expect(
      ['cat', '--', '/etc/lvm/lvmlocal.conf'],
      local === undefined
        ? { kind: 'read', exitCode: 1, stderr: 'cat: /etc/lvm/lvmlocal.conf: No such file or directory\n' }
        : { kind: 'read', stdout: local },
    );

/** Run the planned steps through a runner that expects exactly these file writes; return what was written. */
async function applySteps(
  steps: Awaited<ReturnType<typeof configSteps>>['steps'],
  files: string[],
): Promise<Record<string, string>> {
  const r = recorder();
  for (const f of files) {
    r.expect(['cp', '-a', '--no-clobber', f, `${f}.cowstack-orig`], { kind: 'write' })
      .expect(['install', '-D', '-m', '0644', '/proc/self/fd/0', `${f}.cowstack-new`], { kind: 'write' })
      .expect(['mv', '-f', '--', `${f}.cowstack-new`, f], { kind: 'write' });
  }
  await runPlan(r, steps);
  r.verify();
  expect(r.calls.every((c) => c.root === true)).toBe(true);
  const written: Record<string, string> = {};
  for (const c of r.calls.filter((x) => x.argv[0] === 'install'))
    written[c.argv[5]!.replace('.cowstack-new', '')] = String(c.input);
  return written;
}

describe('configSteps', () => {
  it('writes lvm.conf and lvmlocal.conf when the values differ, then nothing on the second run', async () => {
    const first = readsConf(recorder(), LVM_CONF, LVMLOCAL_CONF);
    const planned = await configSteps(first, setup);
    first.verify();
    expect(planned.changed).toEqual([
      '/etc/lvm/lvm.conf: global/use_lvmlockd = 1',
      '/etc/lvm/lvmlocal.conf: local/host_id = 2',
    ]);
    expect(planned.steps.map((s) => s.title)).toEqual([
      'back up /etc/lvm/lvm.conf',
      'update /etc/lvm/lvm.conf',
      'install /etc/lvm/lvm.conf',
      'back up /etc/lvm/lvmlocal.conf',
      'update /etc/lvm/lvmlocal.conf',
      'install /etc/lvm/lvmlocal.conf',
    ]);

    const written = await applySteps(planned.steps, ['/etc/lvm/lvm.conf', '/etc/lvm/lvmlocal.conf']);
    expect(getConfValue(written['/etc/lvm/lvm.conf']!, 'global', 'use_lvmlockd')).toBe('1');
    expect(getConfValue(written['/etc/lvm/lvmlocal.conf']!, 'local', 'host_id')).toBe('2');
    // only the setting was added: every original line is still there, in order
    expect(
      written['/etc/lvm/lvm.conf']!.split('\n').filter((l) => !/set by cowstack|use_lvmlockd = 1/.test(l)),
    ).toEqual(LVM_CONF.split('\n'));

    const second = readsConf(recorder(), written['/etc/lvm/lvm.conf'], written['/etc/lvm/lvmlocal.conf']);
    expect(await configSteps(second, setup)).toEqual({ steps: [], changed: [] });
    second.verify();
  });

  it('plans nothing when both settings are already right', async () => {
    const r = readsConf(
      recorder(),
      LVM_CONF.replace('# use_lvmlockd = 0', 'use_lvmlockd = 1'),
      'local {\n\thost_id = 2\n}\n',
    );
    expect(await configSteps(r, setup)).toEqual({ steps: [], changed: [] });
    r.verify();
  });

  it('treats a one-line "local { host_id = 2 }" as already right', async () => {
    const r = readsConf(recorder(), 'global {\n\tuse_lvmlockd = 1\n}\n', 'local { host_id = 2 }\n');
    expect(await configSteps(r, setup)).toEqual({ steps: [], changed: [] });
    r.verify();
  });

  it('creates missing files with the sections they need', async () => {
    const r = readsConf(recorder(), undefined, undefined);
    const planned = await configSteps(r, setup);
    r.verify();
    const written = await applySteps(planned.steps, ['/etc/lvm/lvm.conf', '/etc/lvm/lvmlocal.conf']);
    expect(written).toEqual({
      '/etc/lvm/lvm.conf': 'global {\n\t# set by cowstack\n\tuse_lvmlockd = 1\n}\n',
      '/etc/lvm/lvmlocal.conf': 'local {\n\t# set by cowstack\n\thost_id = 2\n}\n',
    });
  });

  it('each update step undoes itself by writing the original content back', async () => {
    const r = readsConf(recorder(), LVM_CONF, 'local {\n\thost_id = 2\n}\n');
    const { steps } = await configSteps(r, setup);
    r.verify();
    expect(steps).toHaveLength(3);
    expect(steps[1]!.undo?.map((u) => u.argv)).toEqual([
      ['install', '-D', '-m', '0644', '/proc/self/fd/0', '/etc/lvm/lvm.conf.cowstack-new'],
      ['mv', '-f', '--', '/etc/lvm/lvm.conf.cowstack-new', '/etc/lvm/lvm.conf'],
    ]);
    expect(steps[1]!.undo?.[0]!.input).toBe(LVM_CONF);
    // the backup must never overwrite an earlier backup, and may fail harmlessly
    expect(steps[0]!.req).toMatchObject({ kind: 'write', allowFailure: true });
  });

  it('changes a host_id while the lockspace is not running', async () => {
    const r = readsConf(recorder(), 'global {\n\tuse_lvmlockd = 1\n}\n', 'local {\n\thost_id = 3\n}\n').expect(
      ['sanlock', 'client', 'gets', '-h', '1'],
      {
        kind: 'read',
        stdout: 's lvm_other:3:/dev/mapper/other-lvmlock:0 \n',
      },
    );
    const planned = await configSteps(r, setup);
    r.verify();
    expect(planned.changed).toEqual(['/etc/lvm/lvmlocal.conf: local/host_id = 2']);
    const written = await applySteps(planned.steps, ['/etc/lvm/lvmlocal.conf']);
    expect(written['/etc/lvm/lvmlocal.conf']).toBe('local {\n\thost_id = 2\n}\n');
  });

  it('refuses (6) to change the host_id of a running lockspace', async () => {
    const r = readsConf(recorder(), 'global {\n\tuse_lvmlockd = 1\n}\n', 'local {\n\thost_id = 3\n}\n').expect(
      ['sanlock', 'client', 'gets', '-h', '1'],
      {
        kind: 'read',
        stdout: 's lvm_repo:3:/dev/mapper/repo-lvmlock:0 \nh 3 gen 1 timestamp 1200 LIVE\n',
      },
    );
    const e = await rejectionOf(configSteps(r, setup), EXIT.REFUSED);
    expect(e.message).toBe('this node already runs the lockspace of repo with host_id 3; refusing to change it to 2');
    expect(e.hint).toBe('stop the lockspace first: vgchange --lockstop repo');
    r.verify();
  });
});

describe('lockspaceStarted', () => {
  it('is false when sanlock is not running', async () => {
    const r = recorder().expect(['sanlock', 'client', 'gets', '-h', '1'], {
      kind: 'read',
      exitCode: 1,
      stderr: 'sanlock daemon not running\n',
    });
    expect(await lockspaceStarted(r, 'repo')).toBe(false);
    r.verify();
  });
});
