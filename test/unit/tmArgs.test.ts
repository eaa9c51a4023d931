/**
 * TM argument parsing with the argument shapes oned really passes, and hostile or broken
 * arguments refused with a usage error that names the bad value (nothing runs before).
 */
import { describe, expect, it } from 'vitest';
import { CowstackError, EXIT } from '../../src/exec/errors.js';
import { decodeXml, diskLv, parseTmArgs, parseVmLv, snapLv, vmLvPattern, xmlValue } from '../../src/tm/args.js';
import { persistentPattern, snapshotPattern } from '../../src/core/vmDisks.js';

const D = 'node1:/var/lib/one//datastores/0/42/disk.0';
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** The usage error thrown for these arguments (fails when parsing succeeds). */
function usage(action: string, args: string[], stdin = ''): CowstackError {
  try {
    parseTmArgs(action, args, stdin);
  } catch (e) {
    expect(e).toBeInstanceOf(CowstackError);
    expect((e as CowstackError).exitCode).toBe(EXIT.USAGE);
    return e as CowstackError;
  }
  throw new Error(`tm ${action} ${args.join(' ')} was accepted`);
}

describe('real argument shapes', () => {
  it("clone: fe:SOURCE, D with oned's doubled slash, vm and ds ids", () => {
    expect(parseTmArgs('clone', ['one-fe:repo/centos7', D, '42', '1'])).toEqual({
      action: 'clone',
      src: { host: 'one-fe', vg: 'repo', lv: 'centos7' },
      dst: {
        host: 'node1',
        path: '/var/lib/one/datastores/0/42/disk.0',
        dsId: 0,
        vmId: 42,
        diskId: 0,
        vmDir: '/var/lib/one/datastores/0/42',
      },
      vmId: 42,
      dsId: 1,
    });
  });

  it('ln and mvds are mirror images', () => {
    const ln = parseTmArgs('ln', ['fe:repo/db', 'node2:/var/lib/one/datastores/100/7/disk.2', '7', '101']);
    expect(ln).toMatchObject({
      action: 'ln',
      src: { lv: 'db' },
      dst: { host: 'node2', dsId: 100, diskId: 2 },
      dsId: 101,
    });
    const mvds = parseTmArgs('mvds', ['node2:/var/lib/one/datastores/100/7/disk.2', 'fe:repo/db', '7', '101']);
    expect(mvds).toMatchObject({ action: 'mvds', src: { host: 'node2', diskId: 2 }, dst: { vg: 'repo', lv: 'db' } });
  });

  it('cpds: snapshot id -1 means the current state', () => {
    expect(parseTmArgs('cpds', [D, 'fe:repo/saved', '-1', '42', '0'])).toMatchObject({
      snapId: -1,
      dst: { lv: 'saved' },
    });
    expect(parseTmArgs('cpds', [D, 'fe:repo/saved', '3', '42', '0'])).toMatchObject({ snapId: 3 });
  });

  it('mv: a disk, or the VM directory with and without trailing slash', () => {
    const dir = parseTmArgs('mv', [
      'node1:/var/lib/one//datastores/0/42',
      'node2:/var/lib/one//datastores/0/42/',
      '42',
      '0',
    ]);
    expect(dir).toMatchObject({
      src: { host: 'node1', path: '/var/lib/one/datastores/0/42' },
      dst: { host: 'node2', path: '/var/lib/one/datastores/0/42' },
    });
    expect((dir as { src: { diskId?: number } }).src.diskId).toBeUndefined();
    expect(parseTmArgs('mv', [D, 'node2:/var/lib/one/datastores/0/42/disk.0', '42', '0'])).toMatchObject({
      src: { diskId: 0 },
      dst: { diskId: 0 },
    });
  });

  it('delete: a disk or host:VM_DIR/', () => {
    expect(parseTmArgs('delete', [D, '42', '0'])).toMatchObject({ target: { diskId: 0 } });
    const dir = parseTmArgs('delete', ['node1:/var/lib/one/datastores/0/42/', '42', '0']) as {
      target: { diskId?: number; vmDir: string };
    };
    expect(dir.target).toMatchObject({ vmDir: '/var/lib/one/datastores/0/42' });
    expect(dir.target.diskId).toBeUndefined();
  });

  it('mkimage, mkswap, resize, snapshots', () => {
    expect(parseTmArgs('mkimage', ['1024', 'ext4', D, '42', '0'])).toMatchObject({ sizeMb: 1024, format: 'ext4' });
    expect(parseTmArgs('mkswap', ['512', D, '42', '0'])).toMatchObject({ sizeMb: 512 });
    expect(parseTmArgs('resize', [D, '20480', '42', '0'])).toMatchObject({ sizeMb: 20480 });
    for (const a of ['snap_create', 'snap_create_live', 'snap_delete', 'snap_revert'])
      expect(parseTmArgs(a, [D, '3', '42', '0'])).toMatchObject({ action: a, snapId: 3 });
  });

  it('context: files with and without a target name', () => {
    const r = parseTmArgs('context', [
      '/var/lib/one/vms/42/context.sh',
      '/var/lib/one/files/init.sh:init.sh',
      '/srv/key.pub:id_rsa.pub',
      'node1:/var/lib/one/datastores/0/42/disk.1',
      '42',
      '0',
    ]);
    expect(r).toMatchObject({
      files: [
        { path: '/var/lib/one/vms/42/context.sh', name: 'context.sh' },
        { name: 'init.sh' },
        { path: '/srv/key.pub', name: 'id_rsa.pub' },
      ],
      dst: { diskId: 1 },
    });
  });

  it('migration hooks and monitor decode base64 XML on stdin', () => {
    const vm = '<VM><ID>42</ID></VM>';
    expect(
      parseTmArgs('premigrate', ['node1', 'node2', '/var/lib/one//datastores/0/42', '42', '0'], b64(vm)),
    ).toMatchObject({ srcHost: 'node1', dstHost: 'node2', vmDir: '/var/lib/one/datastores/0/42', xml: vm });
    const ds =
      '<DATASTORE><ID>0</ID><TEMPLATE><BRIDGE_LIST><![CDATA[node1 node2]]></BRIDGE_LIST></TEMPLATE></DATASTORE>';
    const m = parseTmArgs('monitor', ['0'], `${b64(ds)}\n`);
    expect(m).toMatchObject({ dsId: 0 });
    expect(xmlValue((m as { xml: string }).xml, 'BRIDGE_LIST')).toBe('node1 node2');
    expect(decodeXml('', 'x')).toBe('');
  });

  it('names in the repository', () => {
    expect(diskLv(42, 0)).toBe('one-42-0');
    expect(snapLv(42, 0, 3)).toBe('one-42-0-s3');
    expect(vmLvPattern(42).test('one-42-0-s3')).toBe(true);
    expect(vmLvPattern(42).test('one-420-0')).toBe(false);
    expect(vmLvPattern(4).test('one-42-0')).toBe(false);
    // read back by monitor: the ids of a disk or snapshot name, nothing for any other name
    expect(parseVmLv(diskLv(42, 1))).toEqual({ vmId: 42, diskId: 1 });
    expect(parseVmLv(snapLv(42, 1, 3))).toEqual({ vmId: 42, diskId: 1, snapId: 3 });
    for (const other of ['img-p1', 'one-42', 'one-042-0', 'one-42-0-p1', 'one-42-0-s'])
      expect(parseVmLv(other), other).toBeUndefined();
    expect(snapshotPattern(diskLv(42, 1)).test('one-42-1-s0')).toBe(true);
    expect(snapshotPattern(diskLv(42, 1)).test('one-42-10-s0')).toBe(false);
    expect(persistentPattern('db.v1').exec('db.v1-p12')?.[1]).toBe('12');
    expect(persistentPattern('db.v1').test('dbxv1-p1')).toBe(false);
    expect(persistentPattern('db').test('db-p1-s0')).toBe(false);
  });
});

