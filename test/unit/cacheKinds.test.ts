/**
 * The two registries of cache kinds (layers.ts for the stack planner, kinds.ts for clone map)
 * must list the same kinds in the same order, and every `--cache` mode but none must name one.
 */
import { describe, expect, it } from 'vitest';
import { CACHE_KINDS } from '../../src/core/cache/kinds.js';
import { CACHE_LAYERS } from '../../src/core/cache/layers.js';
import { CACHE_MAP_MODES } from '../../src/core/config.js';

describe('cache kind registries', () => {
  it('list the same kinds in the same order, each kind with its layer', () => {
    expect(CACHE_KINDS.map((k) => k.name)).toEqual(CACHE_LAYERS.map((l) => l.name));
    for (const [i, layer] of CACHE_LAYERS.entries()) {
      const kind = CACHE_KINDS[i]!;
      for (const hook of ['bottom', 'sameBytes', 'cow', 'ambiguousBottom', 'overImage', 'tableRole'] as const)
        expect(kind[hook], `${kind.name}.${hook}`).toBe(layer[hook]);
    }
  });

  it('give every --cache mode but none exactly one kind', () => {
    for (const mode of CACHE_MAP_MODES.filter((m) => m !== 'none'))
      expect(
        CACHE_KINDS.filter((k) => k.mode === mode).map((k) => k.name),
        mode,
      ).toHaveLength(1);
    expect(CACHE_KINDS.map((k) => k.mode).sort()).toEqual(CACHE_MAP_MODES.filter((m) => m !== 'none').sort());
  });
});
