import { describe, expect, it } from 'vitest';
import { CommandError } from '../../src/exec/errors.js';
import * as lvm from '../../src/tools/lvm.js';
import { LV_COLUMNS, PV_COLUMNS, REPORT, VG_COLUMNS, capture, lvsArgv, recorder, vgsArgv } from './support.js';

/** lvm2's json report layout: one row a line, fields separated by ", ", values as given. */
const reportText = (key: string, rows: Array<Record<string, unknown>>): string => {
  const line = (r: Record<string, unknown>) =>
    `                  {${Object.entries(r)
      .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
      .join(', ')}}`;
  return (
    `  {\n      "report": [\n          {\n              "${key}": [\n${rows.map(line).join(',\n')}\n` +
    '              ]\n          }\n      ]\n  }\n'
  );
};

/*
 * SYNTHETIC fixtures. LVS_STRINGS / PVS_STRINGS are in the layout lvm2 2.03.16 prints for
 * `--reportformat json --units b --nosuffix --binary` (every value a string, tags one
 * comma-joined string, LV lock args under the key lv_lockargs), as the REAL captures in
 * test/fixtures/lvm2-2.03.16-bookworm show (replayed in fixtures.test.ts). LVS_JSON_STD /
 * VGS_JSON_STD are the same rows in the layout of newer lvm2's `json_std` (numbers as JSON
 * numbers, tags as arrays), which 2.03.16 does not have; the parsers accept both.
 */
const LVS_JSON_STD = reportText('lv', [
  {
    lv_name: 'img1',
    vg_name: 'repo',
    lv_uuid: 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q',
    lv_size: 67108864,
    lv_attr: '-ri-a-----',
    lv_tags: ['cowstack_role:image', 'cowstack_state:ready'],
    lv_active_locally: 1,
    lv_active_exclusively: 0,
    lv_permissions: 'read-only',
    lv_device_open: 1,
    lv_dm_path: '/dev/mapper/repo-img1',
    lv_lockargs: '1.0.0:71303168',
    lv_time: '2026-01-12 10:21:07 +0000',
    lv_kernel_major: 253,
    lv_kernel_minor: 4,
  },
  {
    lv_name: 't1',
    vg_name: 'repo',
    lv_uuid: 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M',
    lv_size: 8388608,
    lv_attr: '-wi-------',
    lv_tags: [],
    lv_active_locally: 0,
    lv_active_exclusively: 0,
    lv_permissions: 'writeable',
    lv_device_open: 0,
    lv_dm_path: '/dev/mapper/repo-t1',
    lv_lockargs: '1.0.0:70254592',
    lv_time: '2026-01-12 10:25:44 +0000',
    lv_kernel_major: -1,
    lv_kernel_minor: -1,
  },
]);

const LVS_STRINGS = reportText('lv', [
  {
    lv_name: 'img1',
    vg_name: 'repo',
    lv_uuid: 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q',
    lv_size: '67108864',
    lv_attr: '-ri-a-----',
    lv_tags: 'cowstack_role:image,cowstack_state:ready',
    lv_active_locally: '1',
    lv_active_exclusively: '0',
    lv_permissions: 'read-only',
    lv_device_open: '1',
    lv_dm_path: '/dev/mapper/repo-img1',
    lv_lockargs: '1.0.0:71303168',
    lv_time: '2026-01-12 10:21:07 +0000',
    lv_kernel_major: '253',
    lv_kernel_minor: '4',
  },
  {
    lv_name: 't1',
    vg_name: 'repo',
    lv_uuid: 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M',
    lv_size: '8388608',
    lv_attr: '-wi-------',
    lv_tags: '',
    lv_active_locally: '0',
    lv_active_exclusively: '0',
    lv_permissions: 'writeable',
    lv_device_open: '0',
    lv_dm_path: '/dev/mapper/repo-t1',
    lv_lockargs: '1.0.0:70254592',
    lv_time: '2026-01-12 10:25:44 +0000',
    lv_kernel_major: '-1',
    lv_kernel_minor: '-1',
  },
]);

