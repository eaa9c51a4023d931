import { describe, expect, it } from 'vitest';
import {
  formatSize,
  parseSize,
  parseVgLv,
  validateDevicePath,
  validateHostId,
  validateIqn,
  validateLvName,
  validatePortal,
  validateVgName,
} from '../../src/core/validate.js';
import { EXIT } from '../../src/exec/errors.js';
import { thrownBy } from './support.js';

/** Every validation error is a usage error (exit 2) that quotes the bad value. */
const rejects = (fn: () => unknown, bad: string) => {
  const e = thrownBy(fn, EXIT.USAGE);
  expect(e.message).toContain(`"${bad}"`);
  return e;
};

describe('validateLvName / validateVgName', () => {
  it.each(['img1', 'clone.2026-01_a+b', 'A', '_x', '.hidden', 'x'.repeat(100)])('accepts %s', (name) => {
    expect(validateLvName(name)).toBe(name);
  });

  it('rejects an empty name, saying it is empty', () => {
    const e = thrownBy(() => validateLvName(''), EXIT.USAGE);
    expect(e.message).toBe('LV name is empty');
    expect(thrownBy(() => validateVgName(''), EXIT.USAGE).message).toBe('VG name is empty');
  });

  it.each(['bad name', 'a/b', 'semi;colon', 'dollar$', 'ümlaut', 'tab\tx', 'x*'])(
    'rejects characters LVM refuses: %j',
    (name) => {
      expect(rejects(() => validateLvName(name), name).message).toContain('characters LVM rejects');
    },
  );

  it('rejects a leading "-" (it would read as an option)', () => {
    rejects(() => validateLvName('-rf'), '-rf');
  });

  it.each(['.', '..'])('rejects the reserved name %s', (name) => {
    expect(rejects(() => validateLvName(name), name).message).toContain('reserved');
  });

  it.each([
    ['pool_tmeta', '_tmeta'],
    ['x_tdata', '_tdata'],
    ['a_cdata_b', '_cdata'],
    ['lv_rimage_0', '_rimage'],
    ['wc_wcorig', '_wcorig'],
    ['v_vorigin', '_vorigin'],
  ])('rejects %s which contains the reserved %s', (name, part) => {
    expect(rejects(() => validateLvName(name), name).message).toContain(`"${part}"`);
  });

  it.each(['snapshot1', 'pvmove0', 'snapshot'])('rejects the reserved prefix in %s', (name) => {
    expect(rejects(() => validateLvName(name), name).message).toMatch(/prefix LVM reserves/);
  });

  it('allows the reserved words when they are not a prefix', () => {
    expect(validateLvName('my_snapshot')).toBe('my_snapshot');
    expect(validateLvName('xpvmove')).toBe('xpvmove');
  });

  it('limits LV names to 100 and VG names to 63 characters', () => {
    const lv101 = 'a'.repeat(101);
    expect(rejects(() => validateLvName(lv101), lv101).message).toContain('longer than 100');
    expect(validateVgName('v'.repeat(63))).toBe('v'.repeat(63));
    const vg64 = 'v'.repeat(64);
    expect(rejects(() => validateVgName(vg64), vg64).message).toContain('longer than 63');
  });

  it('names the VG in VG errors', () => {
    expect(rejects(() => validateVgName('re po'), 're po').message).toMatch(/^VG name/);
  });
});

describe('parseVgLv', () => {
  it('splits VG/LV', () => {
    expect(parseVgLv('repo/img1')).toEqual({ vg: 'repo', lv: 'img1' });
  });

  it.each(['repo', 'repo/', '/img', 'a/b/c', ''])('rejects %j as not VG/LV', (text) => {
    expect(rejects(() => parseVgLv(text), text).message).toContain('not of the form VG/LV');
  });

  it('validates both halves', () => {
    rejects(() => parseVgLv('re po/img'), 're po');
    rejects(() => parseVgLv('repo/pool_tmeta'), 'pool_tmeta');
    rejects(() => parseVgLv('repo/-x'), '-x');
  });
});

describe('parseSize / formatSize', () => {
  it.each([
    ['512M', 512 * 1024 ** 2],
    ['4G', 4 * 1024 ** 3],
    ['4g', 4 * 1024 ** 3],
    ['4GiB', 4 * 1024 ** 3],
    ['1.5T', 1.5 * 1024 ** 4],
    ['8192S', 8192 * 512],
    ['0.5K', 512],
    ['1048576', 1048576],
    ['512', 512],
    [' 64 MiB ', 64 * 1024 ** 2],
  ])('%j is %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['1000', '513', '1.3K', '1024.2', '100b'])('rejects %j: not a multiple of 512 bytes', (text) => {
    expect(rejects(() => parseSize(text), text).message).toContain('not a multiple of 512');
  });

  it.each(['0', '0M', '0.0G'])('rejects %j: zero', (text) => {
    expect(rejects(() => parseSize(text), text).message).toContain('greater than zero');
  });

  it.each(['garbage', '', '-4G', '4X', '4 G B', '1e9', 'G'])('rejects %j: not a size', (text) => {
    expect(rejects(() => parseSize(text), text).message).toContain('is not a size');
  });

  it('rejects sizes beyond exact integer range with a message that says so', () => {
    expect(rejects(() => parseSize('99999999P'), '99999999P').message).toContain('too large');
  });

  it("uses the caller's name for the value", () => {
    expect(rejects(() => parseSize('x', '--cow-size'), 'x').message).toMatch(/^--cow-size /);
  });

  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1024, '1 KiB'],
    [1536, '1.5 KiB'],
    [64 * 1024 ** 2, '64 MiB'],
    [1.5 * 1024 ** 4, '1.5 TiB'],
    [3 * 1024 ** 5, '3 PiB'],
    [2048 * 1024 ** 5, '2048 PiB'],
  ])('formatSize(%d) = %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  it('formatSize and parseSize agree on whole binary units', () => {
    for (const text of ['512M', '4G', '1.5T', '1K']) {
      const bytes = parseSize(text);
      expect(parseSize(formatSize(bytes).replace(' ', ''))).toBe(bytes);
    }
  });
});

