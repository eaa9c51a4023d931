/**
 * No import cycle anywhere in src. Every module reference counts, also type-only ones
 * (`import type`, `export type ... from`, `import('...')` in a type position): they are erased
 * at runtime, but a cycle through them still ties the modules' meaning together, and a later
 * edit that turns one into a value import would bring back a runtime cycle (half-initialised
 * modules at load). The graph is read with the TypeScript parser, so multi-line imports,
 * comments and strings cannot fool it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const SRC = join(ROOT, 'src');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Every module specifier a file names: static imports and re-exports, `import()` in code and in types. */
export function specifiers(file: string, text: string): string[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      if (ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      out.push(node.argument.literal.text);
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      out.push(node.arguments[0].text);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** The graph of src: file -> the src files it imports (relative specifiers only; `.js` names the `.ts`). */
function importGraph(files: string[]): Map<string, string[]> {
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const deps = specifiers(file, readFileSync(file, 'utf8'))
      .filter((s) => s.startsWith('.'))
      .map((s) => resolve(dirname(file), s).replace(/\.js$/, '.ts'))
      .map((p) => (known.has(p) ? p : known.has(join(p, 'index.ts')) ? join(p, 'index.ts') : p))
      .filter((p) => known.has(p));
    graph.set(file, [...new Set(deps)]);
  }
  return graph;
}

/**
 * Each knot of the graph: a strongly connected component of more than one file (or a file
 * importing itself), with its files sorted and one concrete loop through it (the shortest
 * from its first file, the way a reader follows the imports).
 */
export function findCycles(graph: Map<string, string[]>): Array<{ files: string[]; loop: string[] }> {
  // Tarjan's algorithm: every file in a cycle lands in one component of size > 1.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(comp);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) strong(v);
  return components.map((comp) => ({ files: [...comp].sort(), loop: loopThrough(graph, comp) }));
}

/** The shortest loop from the component's first file back to it. */
function loopThrough(graph: Map<string, string[]>, comp: string[]): string[] {
  const inComp = new Set(comp);
  const start = [...comp].sort()[0]!;
  const prev = new Map<string, string>();
  const queue = [start];
  const seen = new Set([start]);
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!inComp.has(w)) continue;
      if (w === start) {
        const loop = [v];
        while (loop[0] !== start) loop.unshift(prev.get(loop[0]!)!);
        return [...loop, start];
      }
      if (!seen.has(w)) {
        seen.add(w);
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

describe('import graph of src', () => {
  it('reads every kind of module reference, type-only ones included', () => {
    const text = [
      "import a from './a.js';",
      "import type { B } from './b.js';",
      'import {',
      '  c,',
      "} from './c.js';",
      "export { d } from './d.js';",
      "export type { E } from './e.js';",
      "export * from './f.js';",
      "let g: import('./g.js').G;",
      "const h = await import('./h.js');",
      'const s = \'import x from "./not.js"\';',
      "// import y from './nor.js';",
    ].join('\n');
    expect(specifiers('x.ts', text)).toEqual([
      './a.js',
      './b.js',
      './c.js',
      './d.js',
      './e.js',
      './f.js',
      './g.js',
      './h.js',
    ]);
  });

  it('finds a cycle and names its files in order', () => {
    const g = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'd']],
      ['d', []],
      ['e', ['e']],
    ]);
    expect(findCycles(g)).toEqual(
      expect.arrayContaining([
        { files: ['a', 'b', 'c'], loop: ['a', 'b', 'c', 'a'] },
        { files: ['e'], loop: ['e', 'e'] },
      ]),
    );
    expect(findCycles(g)).toHaveLength(2);
  });

  it('has no cycle', () => {
    const files = tsFiles(SRC);
    expect(files.length).toBeGreaterThan(50);
    const rel = (f: string) => relative(ROOT, f);
    const cycles = findCycles(importGraph(files)).map(
      (c) =>
        `${c.files.length} files in a cycle: ${c.files.map(rel).join(', ')} (e.g. ${c.loop.map(rel).join(' -> ')})`,
    );
    expect(cycles, `import cycles in src:\n${cycles.join('\n')}`).toEqual([]);
  });
});