const EXPECTED_LVS: lvm.LvInfo[] = [
  {
    name: 'img1',
    vg: 'repo',
    uuid: 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q',
    sizeBytes: 67108864,
    attr: '-ri-a-----',
    tags: ['cowstack_role:image', 'cowstack_state:ready'],
    activeLocally: true,
    activeExclusively: false,
    readOnly: true,
    open: true,
    dmPath: '/dev/mapper/repo-img1',
    lockArgs: '1.0.0:71303168',
    created: '2026-01-12 10:21:07 +0000',
    major: 253,
    minor: 4,
  },
  {
    name: 't1',
    vg: 'repo',
    uuid: 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M',
    sizeBytes: 8388608,
    attr: '-wi-------',
    tags: [],
    activeLocally: false,
    activeExclusively: false,
    readOnly: false,
    open: false,
    dmPath: '/dev/mapper/repo-t1',
    lockArgs: '1.0.0:70254592',
    created: '2026-01-12 10:25:44 +0000',
    major: -1,
    minor: -1,
  },
];

const VGS_JSON_STD = reportText('vg', [
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

const PVS_STRINGS = reportText('pv', [
  {
    pv_name: '/dev/sdb',
    vg_name: 'repo',
    pv_uuid: 'aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg',
    pv_size: '1069547520',
    dev_size: '1073741824',
  },
  {
    pv_name: '/dev/sdc',
    vg_name: '',
    pv_uuid: 'hhhhhh-iiii-jjjj-kkkk-llll-mmmm-nnnnnn',
    pv_size: '',
    dev_size: '2147483648',
  },
]);

describe('deviceFilterConfig / lvmArgv', () => {
  const LUN = '/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2003-01.org.example.repo:vg0-lun-1';

  it('accepts exactly the listed devices and rejects everything else', () => {
    expect(lvm.deviceFilterConfig([LUN])).toBe(`devices { filter = [ "a|^${LUN}$|", "r|.*|" ] }`);
    expect(lvm.deviceFilterConfig(['/dev/sdb', '/dev/sdc'])).toBe(
      'devices { filter = [ "a|^/dev/sdb$|", "a|^/dev/sdc$|", "r|.*|" ] }',
    );
    expect(lvm.deviceFilterConfig([])).toBe('devices { filter = [ "r|.*|" ] }');
  });

  it('strips characters that would end the pattern or the string', () => {
    expect(lvm.deviceFilterConfig(['/dev/s|d"b\\'])).toBe('devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }');
  });

  it('puts --config right after the command, only when a scope is given', () => {
    expect(lvm.lvmArgv('lvchange', ['-aey', 'repo/t1'])).toEqual(['lvchange', '-aey', 'repo/t1']);
    expect(lvm.lvmArgv('lvchange', ['-aey', 'repo/t1'], { devices: [] })).toEqual(['lvchange', '-aey', 'repo/t1']);
    expect(lvm.lvmArgv('lvchange', ['-aey', 'repo/t1'], { devices: ['/dev/sdb'] })).toEqual([
      'lvchange',
      '--config',
      'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }',
      '-aey',
      'repo/t1',
    ]);
  });

  it('lvmRequest tags reads and writes and picks the timeout by kind', () => {
    expect(lvm.lvmRequest('lvs', ['repo'], 'read')).toEqual({
      argv: ['lvs', 'repo'],
      kind: 'read',
      root: true,
      timeout: 'query',
    });
    expect(lvm.lvmRequest('lvchange', ['-an', 'repo/t1'], 'write')).toEqual({
      argv: ['lvchange', '-an', 'repo/t1'],
      kind: 'write',
      root: true,
      timeout: 'change',
    });
    expect(lvm.lvmRequest('vgchange', ['--lockstart', 'repo'], 'write', {}, { timeout: 'lockspace' }).timeout).toBe(
      'lockspace',
    );
  });
});

describe('report parsers', () => {
  it('parseLvs reads json_std with numbers', () => {
    expect(lvm.parseLvs(LVS_JSON_STD)).toEqual(EXPECTED_LVS);
  });

  it('parseLvs reads the same rows with every value a string', () => {
    expect(lvm.parseLvs(LVS_STRINGS)).toEqual(EXPECTED_LVS);
  });

  it('parseLvs also takes the lock args from the key lv_lock_args', () => {
    expect(lvm.parseLvs('{"report":[{"lv":[{"lv_name":"x","lv_lock_args":"1.0.0:70254592"}]}]}')[0]!.lockArgs).toBe(
      '1.0.0:70254592',
    );
    expect(
      lvm.parseLvs('{"report":[{"lv":[{"lv_name":"x","lv_lockargs":"1.0.0:1","lv_lock_args":"1.0.0:2"}]}]}')[0]!
        .lockArgs,
    ).toBe('1.0.0:1');
  });

  it('parseLvs takes read-only from lv_attr when lv_permissions is missing', () => {
    expect(lvm.parseLvs('{"report":[{"lv":[{"lv_name":"x","lv_attr":"-ri-a-----"}]}]}')[0]).toMatchObject({
      readOnly: true,
      sizeBytes: 0,
      tags: [],
      major: -1,
      minor: -1,
    });
  });

  it('parseVgs', () => {
    expect(lvm.parseVgs(VGS_JSON_STD)).toEqual([
      {
        name: 'repo',
        uuid: 'e1Xq0L-7yP2-aB3c-Dd4E-fG5h-Ij6K-lM7nOp',
        sizeBytes: 1069547520,
        freeBytes: 989855744,
        extentBytes: 4194304,
        lockType: 'sanlock',
        lockArgs: '1.0.0:lvmlock',
        shared: true,
        tags: ['cowstack_host:1:node1', 'cowstack_host:2:node2'],
        pvCount: 1,
        lvCount: 2,
      },
    ]);
  });

  it('parsePvs, with an orphan PV whose size is empty', () => {
    expect(lvm.parsePvs(PVS_STRINGS)).toEqual([
      {
        name: '/dev/sdb',
        vg: 'repo',
        uuid: 'aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg',
        sizeBytes: 1069547520,
        devSizeBytes: 1073741824,
      },
      {
        name: '/dev/sdc',
        vg: '',
        uuid: 'hhhhhh-iiii-jjjj-kkkk-llll-mmmm-nnnnnn',
        sizeBytes: 0,
        devSizeBytes: 2147483648,
      },
    ]);
  });

  it('reads several reports in one document, and nothing from empty output', () => {
    expect(lvm.parseReport('{"report":[{"lv":[{"lv_name":"a"}]},{"lv":[{"lv_name":"b"}]}]}', 'lv')).toEqual([
      { lv_name: 'a' },
      { lv_name: 'b' },
    ]);
    expect(lvm.parseReport('  \n', 'lv')).toEqual([]);
    expect(lvm.parseLvs('{"report":[{"lv":[]}]}')).toEqual([]);
  });

  it('says what it could not parse', () => {
    expect(() => lvm.parseLvs('  WARNING: something\n{')).toThrow(/cannot parse LVM json report: .*WARNING: something/);
  });

  it('parseLvmconfigValue', () => {
    expect(lvm.parseLvmconfigValue('use_lvmlockd=1\n')).toBe('1');
    expect(lvm.parseLvmconfigValue('locking_dir="/run/lock/lvm"\n')).toBe('/run/lock/lvm');
    expect(lvm.parseLvmconfigValue('')).toBeUndefined();
  });
});

describe('reads through the runner', () => {
  it('lvs sends the report argv and parses the answer', async () => {
    const r = recorder().expect(['lvs', '--nolocking', ...REPORT, '-o', LV_COLUMNS, 'repo'], {
      kind: 'read',
      stdout: LVS_STRINGS,
    });
    expect(await lvm.lvs(r, 'repo')).toEqual(EXPECTED_LVS);
    expect(r.calls[0]).toMatchObject({ root: true, timeout: 'query', allowFailure: true });
    r.verify();
  });

  it('lvs puts the device filter first', async () => {
    const config = ['--config', 'devices { filter = [ "a|^/dev/sdb$|", "r|.*|" ] }'];
    const r = recorder().expect(lvsArgv('repo/t1', config), { kind: 'read', stdout: LVS_STRINGS });
    expect((await lvm.findLv(r, 'repo', 't1', { devices: ['/dev/sdb'] }))?.name).toBe('img1');
    r.verify();
  });

  it.each([
    '  Failed to find logical volume "repo/t9"\n',
    '  Volume group "nosuch" not found\n  Cannot process volume group nosuch\n',
    '  One or more specified logical volume(s) not found.\n',
  ])('lvs returns [] when LVM says %j', async (stderr) => {
    const r = recorder().expect(lvsArgv('repo/t9'), { kind: 'read', exitCode: 5, stderr });
    expect(await lvm.lvs(r, 'repo/t9')).toEqual([]);
    r.verify();
  });

  it('findLv is undefined for a missing LV', async () => {
    const r = recorder().expect(lvsArgv('repo/t9'), {
      kind: 'read',
      exitCode: 5,
      stderr: '  Failed to find logical volume "repo/t9"\n',
    });
    expect(await lvm.findLv(r, 'repo', 't9')).toBeUndefined();
    r.verify();
  });

  it.each([
    ['a lock failure', '  VG repo lock failed: lock start in progress\n'],
    [
      'a metadata failure',
      '  Skipping global lock: lockspace not found or started\n' +
        "  WARNING: Couldn't find device with uuid aaaaaa-bbbb.\n" +
        '  Cannot process volume group repo\n',
    ],
    [
      'a permission failure',
      '  /dev/mapper/control: open failed: Permission denied\n' +
        '  Failure to communicate with kernel device-mapper driver.\n',
    ],
  ])('lvs throws a CommandError on %s', async (_what, stderr) => {
    const r = recorder().expect(lvsArgv('repo/t1'), { kind: 'read', exitCode: 5, stderr });
    const e = await lvm.lvs(r, 'repo/t1').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CommandError);
    expect((e as CommandError).argv).toEqual(lvsArgv('repo/t1'));
    expect((e as CommandError).commandExitCode).toBe(5);
    expect((e as CommandError).stderr).toBe(stderr);
    r.verify();
  });

  it('vgs of one VG: [] when missing; vgs of all VGs: a failure is an error', async () => {
    const r = recorder()
      .expect(vgsArgv('repo'), { kind: 'read', stdout: capture('vgs-repo.json') }) // REAL
      .expect(vgsArgv('nosuch'), {
        kind: 'read',
        exitCode: 5,
        stderr: '  Volume group "nosuch" not found\n  Cannot process volume group nosuch\n',
      })
      .expect(['vgs', ...REPORT, '-o', VG_COLUMNS], {
        kind: 'read',
        exitCode: 5,
        stderr: '  Volume group "x" not found\n',
      });
    expect((await lvm.vgs(r, 'repo'))[0]?.tags).toEqual(['cowstack_host:1:node1', 'cowstack_host:2:node2']);
    expect(await lvm.vgs(r, 'nosuch')).toEqual([]);
    await expect(lvm.vgs(r)).rejects.toBeInstanceOf(CommandError);
    r.verify();
  });

  it('pvs', async () => {
    const r = recorder().expect(['pvs', ...REPORT, '-o', PV_COLUMNS], { kind: 'read', stdout: PVS_STRINGS });
    expect((await lvm.pvs(r)).map((p) => p.name)).toEqual(['/dev/sdb', '/dev/sdc']);
    r.verify();
  });

  it('lvmconfigValue: the value, or undefined when lvmconfig fails', async () => {
    const r = recorder()
      .expect(['lvmconfig', '--typeconfig', 'full', 'global/use_lvmlockd'], {
        kind: 'read',
        stdout: 'use_lvmlockd=1\n',
      })
      .expect(['lvmconfig', '--typeconfig', 'full', 'local/host_id'], {
        kind: 'read',
        exitCode: 5,
        stderr: 'Configuration node local/host_id not found\n',
      });
    expect(await lvm.lvmconfigValue(r, 'global/use_lvmlockd')).toBe('1');
    expect(await lvm.lvmconfigValue(r, 'local/host_id')).toBeUndefined();
    r.verify();
  });
});