describe('hostile or broken arguments are refused, naming the value', () => {
  it.each([
    ['a space in the path', 'node1:/var/lib/one/datastores/0/42/disk.0 x'],
    ['a quote', "node1:/var/lib/one/datastores/0/42/disk.0'"],
    ['a semicolon', 'node1:/var/lib/one/datastores/0/42/disk.0;reboot'],
    ['command substitution', 'node1:/var/lib/one/datastores/0/42/$(id)'],
    ['..', 'node1:/var/lib/one/datastores/0/42/../43/disk.0'],
    ['. part', 'node1:/var/lib/one/datastores/0/./42/disk.0'],
    ['outside the datastores', 'node1:/etc/passwd'],
    ['a relative path', 'node1:var/lib/one/datastores/0/42/disk.0'],
    ["another VM's directory", 'node1:/var/lib/one/datastores/0/43/disk.0'],
    ['not a disk file', 'node1:/var/lib/one/datastores/0/42/checkpoint'],
    ['a deeper path', 'node1:/var/lib/one/datastores/0/42/disk.0/x'],
    ['no host', '/var/lib/one/datastores/0/42/disk.0'],
    ['an empty host', ':/var/lib/one/datastores/0/42/disk.0'],
    ['a host with a space', 'node 1:/var/lib/one/datastores/0/42/disk.0'],
    ['a host that is an option', '-oProxyCommand=x:/var/lib/one/datastores/0/42/disk.0'],
    ['a non-numeric datastore', 'node1:/var/lib/one/datastores/x/42/disk.0'],
    ['a leading-zero disk id', 'node1:/var/lib/one/datastores/0/42/disk.01'],
  ])('clone destination with %s', (_what, dst) => {
    const e = usage('clone', ['fe:repo/img', dst, '42', '0']);
    expect(e.message).toContain(
      dst.includes(':') && !dst.startsWith(':') && !dst.startsWith('-') && !dst.startsWith('node ')
        ? dst
        : dst.split(':')[0]!,
    );
  });

  it.each([
    ['a VG/LV with a space', 'fe:repo/my img'],
    ['a quote in the LV', "fe:repo/img'"],
    ['a semicolon', 'fe:repo/img;rm'],
    ['a path', 'fe:/dev/repo/img'],
    ['no VG', 'fe:img'],
    ['three parts', 'fe:repo/a/b'],
    ['no front-end', 'repo/img'],
    ['an LVM-reserved name', 'fe:repo/snapshot1'],
  ])('SOURCE with %s', (_what, src) => {
    expect(usage('clone', [src, D, '42', '0']).message).toContain(src);
  });

  it.each([
    ['vm id', ['fe:repo/img', D, '4x2', '0'], '4x2'],
    ['vm id with spaces', ['fe:repo/img', D, ' 42', '0'], ' 42'],
    ['negative vm id', ['fe:repo/img', D, '-42', '0'], '-42'],
    ['ds id', ['fe:repo/img', D, '42', '0;id'], '0;id'],
    ['ds id with leading zero', ['fe:repo/img', D, '42', '01'], '01'],
  ])('non-numeric %s', (_what, args, bad) => {
    expect(usage('clone', args as string[]).message).toContain(`"${bad}"`);
  });

  it('missing and extra fields', () => {
    expect(usage('clone', ['fe:repo/img', D, '42']).message).toMatch(
      /takes fe:SOURCE HOST:DISK_PATH VM_ID DS_ID, got 3/,
    );
    expect(usage('delete', [D, '42', '0', 'extra']).message).toMatch(/got 4/);
    expect(usage('mv', []).message).toMatch(/got 0/);
    expect(usage('context', [D, '42', '0']).message).toMatch(/context takes/);
    expect(usage('snap_create', [D, '', '42', '0']).message).toContain('snapshot id');
  });

  it('cpds allows -1 only as the snapshot id', () => {
    expect(usage('cpds', [D, 'fe:repo/s', '-2', '42', '0']).message).toContain('"-2"');
    expect(usage('delete', [D, '-1', '0']).message).toContain('"-1"');
  });

  it('mv between a disk and a directory, or two different disks', () => {
    usage('mv', [D, 'node2:/var/lib/one/datastores/0/42/', '42', '0']);
    usage('mv', [D, 'node2:/var/lib/one/datastores/0/42/disk.1', '42', '0']);
  });

  it('disk-only actions refuse the VM directory', () => {
    expect(usage('clone', ['fe:repo/img', 'node1:/var/lib/one/datastores/0/42/', '42', '0']).message).toContain(
      'disk.<disk_id>',
    );
    usage('snap_create', ['node1:/var/lib/one/datastores/0/42', '0', '42', '0']);
  });

  it('mkimage formats and sizes', () => {
    expect(usage('mkimage', ['1024', 'ext4;reboot', D, '42', '0']).message).toContain('ext4;reboot');
    expect(usage('mkimage', ['0', 'raw', D, '42', '0']).message).toContain('"0"');
    expect(usage('mkswap', ['1G', D, '42', '0']).message).toContain('"1G"');
  });

  it('context files: relative, .., spaces, duplicate names', () => {
    usage('context', ['context.sh', 'node1:/var/lib/one/datastores/0/42/disk.1', '42', '0']);
    usage('context', ['/var/lib/one/../../etc/shadow', 'node1:/var/lib/one/datastores/0/42/disk.1', '42', '0']);
    usage('context', ['/tmp/a b', 'node1:/var/lib/one/datastores/0/42/disk.1', '42', '0']);
    usage('context', ['/tmp/a:../x', 'node1:/var/lib/one/datastores/0/42/disk.1', '42', '0']);
    expect(
      usage('context', ['/tmp/a/x.sh', '/tmp/b/x.sh', 'node1:/var/lib/one/datastores/0/42/disk.1', '42', '0']).message,
    ).toContain('x.sh');
  });

  it('migration hooks: bad hosts, VM dir and stdin', () => {
    expect(usage('premigrate', ['node1;id', 'node2', '/var/lib/one/datastores/0/42', '42', '0']).message).toContain(
      'node1;id',
    );
    usage('premigrate', ['node1', 'node2', '/var/lib/one/datastores/0/43', '42', '0']);
    usage('premigrate', ['node1', 'node2', '/var/lib/one/datastores/0/42/disk.0', '42', '0']);
    expect(
      usage('premigrate', ['node1', 'node2', '/var/lib/one/datastores/0/42', '42', '0'], 'not base64!').message,
    ).toContain('not base64');
    expect(usage('monitor', ['0'], b64('USED_MB=1')).message).toContain('not base64-encoded XML');
    expect(usage('monitor', ['x']).message).toContain('"x"');
  });

  it('unknown actions', () => {
    expect(usage('rm', ['x']).message).toContain('"rm"');
  });
});

