/**
 * The launcher's V8 code cache (src/launch): a cache helps or is ignored, it never changes what
 * runs or fails a start. Real files in a temporary directory, real vm.Script compiles; the end of
 * the file starts the built bundle itself with a cache directory of its own.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  cacheFileName,
  codeCacheDir,
  KEEP,
  readCodeCache,
  runWithCodeCache,
  writeCodeCache,
} from '../../src/launch/codeCache.js';
import { PROGRAM_END, PROGRAM_START, programComment, unescapeProgram } from '../../src/launch/programText.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const temps: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'cowstack-cc-'));
  temps.push(d);
  return d;
};
afterEach(() => {
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true });
});

// A program with enough functions that V8's cache has something to carry; it evaluates to a value
// the test computes itself.
const SOURCE = `(() => { const f = (n) => n < 2 ? n : f(n - 1) + f(n - 2); return { fib20: f(20), s: 'x*/y' }; })()`;
const expected = { fib20: 6765, s: 'x*/y' };
const NAME = cacheFileName('0123456789abcdef', '1000-1');
const run = (dir: string | undefined, key = 'k1', name = NAME) =>
  runWithCodeCache(SOURCE, { dir, name, key, filename: '/test/program.js' });

describe('codeCacheDir', () => {
  it('follows COWSTACK_CODE_CACHE, then XDG_CACHE_HOME, then the home directory', () => {
    expect(codeCacheDir({ COWSTACK_CODE_CACHE: '/c' }, '/home/u')).toBe('/c');
    expect(codeCacheDir({ COWSTACK_CODE_CACHE: 'off' }, '/home/u')).toBeUndefined();
    expect(codeCacheDir({ COWSTACK_CODE_CACHE: '0' }, '/home/u')).toBeUndefined();
    expect(codeCacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/cowstack');
    expect(codeCacheDir({}, '/home/u')).toBe('/home/u/.cache/cowstack');
  });

  it('takes no relative directory (it would depend on where the command is started)', () => {
    expect(codeCacheDir({ COWSTACK_CODE_CACHE: 'rel', XDG_CACHE_HOME: 'x' }, '/home/u')).toBe(
      '/home/u/.cache/cowstack',
    );
    expect(codeCacheDir({}, undefined)).toBeUndefined();
    expect(codeCacheDir({}, 'relative')).toBeUndefined();
  });

  it('names a file per build, node version and architecture', () => {
    expect(cacheFileName('abc', '1203-1764577000', 'v20.20.2', 'x64')).toBe(
      'cowstack-abc-1203-1764577000-v20.20.2-x64.v8cache',
    );
  });
});

describe('readCodeCache and writeCodeCache', () => {
  it('give back exactly the bytes written, for the key written', () => {
    const dir = join(temp(), 'c');
    const data = Buffer.from([0, 1, 2, 10, 255, 10]);
    expect(writeCodeCache(dir, NAME, 'size:mtime', data)).toBe(true);
    expect(readCodeCache(dir, NAME, 'size:mtime')).toEqual(data);
    expect(readCodeCache(dir, NAME, 'other:key')).toBeUndefined();
    expect(readdirSync(dir)).toEqual([NAME]); // no temporary file left
  });
});

describe('runWithCodeCache', () => {
  it('writes the cache after a first run and uses it on the next; the result is the same', () => {
    const dir = join(temp(), 'cache');
    const first = run(dir);
    expect(first.result).toEqual(expected);
    expect(first.cacheUsed).toBe(false);
    expect(first.save()).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, NAME)).mode & 0o777).toBe(0o600);
    const second = run(dir);
    expect(second.cacheUsed).toBe(true);
    expect(second.result).toEqual(expected);
    expect(second.save()).toBe(false); // nothing to renew
  });

  it('ignores a cache written for another key (a changed bundle) and replaces it', () => {
    const dir = temp();
    run(dir, 'old').save();
    const stale = run(dir, 'new');
    expect(stale.cacheUsed).toBe(false);
    expect(stale.result).toEqual(expected);
    expect(stale.save()).toBe(true);
    expect(run(dir, 'new').cacheUsed).toBe(true);
    expect(run(dir, 'old').cacheUsed).toBe(false);
  });

  it("keeps the newest of this program's cache files (bundles in use side by side), nothing else touched", () => {
    const dir = temp();
    writeFileSync(join(dir, 'notes.txt'), 'kept');
    const older = Array.from({ length: KEEP + 1 }, (_, i) => cacheFileName('fedcba9876543210', `${i}-1`));
    older.forEach((name, i) => {
      run(dir, 'k', name).save();
      utimesSync(join(dir, name), 1000 + i, 1000 + i); // written in this order
    });
    expect(readdirSync(dir)).toHaveLength(KEEP + 1); // notes.txt and the KEEP newest
    run(dir, 'k').save();
    expect(readdirSync(dir).sort()).toEqual([NAME, 'notes.txt', ...older.slice(-(KEEP - 1))].sort());
  });

  it('refuses a damaged file before V8 sees it, runs from source and writes a good one', () => {
    const dir = temp();
    run(dir).save();
    const file = join(dir, NAME);
    const bytes = readFileSync(file);
    const at = bytes.length - 10;
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(file, bytes);
    expect(readCodeCache(dir, NAME, 'k1')).toBeUndefined();
    const r = run(dir);
    expect(r.cacheUsed).toBe(false);
    expect(r.result).toEqual(expected);
    expect(r.save()).toBe(true);
    expect(run(dir).cacheUsed).toBe(true);
  });

  it('refuses a truncated file, an empty one, and one without a header', () => {
    const dir = temp();
    run(dir).save();
    const file = join(dir, NAME);
    const whole = readFileSync(file);
    for (const bad of [whole.subarray(0, whole.length >> 1), Buffer.alloc(0), whole.subarray(whole.indexOf(10) + 1)]) {
      writeFileSync(file, bad, { mode: 0o600 });
      expect(readCodeCache(dir, NAME, 'k1')).toBeUndefined();
      expect(run(dir).result).toEqual(expected);
    }
  });

  it('uses nothing from a directory or file others may write, nor a symlinked file', () => {
    const dir = temp();
    run(dir).save();
    chmodSync(dir, 0o777);
    expect(readCodeCache(dir, NAME, 'k1')).toBeUndefined();
    expect(run(dir).save()).toBe(false);
    chmodSync(dir, 0o700);
    chmodSync(join(dir, NAME), 0o666);
    expect(readCodeCache(dir, NAME, 'k1')).toBeUndefined();
    chmodSync(join(dir, NAME), 0o600);
    expect(readCodeCache(dir, NAME, 'k1')).toBeDefined();
    const other = temp();
    symlinkSync(join(dir, NAME), join(other, NAME));
    expect(readCodeCache(other, NAME, 'k1')).toBeUndefined();
  });

  it('runs without a cache when the directory cannot be made or written (read-only)', () => {
    const file = join(temp(), 'a-file');
    writeFileSync(file, '');
    const underFile = run(join(file, 'cache'));
    expect(underFile.result).toEqual(expected);
    expect(underFile.save()).toBe(false);
    expect(run(undefined).save()).toBe(false);
    // A read-only directory: root writes anyway, so the check runs as an unprivileged user then.
    const dir = temp();
    chmodSync(dir, 0o500);
    const script =
      `import { runWithCodeCache } from ${JSON.stringify(join(ROOT, 'dist/launch/codeCache.js'))};\n` +
      `const r = runWithCodeCache(${JSON.stringify(SOURCE)}, { dir: ${JSON.stringify(dir)}, name: 'n.v8cache', ` +
      `key: 'k', filename: 'p.js' });\nconsole.log(JSON.stringify([r.result, r.save()]));`;
    const asRoot = process.geteuid?.() === 0;
    if (asRoot) {
      chownSync(dir, 65534, 65534);
      chmodSync(dirname(dir), 0o755);
    }
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([expected, false]);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('programText', () => {
  it('carries a program with comment ends inside one block comment and gives it back', () => {
    const program = 'const a = 1; /* c */ const re = /x*/; // */\n';
    const carried = programComment(program);
    expect(carried.startsWith(PROGRAM_START) && carried.endsWith(PROGRAM_END)).toBe(true);
    const inner = carried.slice(PROGRAM_START.length, -PROGRAM_END.length);
    expect(inner).not.toContain('*/');
    expect(unescapeProgram(inner)).toBe(program);
  });

  it('refuses a program it could not give back', () => {
    expect(() => programComment('a\x01b')).toThrow(/U\+1\b/);
    expect(() => programComment('a\u201cb')).toThrow(/U\+201c/);
    expect(() => programComment(`x${PROGRAM_START}y`)).toThrow(/marker/);
  });
});

describe('the bundle', () => {
  const built = mkdtempSync(join(tmpdir(), 'cowstack-bundle-'));
  const bundle = join(built, 'cowstack.mjs');
  beforeAll(() => {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'pipe' });
    execFileSync(process.execPath, ['scripts/bundle.mjs', bundle], { cwd: ROOT, stdio: 'pipe' });
  }, 120_000);
  afterAll(() => rmSync(built, { recursive: true, force: true }));

  const start = (cache: string, ...args: string[]) =>
    spawnSync(process.execPath, [bundle, ...args], {
      cwd: tmpdir(),
      env: { ...process.env, COWSTACK_CODE_CACHE: cache, NO_COLOR: '1' },
      encoding: 'utf8',
    });

  it('starts the same with no cache, a fresh one, a used one and a damaged one', () => {
    const dir = join(temp(), 'cache');
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    const off = start('off', '--version');
    expect(off.stdout).toBe(`${version}\n`);
    expect(start(dir, '--version')).toMatchObject({ status: 0, stdout: off.stdout, stderr: '' });
    const [file] = readdirSync(dir);
    expect(file).toMatch(/^cowstack-[0-9a-f]{16}-\d+-\d+-v\d+\.\d+\.\d+-\w+\.v8cache$/);
    const written = statSync(join(dir, file!)).mtimeMs;
    expect(start(dir, '--version')).toMatchObject({ status: 0, stdout: off.stdout, stderr: '' });
    expect(statSync(join(dir, file!)).mtimeMs).toBe(written); // used, not rewritten
    const garbage = 'cowstack-v8cache 1 garbage\n\x00\x01';
    writeFileSync(join(dir, file!), garbage, { mode: 0o600 });
    expect(start(dir, '--version')).toMatchObject({ status: 0, stdout: off.stdout, stderr: '' });
    // Replaced by a good one, which the next start uses.
    expect(readFileSync(join(dir, file!), 'latin1')).not.toBe(garbage);
    const renewed = statSync(join(dir, file!)).mtimeMs;
    expect(start(dir, '--version')).toMatchObject({ status: 0, stdout: off.stdout, stderr: '' });
    expect(statSync(join(dir, file!)).mtimeMs).toBe(renewed);
  });

  it('keeps exit codes and error output (a usage error) with the cache in use', () => {
    const dir = join(temp(), 'cache');
    const off = start('off', '--json', 'activate', 'repo/x');
    expect(off.status).toBe(2);
    start(dir, '--version');
    const cached = start(dir, '--json', 'activate', 'repo/x');
    expect({ status: cached.status, stdout: cached.stdout, stderr: cached.stderr }).toEqual({
      status: off.status,
      stdout: off.stdout,
      stderr: off.stderr,
    });
  });
});
