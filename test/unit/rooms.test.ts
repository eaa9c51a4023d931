/**
 * The rooms of docs/design: src/tools is the only place an argv is spelled. A command
 * written inline in core, tm or cli escapes the adapters, and so the list of root programs
 * that sudoers/cowstack is checked against (test/unit/deployment.test.ts).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../../', import.meta.url).pathname;

/** Where commands may be spelled: the adapters, and exec, which only forwards them. */
const ROOMS_THAT_SPELL = ['src/tools/', 'src/exec/'];

// An argv property with a value (not a type annotation), an `{ argv, ...}` shorthand, or a
// raw LVM request: each builds a command outside the adapters.
const SPELLS = [/\bargv\s*:(?!\s*(readonly|string)\b)/, /\{\s*argv\s*[,}]/, /\blvm(Request|Argv)\(/];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : name.endsWith('.ts') ? [path] : [];
  });
}

/** Every source file's lines that build a command, by file (the adapters' own included). */
function spelling(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of sources(join(ROOT, 'src'))) {
    const rel = relative(ROOT, file);
    const lines = readFileSync(file, 'utf8').split('\n');
    const hits = lines.flatMap((line, i) =>
      !/^\s*(\*|\/\/)/.test(line) && SPELLS.some((re) => re.test(line)) ? [`${rel}:${i + 1}: ${line.trim()}`] : [],
    );
    if (hits.length) found.set(rel, hits);
  }
  return found;
}

describe('rooms', () => {
  const found = spelling();

  it('only src/tools spells a command line', () => {
    const outside = [...found]
      .filter(([file]) => !ROOMS_THAT_SPELL.some((room) => file.startsWith(room)))
      .flatMap(([, hits]) => hits);
    expect(outside, 'build these through an adapter in src/tools').toEqual([]);
  });

  it('sees the commands it looks for (the scan is not silently blind)', () => {
    expect(found.get('src/tools/lvm.ts')?.length ?? 0).toBeGreaterThan(0);
    expect(found.get('src/tools/blockData.ts')?.length ?? 0).toBeGreaterThan(0);
  });
});