describe('transient lock manager errors are retried (every action is idempotent)', () => {
  it('recognizes lvmlockd -221 and sanlock lease I/O errors, and nothing else', async () => {
    const { isTransientLockError } = await import('../../src/tm/actions.js');
    const { CommandError } = await import('../../src/exec/errors.js');
    const err = (stderr: string) => new CommandError('node1', ['lvchange', '-aey', 'repo/x'], 5, stderr);
    expect(isTransientLockError(err('  VG repo lock failed: error -221'))).toBe(true);
    expect(isTransientLockError(err('  LV repo/x lock failed: error -218'))).toBe(true);
    // REAL (testbed, lvchange -aey right after the cluster came up): the VG lock's wording.
    expect(
      isTransientLockError(err('VG repo lock skipped: error -221\n  Cannot access VG repo due to failed lock.')),
    ).toBe(true);
    expect(isTransientLockError(err('  LV locked by other host: repo/x'))).toBe(false);
    // REAL (full testbed run): a new LV's lease slot, freed by the other node's lvremove 8 s before.
    const newLv = [
      '  LV locked by other host: repo/k3',
      '  Failed to lock logical volume repo/k3.',
      '  Failed to activate new LV repo/k3.',
    ].join('\n');
    expect(isTransientLockError(err(newLv))).toBe(true);
    // REAL (testbed, two nodes joining at once): lockstart before udev linked the lease LV.
    const lockstart =
      'Skipping global lock: lockspace not found or started\n  VG repo start failed: invalid parameters for sanlock';
    expect(isTransientLockError(err(lockstart))).toBe(true);
    expect(isTransientLockError(err('  Volume group "repo" not found'))).toBe(false);
    expect(isTransientLockError(new Error('VG repo lock failed: error -221'))).toBe(false);
  });
});
