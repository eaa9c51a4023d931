import { describe, expect, it } from 'vitest';
import {
  Repo,
  chunkTag,
  fromLv,
  isFrozen,
  parentTag,
  roleTag,
  shaTag,
  stateTag,
  type CloneObj,
  type CowObj,
} from '../../src/core/metadata.js';
import { parseLvs } from '../../src/tools/lvm.js';
import { MiB, U, VG, chainRows, cloneRow, foreignRow, imageRow } from './repoFixtures.js';
import { lvsJson } from './support.js';

// SYNTHETIC: LV rows hand-written in lvm2 2.03.16 json (support.lvsJson).

const SHA = '5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef';
const lvsOf = (rows: Array<Record<string, unknown>>) => parseLvs(lvsJson(rows));
const one = (row: Record<string, unknown>) => fromLv(lvsOf([row])[0]!);
const repoOf = (rows: Array<Record<string, unknown>>) => new Repo(VG, lvsOf(rows));

describe('tag builders', () => {
  it('spell the tag vocabulary', () => {
    expect(roleTag('image')).toBe('cowstack_role:image');
    expect(roleTag('clone')).toBe('cowstack_role:clone');
    expect(stateTag('committed')).toBe('cowstack_state:committed');
    expect(parentTag(U.image)).toBe(`cowstack_parent:${U.image}`);
    expect(chunkTag(128)).toBe('cowstack_chunk:128');
    expect(shaTag(SHA)).toBe(`cowstack_sha256:${SHA}`);
  });
});

describe('fromLv', () => {
  it('reads a sealed image with its checksum', () => {
    const o = one(imageRow('deb12', U.image, { sha: SHA, size: 2048 * MiB }));
    expect(o).toMatchObject({
      kind: 'image',
      name: 'deb12',
      vg: VG,
      uuid: U.image,
      sizeBytes: 2048 * MiB,
      state: 'sealed',
      sha256: SHA,
    });
    expect(o?.tags).toEqual(['cowstack_role:image', 'cowstack_state:sealed', `cowstack_sha256:${SHA}`]);
    expect(o?.lv.readOnly).toBe(true);
  });

  it('reads a writable image without a checksum', () => {
    const o = one(imageRow('scratch', U.image, { state: 'writable' }));
    expect(o).toMatchObject({ kind: 'image', state: 'writable', sha256: undefined });
  });

  it('treats an image without a state tag as initializing', () => {
    const o = one({ ...imageRow('half', U.image), lv_tags: ['cowstack_role:image'] });
    expect(o).toMatchObject({ kind: 'image', state: 'initializing' });
  });

  it('reads a clone: state, parent uuid and chunk size', () => {
    const o = one(cloneRow('vm7', U.c1, U.image, { state: 'committed', chunk: 128, size: 32 * MiB }));
    expect(o).toMatchObject({
      kind: 'clone',
      name: 'vm7',
      uuid: U.c1,
      sizeBytes: 32 * MiB,
      state: 'committed',
      parentUuid: U.image,
      chunkSectors: 128,
    });
  });

  it('defaults a clone without state and chunk tags to initializing and 8 sectors', () => {
    const o = one({
      ...cloneRow('vm8', U.c2, U.image),
      lv_tags: ['cowstack_role:clone', `cowstack_parent:${U.image}`],
    });
    expect(o).toMatchObject({ kind: 'clone', state: 'initializing', parentUuid: U.image, chunkSectors: 8 });
  });

  it('reads tags the way plain json / older lvm2 prints them (comma-joined string)', () => {
    const row = {
      ...cloneRow('vm9', U.c3, U.c2, { chunk: 16 }),
      lv_tags: `cowstack_role:clone,cowstack_state:live,cowstack_parent:${U.c2},cowstack_chunk:16`,
    };
    expect(one(row)).toMatchObject({ kind: 'clone', state: 'live', parentUuid: U.c2, chunkSectors: 16 });
  });

  it('ignores LVs without a cowstack role', () => {
    expect(one(foreignRow('home'))).toBeUndefined();
    expect(one({ ...foreignRow('odd'), lv_tags: ['cowstack_role:cache', 'cowstack_state:live'] })).toBeUndefined();
  });
});

