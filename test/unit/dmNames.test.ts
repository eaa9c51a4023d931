import { describe, expect, it } from 'vitest';
import { DM_UUID_PREFIX, dmName, dmPath, dmUuid, lvMapperPath, parseDmUuid, sameUuid } from '../../src/core/dmNames.js';

const LV = 'Ab3dEf-ghIJ-klmn-opQR-stuv-wxYZ-0123ab';
const BARE = 'Ab3dEfghIJklmnopQRstuvwxYZ0123ab';

describe('dm names and uuids', () => {
  it('derive from the LV uuid without its dashes', () => {
    expect(dmName('ro', LV)).toBe(`cowstack-ro-${BARE}`);
    expect(dmName('rw', LV)).toBe(`cowstack-rw-${BARE}`);
    expect(dmUuid('ro', LV)).toBe(`COWSTACK-ro-${BARE}`);
    expect(dmUuid('rw', LV)).toBe(`COWSTACK-rw-${BARE}`);
    expect(dmPath('rw', LV)).toBe(`/dev/mapper/cowstack-rw-${BARE}`);
    expect(DM_UUID_PREFIX).toBe('COWSTACK-');
  });

  it('give the same name for the dashed and the compact form', () => {
    expect(dmName('ro', BARE)).toBe(dmName('ro', LV));
    expect(dmUuid('rw', BARE)).toBe(dmUuid('rw', LV));
  });

  it('stay within device-mapper limits and never use the LVM- prefix', () => {
    for (const role of ['ro', 'rw'] as const) {
      expect(dmName(role, LV).length).toBeLessThanOrEqual(127);
      expect(dmName(role, LV)).not.toContain('/');
      expect(dmUuid(role, LV).length).toBeLessThanOrEqual(128);
      expect(dmUuid(role, LV).startsWith('LVM-')).toBe(false);
    }
  });
});

describe('parseDmUuid', () => {
  it.each(['ro', 'rw'] as const)('round-trips a %s uuid to its role and compact LV uuid', (role) => {
    const parsed = parseDmUuid(dmUuid(role, LV));
    expect(parsed).toEqual({ role, lvUuid: BARE });
    expect(sameUuid(parsed!.lvUuid, LV)).toBe(true);
  });

  it.each([
    ['an LVM-owned device', `LVM-e1Xq0L7yP2aB3cDd4EfG5hIj6KlM7nOp${BARE}`],
    ['an LVM snapshot COW', `LVM-e1Xq0L7yP2aB3cDd4EfG5hIj6KlM7nOp${BARE}-cow`],
    ['a wrong role', `COWSTACK-xx-${BARE}`],
    ['an upper-case role', `COWSTACK-RO-${BARE}`],
    ['a cache role', `COWSTACK-cache-${BARE}`],
    ['a uuid one character short', `COWSTACK-ro-${BARE.slice(1)}`],
    ['a uuid one character long', `COWSTACK-ro-${BARE}x`],
    ['the dashed LV uuid', `COWSTACK-ro-${LV}`],
    ['a suffix after the uuid', `COWSTACK-rw-${BARE}-wcache`],
    ['punctuation in the uuid', `COWSTACK-ro-${BARE.slice(0, 31)}_`],
    ['the name prefix instead of the uuid prefix', `cowstack-ro-${BARE}`],
    ['no uuid', 'COWSTACK-ro-'],
    ['the prefix alone', 'COWSTACK-'],
    ['an empty uuid', ''],
  ])('rejects %s', (_what, uuid) => {
    expect(parseDmUuid(uuid)).toBeUndefined();
  });
});

describe('sameUuid', () => {
  it('compares LV uuids with or without dashes', () => {
    expect(sameUuid(LV, BARE)).toBe(true);
    expect(sameUuid(BARE, BARE)).toBe(true);
    expect(sameUuid(LV, 'Hq3Jd0-Ax9P-4r2S-0xYm-Ee3U-Bc8K-7dTt2Q')).toBe(false);
  });
});

describe('lvMapperPath', () => {
  it.each([
    ['vg', 'image', '/dev/mapper/vg-image'],
    ['my-vg', 'lv-1', '/dev/mapper/my--vg-lv--1'],
    ['repo', 'a--b', '/dev/mapper/repo-a----b'],
    ['a-b-c', 'x', '/dev/mapper/a--b--c-x'],
    ['vg0', 'deb12.raw_v+2', '/dev/mapper/vg0-deb12.raw_v+2'],
  ])('%s/%s -> %s', (vg, lv, path) => {
    expect(lvMapperPath(vg, lv)).toBe(path);
  });
});
