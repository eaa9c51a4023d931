/**
 * The launcher at the top of dist/cowstack.mjs (scripts/bundle.mjs writes it). The program
 * itself follows in the same file as a comment: Node reads past a comment in about a
 * millisecond, and the launcher compiles the program with V8's code cache (codeCache.ts)
 * instead of letting the module loader parse it on every start.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cacheFileName, codeCacheDir, runWithCodeCache } from './codeCache.js';
import { PROGRAM_END, PROGRAM_START, unescapeProgram } from './programText.js';

/** SHA-256 (16 hex digits) of the program text, set by scripts/bundle.mjs. */
declare const __COWSTACK_PROGRAM_HASH__: string;

const self = fileURLToPath(import.meta.url);
const text = readFileSync(self, 'latin1');
const start = text.lastIndexOf(PROGRAM_START);
const end = text.lastIndexOf(PROGRAM_END);
if (start < 0 || end < start) throw new Error(`${self}: no program after the launcher; rebuild with npm run build`);
const before = text.slice(0, start + PROGRAM_START.length);
const st = statSync(self);
let home: string | undefined;
try {
  home = homedir();
} catch {
  home = undefined;
}
// The exact file: an edited or re-copied bundle gets a fresh cache.
const fileKey = `${st.size}-${Math.trunc(st.mtimeMs)}`;
const cached = runWithCodeCache(unescapeProgram(text.slice(start + PROGRAM_START.length, end)), {
  dir: codeCacheDir(process.env, home),
  name: cacheFileName(__COWSTACK_PROGRAM_HASH__, fileKey),
  key: fileKey,
  filename: self,
  lineOffset: before.split('\n').length - 1,
});
// Saved at exit, so the functions this command compiled are in the cache too.
process.once('exit', () => cached.save());
(cached.result as (require: NodeJS.Require, url: string) => void)(createRequire(import.meta.url), import.meta.url);