describe('validateIqn', () => {
  it.each([
    'iqn.2003-01.org.example.repo:vg0',
    'iqn.2026-11.test:x', // RFC 3720 only needs a date and one domain label; the suffix is optional
    'iqn.1993-08.org.debian:01:abcdef123',
    'iqn.2003-12.org.example',
    'eui.02004567A425678D',
  ])('accepts %s', (iqn) => {
    expect(validateIqn(iqn)).toBe(iqn);
  });

  it.each([
    ['iqn.2003-13.org.example:x', 'month 13'],
    ['iqn.2003-00.org.example:x', 'month 00'],
    ['iqn.2003-1.org.example:x', 'one-digit month'],
    ['iqn.03-01.org.example:x', 'two-digit year'],
    ['iqn.org.example:x', 'missing date'],
    ['iqn.2003-01.Org.Example:x', 'upper case domain'],
    ['iqn.2003-01.org.example:VG0', 'upper case suffix'],
    ['IQN.2003-01.org.example:x', 'upper case prefix'],
    ['iqn.2003-01.-org.example', 'label starting with -'],
    ['iqn.2003-01.org..example', 'empty label'],
    ['iqn.2003-01.org.example:a b', 'space'],
    ['iqn.2003-01.org.example:x;reboot', 'shell metacharacter'],
    ['eui.02004567A425678', 'eui with 15 hex digits'],
    ['eui.02004567A425678DE', 'eui with 17 hex digits'],
    ['eui.02004567a425678d', 'eui in lower case'],
    ['naa.52004567BA64678D', 'naa names are not supported'],
    ['', 'empty'],
  ])('rejects %s (%s)', (iqn) => {
    expect(rejects(() => validateIqn(iqn), iqn).message).toContain('not a valid iSCSI name');
  });

  it('rejects names longer than 223 bytes', () => {
    const ok = `iqn.2003-01.org.example:${'a'.repeat(223 - 'iqn.2003-01.org.example:'.length)}`;
    expect(validateIqn(ok)).toBe(ok);
    rejects(() => validateIqn(`${ok}a`), `${ok}a`);
  });

  it('names the field in the message', () => {
    expect(rejects(() => validateIqn('x', 'target IQN'), 'x').message).toMatch(/^target IQN /);
  });
});

describe('validatePortal', () => {
  it.each([
    ['192.0.2.10', '192.0.2.10:3260'],
    ['192.0.2.10:3261', '192.0.2.10:3261'],
    ['repo.example.org', 'repo.example.org:3260'],
    ['repo:1', 'repo:1'],
    ['repo:65535', 'repo:65535'],
    ['[2001:db8::10]', '[2001:db8::10]:3260'],
    ['[2001:db8::10]:3262', '[2001:db8::10]:3262'],
    ['[fe80::1]:3260', '[fe80::1]:3260'],
  ])('%s -> %s', (portal, normal) => {
    expect(validatePortal(portal)).toBe(normal);
  });

  it.each([
    'repo:0',
    'repo:65536',
    'repo:99999',
    'repo:',
    'repo:abc',
    '2001:db8::10',
    '[2001:db8::10',
    'http://repo',
    'repo;id',
    '',
    '-repo',
    'repo-:3260',
  ])('rejects %j', (portal) => {
    expect(rejects(() => validatePortal(portal), portal).message).toContain('not host[:port]');
  });
});

describe('validateHostId', () => {
  it.each([
    [1, 1],
    ['1', 1],
    [2000, 2000],
    ['2000', 2000],
    [42, 42],
  ])('accepts %j', (value, id) => {
    expect(validateHostId(value)).toBe(id);
  });

  it.each([0, '0', 2001, '2001', 'x', '', '1.5', -1, Number.NaN])('rejects %j', (value) => {
    const e = thrownBy(() => validateHostId(value), EXIT.USAGE);
    expect(e.message).toContain(`"${String(value)}"`);
    expect(e.message).toContain('1 to 2000');
  });
});

describe('validateDevicePath', () => {
  it.each([
    '/dev/sdb',
    '/dev/mapper/repo-img1',
    '/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2003-01.org.example.repo:vg0-lun-1',
    '/dev/disk/by-id/wwn-0x6001405abcdef',
  ])('accepts %s', (path) => {
    expect(validateDevicePath(path)).toBe(path);
  });

  it.each([
    '/dev/../etc/passwd',
    '/dev/mapper/..',
    '/dev/sd b',
    '/dev/sdb;reboot',
    '/dev/$(id)',
    'dev/sdb',
    'sdb',
    './sdb',
    '/etc/passwd',
    '/dev/',
    '/dev/sdb\n',
    '',
  ])('rejects %j', (path) => {
    expect(rejects(() => validateDevicePath(path), path).message).toContain('not a plain /dev path');
  });
});
