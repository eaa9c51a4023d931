// Builds dist/cowstack.mjs: one self-contained file that runs on a hypervisor with only
// Node >= 20 (no node_modules there). Checks that src/cli/version.ts matches package.json.
//
// The file is a small launcher (src/launch/main.ts) followed by the program in a comment: the
// launcher compiles the program with V8's code cache, so a start skips parsing and compiling it
// (src/launch/codeCache.ts). The program is one function of (require, import.meta.url), in
// strict mode as the ES modules it comes from were.
import { build, transform } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, chmodSync, statSync, writeFileSync } from 'node:fs';
import { programComment } from '../dist/launch/programText.js';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const versionSrc = readFileSync('src/cli/version.ts', 'utf8');
if (!versionSrc.includes(`'${pkg.version}'`)) {
  console.error(`src/cli/version.ts does not say ${pkg.version} (package.json): update it`);
  process.exit(1);
}
const out = process.argv[2] ?? 'dist/cowstack.mjs'; // another path: for the launcher's unit test
const common = { bundle: true, platform: 'node', target: 'node20', write: false, legalComments: 'none' };

const program = await build({
  ...common,
  entryPoints: ['src/index.ts'],
  format: 'cjs',
  charset: 'ascii',
  define: { 'import.meta.url': '__cowstackUrl' },
  logOverride: { 'empty-import-meta': 'error' },
});
// esbuild escapes every non-ASCII character in code (charset ascii); what it leaves is in
// comments, and control characters in strings, where the escape is as good. An ASCII program is
// a one-byte string in V8 (half the memory, faster to read and scan) and has no \x01 (the
// launcher's escape, src/launch/programText.ts).
const body = program.outputFiles[0].text.replace(
  /[^\n\x20-\x7e\t\r]/g,
  (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
);
// The wrapper supplies require and the URL; anything else CommonJS would give is not there.
const code = (await transform(body, { minifyWhitespace: true, legalComments: 'none' })).code; // without comments
const cjsOnly = /\b(module\.exports|exports\.[A-Za-z_$]|__dirname|__filename)\b/.exec(code);
if (cjsOnly) throw new Error(`the program uses ${cjsOnly[0]}, which the launcher does not provide`);
const text = `(function (require, __cowstackUrl) {\n'use strict';\n${body}})\n`;
const hash = createHash('sha256').update(text).digest('hex').slice(0, 16);

const launcher = await build({
  ...common,
  entryPoints: ['src/launch/main.ts'],
  format: 'esm',
  define: { __COWSTACK_PROGRAM_HASH__: JSON.stringify(hash) },
  banner: { js: '#!/usr/bin/env node' },
});
writeFileSync(out, launcher.outputFiles[0].text + programComment(text));
chmodSync(out, 0o755);
console.error(`wrote ${out} (${Math.round(statSync(out).size / 1024)} KiB)`);
