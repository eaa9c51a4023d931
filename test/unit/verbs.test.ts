/** The verb adapters of src/tools: the exact command lines they spell, and their run flags. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import * as data from '../../src/tools/blockData.js';
import * as host from '../../src/tools/host.js';
import * as lvm from '../../src/tools/lvm.js';
import { recorder } from './support.js';

const SCOPE = { devices: ['/dev/disk/by-path/ip-10.0.2.2:3260-iscsi-iqn.x-lun-1'] };
const FILTER = ['--config', lvm.deviceFilterConfig(SCOPE.devices)];

describe('lvm verbs', () => {
  it('creates an inactive, never autoactivated LV with its tags in the one command', () => {
    const r = lvm.createLvReq(
      { vg: 'repo', name: 'c-1', bytes: 1 << 30, tags: ['cowstack_role:clone', 'cowstack_chunk:8'] },
      SCOPE,
    );
    expect(r.argv).toEqual([
      'lvcreate',
      ...FILTER,
      '-an',
      '-Zn',
      '-Wn',
      '--setautoactivation',
      'n',
      '-L',
      '1073741824b',
      '-n',
      'c-1',
      '--addtag',
      'cowstack_role:clone',
      '--addtag',
      'cowstack_chunk:8',
      'repo',
    ]);
    expect(r).toMatchObject({ kind: 'write', root: true, timeout: 'change' });
  });

  it('creates active exclusively and zeroed when asked; a local VG has no device filter', () => {
    const r = lvm.createLvReq({ vg: 'cowstack_cache', name: 'wb_x', bytes: 4096, activate: 'ey', zero: true });
    expect(r.argv).toEqual([
      'lvcreate',
      '-aey',
      '-Zy',
      '-Wn',
      '--setautoactivation',
      'n',
      '-L',
      '4096b',
      '-n',
      'wb_x',
      'cowstack_cache',
    ]);
  });

  it('refuses to zero an LV it does not activate (lvcreate would fail after taking the VG lock)', () => {
    expect(() => lvm.createLvReq({ vg: 'repo', name: 'x', bytes: 4096, zero: true })).toThrow(/-aey/);
    expect(() => lvm.createLvReq({ vg: 'repo', name: 'x', bytes: 4096, activate: 'sy', zero: true })).toThrow();
  });

  it('activates, deactivates and refreshes one LV or several in one command', () => {
    expect(lvm.activateReq('repo/img', 'shared').argv).toEqual(['lvchange', '-asy', 'repo/img']);
    expect(lvm.activateReq('repo/c', 'exclusive', SCOPE).argv).toEqual(['lvchange', ...FILTER, '-aey', 'repo/c']);
    expect(lvm.deactivateReq(['c/a', 'c/b']).argv).toEqual(['lvchange', '-an', 'c/a', 'c/b']);
    expect(lvm.refreshReq('repo/img', SCOPE).argv).toEqual(['lvchange', ...FILTER, '--refresh', 'repo/img']);
    expect(lvm.deactivateReq('repo/c')).toMatchObject({ kind: 'write', root: true, timeout: 'change' });
  });

  it('changes tags in one command: each change deletes before it adds, changes keep their order', () => {
    expect(lvm.tagLvReq('repo/c', { del: ['s:init'], add: ['s:live'] }).argv).toEqual([
      'lvchange',
      '--deltag',
      's:init',
      '--addtag',
      's:live',
      'repo/c',
    ]);
    const twice = lvm.tagLvReq('v/a', [
      { del: ['s:a'], add: ['s:b'] },
      { del: ['u:1'], add: ['u:2', 'x'] },
    ]);
    expect(twice.argv).toEqual(
      ['lvchange', '--deltag', 's:a', '--addtag', 's:b', '--deltag', 'u:1'].concat([
        '--addtag',
        'u:2',
        '--addtag',
        'x',
        'v/a',
      ]),
    );
    expect(lvm.tagLvReq('v/a', { add: ['h:n1'] }).argv).toEqual(['lvchange', '--addtag', 'h:n1', 'v/a']);
  });

  it('rides activation, permission and tags on one lvchange, in a fixed order', () => {
    const r = lvm.changeLvReq(
      ['v/m', 'v/d'],
      { activate: 'ey', readOnly: true, tags: { del: ['s:ready'], add: ['s:attached'] } },
      SCOPE,
    );
    expect(r.argv).toEqual([
      'lvchange',
      ...FILTER,
      '-aey',
      '--permission',
      'r',
      '--deltag',
      's:ready',
      '--addtag',
      's:attached',
      'v/m',
      'v/d',
    ]);
    expect(() => lvm.changeLvReq('v/a', {})).toThrow(/nothing/);
  });

  it('removes, renames and extends', () => {
    expect(lvm.removeLvReq('repo/c', SCOPE).argv).toEqual(['lvremove', ...FILTER, '-y', 'repo/c']);
    expect(lvm.removeLvReq(['c/a', 'c/b']).argv).toEqual(['lvremove', '-y', 'c/a', 'c/b']);
    expect(lvm.renameLvReq('repo', 'old', 'new').argv).toEqual(['lvrename', 'repo', 'old', 'new']);
    expect(lvm.extendLvReq('repo/c', 2 ** 31).argv).toEqual(['lvextend', '-L', '2147483648b', 'repo/c']);
  });

  it('creates a shared VG with the lockspace timeout, a local one with the ordinary one', () => {
    const shared = lvm.createVgReq('repo', '/dev/sdb', { lockType: 'sanlock' });
    expect(shared.argv).toEqual([
      'vgcreate',
      '--shared',
      '--lock-type',
      'sanlock',
      '--setautoactivation',
      'n',
      'repo',
      '/dev/sdb',
    ]);
    expect(shared.timeout).toBe('lockspace');
    const local = lvm.createVgReq('cowstack_cache', '/dev/vda');
    expect(local.argv).toEqual(['vgcreate', '--setautoactivation', 'n', 'cowstack_cache', '/dev/vda']);
    expect(local.timeout).toBe('change');
    expect(lvm.removeVgReq('repo').argv).toEqual(['vgremove', '-y', 'repo']);
  });

  it('starts the lockspace and changes VG tags', () => {
    expect(lvm.lockStartReq('repo')).toMatchObject({ argv: ['vgchange', '--lockstart', 'repo'], timeout: 'lockspace' });
    expect(lvm.tagVgReq('repo', { del: ['h:1:old'], add: ['h:1:new'] }).argv).toEqual([
      'vgchange',
      '--deltag',
      'h:1:old',
      '--addtag',
      'h:1:new',
      'repo',
    ]);
  });
});

describe('block data verbs', () => {
  const dev = '/dev/mapper/repo-c--1';
  it('zeroes a header with one synchronous direct write', () => {
    expect(data.zeroHeaderReq(dev, 4096)).toEqual({
      argv: ['dd', 'if=/dev/zero', `of=${dev}`, 'bs=4096', 'count=1', 'oflag=direct', 'conv=fsync', 'status=none'],
      kind: 'write',
      root: true,
      timeout: 'change',
    });
  });

  it('zeroes, copies and copies a range in 4 MiB direct blocks', () => {
    expect(data.zeroReq(dev, 256).argv).toEqual([
      'dd',
      'if=/dev/zero',
      `of=${dev}`,
      'bs=4M',
      'count=256',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ]);
    expect(data.copyReq('/dev/mapper/a', dev)).toEqual({
      argv: [
        'dd',
        'if=/dev/mapper/a',
        `of=${dev}`,
        'bs=4M',
        'iflag=direct',
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ],
      kind: 'write',
      root: true,
      timeout: 'data',
    });
    expect(data.copyRangeReq('/dev/mapper/a', dev, 16, 8).argv).toEqual([
      'dd',
      'if=/dev/mapper/a',
      `of=${dev}`,
      'bs=4M',
      'skip=16',
      'seek=16',
      'count=8',
      'iflag=direct',
      'oflag=direct',
      'conv=fsync,notrunc',
      'status=none',
    ]);
  });

  it('streams stdin onto a device and a device into a file', () => {
    const stdin = new PassThrough();
    const w = data.writeFromStdinReq(dev, stdin);
    expect(w.argv).toEqual([
      'dd',
      `of=${dev}`,
      'bs=4M',
      'iflag=fullblock',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ]);
    expect(w.stdin).toBe(stdin);
    expect(data.readToFileReq(dev, '/tmp/out')).toEqual({
      argv: ['dd', `if=${dev}`, 'bs=4M', 'iflag=direct', 'status=none'],
      kind: 'read',
      root: true,
      timeout: 'data',
      stdoutFile: '/tmp/out',
    });
  });

  it('checksums a device and reads the digest', () => {
    expect(data.checksumReq(dev)).toEqual({ argv: ['sha256sum', dev], kind: 'read', root: true, timeout: 'data' });
    expect(data.parseChecksum(`${'ab'.repeat(32)}  ${dev}\n`)).toBe('ab'.repeat(32));
    expect(data.md5Req(dev)).toEqual({ argv: ['md5sum', dev], kind: 'read', root: true, timeout: 'data' });
  });

  it('probes and wipes signatures, formats volatile disks', () => {
    expect(data.signaturesReq('/dev/sdb').argv).toEqual(['blkid', '-p', '-o', 'export', '/dev/sdb']);
    expect(data.signaturesReq('/dev/sdb').allowFailure).toBe(true);
    expect(data.wipeSignaturesReq('/dev/sdb').argv).toEqual(['wipefs', '-a', '/dev/sdb']);
    expect(data.mkswapReq(dev).argv).toEqual(['mkswap', dev]);
    expect(data.mkfsReq(dev, 'ext4').argv).toEqual(['mkfs', '-t', 'ext4', dev]);
  });
});

describe('host verbs', () => {
  it('names the node', async () => {
    const r = recorder().expect(['uname', '-n'], { kind: 'read', stdout: 'node1\n' });
    expect(await host.nodeName(r)).toBe('node1');
    r.verify();
    expect(r.calls[0]!.root).toBeUndefined();
  });

  it('makes directories and links, removes files as the service user or as root', () => {
    expect(host.mkdirReq('/var/lib/one/datastores/0/7').argv).toEqual([
      'mkdir',
      '-p',
      '--',
      '/var/lib/one/datastores/0/7',
    ]);
    expect(host.linkReq('/dev/mapper/x', '/d/disk.0').argv).toEqual(['ln', '-sfn', '--', '/dev/mapper/x', '/d/disk.0']);
    expect(host.removeReq('/d/disk.0')).toEqual({ argv: ['rm', '-f', '--', '/d/disk.0'], kind: 'write' });
    expect(host.removeReq('/d', { recursive: true }).argv).toEqual(['rm', '-rf', '--', '/d']);
    expect(host.removeRootFileReq('/var/lib/cowstack/journal/x').root).toBe(true);
  });

  it('tests paths, backs up a file once, lists files and links', () => {
    expect(host.existsReq('/etc/x', 'file').argv).toEqual(['test', '-f', '/etc/x']);
    expect(host.existsReq('/usr/bin/x', 'executable').argv).toEqual(['test', '-x', '/usr/bin/x']);
    expect(host.backupOnceReq('/etc/lvm/lvm.conf').argv).toEqual([
      'cp',
      '-a',
      '--no-clobber',
      '/etc/lvm/lvm.conf',
      '/etc/lvm/lvm.conf.cowstack-orig',
    ]);
    expect(host.listFilesReq('/d').argv).toEqual(['find', '/d', '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n']);
    expect(host.findLinksReq('/ds', 3, 'disk.*').argv).toEqual([
      'find',
      '/ds',
      '-mindepth',
      '3',
      '-maxdepth',
      '3',
      '-type',
      'l',
      '-name',
      'disk.*',
    ]);
  });

  it('names who holds a device', () => {
    expect(host.openersReq('/dev/mapper/x')).toEqual({
      argv: ['fuser', '/dev/mapper/x'],
      kind: 'read',
      root: true,
      allowFailure: true,
    });
    expect(host.processesReq([12, 34]).argv).toEqual(['ps', '-o', 'pid=,user=,comm=', '-p', '12,34']);
  });
});