describe('Repo', () => {
  // image -> c1 -> c2 -> c3, c1 -> s2 (a sibling of c2), image -> d1, plus one foreign LV.
  const rows = [...chainRows(), cloneRow('s2', U.s2, U.c1), cloneRow('d1', U.d1, U.image), foreignRow('swap')];
  const repo = repoOf(rows);
  const get = (n: string) => repo.byName.get(n)!;
  const names = (list: CowObj[]) => list.map((o) => o.name);

  it('indexes objects by name and uuid and keeps foreign LVs apart', () => {
    expect([...repo.byName.keys()]).toEqual(['image', 'c1', 'c2', 'c3', 's2', 'd1']);
    expect(repo.byUuid.get(U.c2)?.name).toBe('c2');
    expect(repo.foreign.map((l) => l.name)).toEqual(['swap']);
    expect(repo.byName.has('swap')).toBe(false);
  });

  it('chain runs from the object to its image, image last', () => {
    expect(names(repo.chain(get('c3')))).toEqual(['c3', 'c2', 'c1', 'image']);
    expect(names(repo.chain(get('s2')))).toEqual(['s2', 'c1', 'image']);
    expect(names(repo.chain(get('d1')))).toEqual(['d1', 'image']);
    expect(names(repo.chain(get('image')))).toEqual(['image']);
    expect(repo.chain(get('c3')).at(-1)?.kind).toBe('image');
  });

  it('chain throws on a broken chain (a parent uuid not in the VG)', () => {
    const broken = repoOf([imageRow('image', U.image), cloneRow('c2', U.c2, U.c1), cloneRow('c3', U.c3, U.c2)]);
    expect(() => broken.chain(broken.byName.get('c3')!)).toThrow(
      `clone c2 points to parent ${U.c1}, which is not in vg: the chain is broken`,
    );
  });

  it('levels counts the COWs down to the image; a broken or cyclic chain has none', () => {
    expect([repo.levels(get('c3')), repo.levels(get('s2')), repo.levels(get('image'))]).toEqual([3, 2, 0]);
    const broken = repoOf([imageRow('image', U.image), cloneRow('c2', U.c2, U.c1), cloneRow('c3', U.c3, U.c2)]);
    expect(broken.levels(broken.byName.get('c3')!)).toBeUndefined();
    const cyclic = repoOf([cloneRow('a', U.c1, U.c2), cloneRow('b', U.c2, U.c1)]);
    expect(cyclic.levels(cyclic.byName.get('a')!)).toBeUndefined();
  });

  it('chain throws on a cycle instead of looping', () => {
    const cyclic = repoOf([cloneRow('a', U.c1, U.c2), cloneRow('b', U.c2, U.c1)]);
    expect(() => cyclic.chain(cyclic.byName.get('a')!)).toThrow('clone b has a cyclic parent chain');
    const self = repoOf([cloneRow('loop', U.c3, U.c3)]);
    expect(() => self.chain(self.byName.get('loop')!)).toThrow('clone loop has a cyclic parent chain');
  });

  it('childrenOf lists direct children only', () => {
    expect(names(repo.childrenOf(get('image')))).toEqual(['c1', 'd1']);
    expect(names(repo.childrenOf(get('c1')))).toEqual(['c2', 's2']);
    expect(repo.childrenOf(get('c3'))).toEqual([]);
  });

  it('descendants are every clone below, depth first', () => {
    expect(names(repo.descendants(get('image')))).toEqual(['c1', 'c2', 'c3', 's2', 'd1']);
    expect(names(repo.descendants(get('c1')))).toEqual(['c2', 'c3', 's2']);
    expect(repo.descendants(get('d1'))).toEqual([]);
  });

  it("orphans (parent missing) are nobody's children", () => {
    const r = repoOf([imageRow('image', U.image), cloneRow('orphan', U.c3, U.c2)]);
    expect(r.childrenOf(r.byName.get('image')!)).toEqual([]);
    expect((r.byName.get('orphan') as CloneObj).parentUuid).toBe(U.c2);
  });
});

describe('isFrozen', () => {
  const obj = (row: Record<string, unknown>) => one(row)!;
  it.each([
    ['sealed image', imageRow('i', U.image, { state: 'sealed' }), true],
    ['writable image', imageRow('i', U.image, { state: 'writable' }), false],
    ['initializing image', imageRow('i', U.image, { state: 'initializing' }), false],
    ['committed clone', cloneRow('c', U.c1, U.image, { state: 'committed' }), true],
    ['live clone', cloneRow('c', U.c1, U.image, { state: 'live' }), false],
    ['initializing clone', cloneRow('c', U.c1, U.image, { state: 'initializing' }), false],
  ] as const)('%s: %s', (_what, row, frozen) => {
    expect(isFrozen(obj(row))).toBe(frozen);
  });
});
