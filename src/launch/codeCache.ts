/**
 * V8 code cache for the single-file bundle. Node 20 has no module.enableCompileCache, so the
 * launcher compiles the program with vm.Script and hands V8 the bytecode it kept from an earlier
 * start (cachedData), which skips parsing and compiling 1.2 MB of JavaScript on every call.
 *
 * The cache is an optimisation only: whatever goes wrong (no home, a read-only or foreign
 * directory, a stale or damaged file, V8 refusing the data), the program compiles from source
 * and the command runs as before; nothing here throws or prints.
 *
 * Trust: V8 checks a cache's version, flags and the source's length, not its content (release
 * builds skip the checksum), so a file someone else could write would be code they chose. The
 * cache therefore lives in a directory of the user's own (mode 0700, owned by the effective
 * user, not a symlink), each file is checked the same way, and a SHA-256 of the data sits in
 * its header so a damaged file is refused before V8 sees it.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';

const MAGIC = 'cowstack-v8cache 1';
/** Cache files of this program: the sweep after a write removes only these. */
const OURS = /^cowstack-[0-9a-f]+-.+\.v8cache$/;
/** How many of them a sweep keeps (the newest): enough for a few bundles in use at once. */
export const KEEP = 4;

/**
 * Where the cache lives: COWSTACK_CODE_CACHE (a directory, or "off"), else
 * $XDG_CACHE_HOME/cowstack, else ~/.cache/cowstack; undefined when there is none.
 */
export function codeCacheDir(env: NodeJS.ProcessEnv, home: string | undefined): string | undefined {
  const set = env.COWSTACK_CODE_CACHE;
  if (set === 'off' || set === '0') return undefined;
  if (set && path.isAbsolute(set)) return set;
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'cowstack');
  return home && path.isAbsolute(home) ? path.join(home, '.cache', 'cowstack') : undefined;
}

/**
 * One file per bundle build, copy of it (`fileKey`: its size and mtime) and node version and
 * architecture (V8's bytecode depends on both): two bundles in use side by side (a checkout and
 * an installed copy) each keep theirs.
 */
export function cacheFileName(
  sourceHash: string,
  fileKey: string,
  nodeVersion = process.version,
  arch = process.arch,
): string {
  return `cowstack-${sourceHash}-${fileKey}-${nodeVersion}-${arch}.v8cache`;
}

/** Owned by the effective user and writable by nobody else. */
function ownedPrivate(st: Stats): boolean {
  const uid = process.geteuid?.();
  return uid !== undefined && st.uid === uid && (st.mode & 0o022) === 0;
}

function trustedDir(dir: string): boolean {
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && ownedPrivate(st);
  } catch {
    return false;
  }
}

const checksum = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/**
 * The cached data for `key` (what identifies the exact source: the bundle's size and mtime),
 * or undefined: missing, foreign, written for another key, or damaged.
 */
export function readCodeCache(dir: string, name: string, key: string): Buffer | undefined {
  if (!trustedDir(dir)) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(path.join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW);
    const st = fstatSync(fd);
    if (!st.isFile() || !ownedPrivate(st)) return undefined;
    const buf = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, buf, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    const nl = buf.indexOf(10);
    if (got !== st.size || nl < 0) return undefined;
    const [magic, version, fileKey, sum] = [...buf.subarray(0, nl).toString('latin1').split(' ')];
    const data = buf.subarray(nl + 1);
    if (`${magic} ${version}` !== MAGIC || fileKey !== key || sum !== checksum(data)) return undefined;
    return data;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Stores `data` for `key` (a new file renamed into place, so a reader never sees half of one)
 * and removes this program's cache files there beyond the KEEP newest (older builds, other node
 * versions). Returns whether it wrote; never throws.
 */
export function writeCodeCache(dir: string, name: string, key: string, data: Buffer): boolean {
  const file = path.join(dir, name);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!trustedDir(dir)) return false;
    const header = Buffer.from(`${MAGIC} ${key} ${checksum(data)}\n`, 'latin1');
    writeFileSync(tmp, Buffer.concat([header, data]), { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch {
    rmSync(tmp, { force: true, maxRetries: 0 });
    return false;
  }
  try {
    const others = readdirSync(dir)
      .filter((other) => other !== name && OURS.test(other))
      .map((other) => ({ other, mtime: lstatSync(path.join(dir, other)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime);
    for (const { other } of others.slice(KEEP - 1)) rmSync(path.join(dir, other));
  } catch {
    // Another start may be sweeping the same directory; what is left goes next time.
  }
  return true;
}

export interface CachedScript {
  /** What the script's source evaluates to. */
  result: unknown;
  /** Whether V8 took the cached data (false when there was none). */
  cacheUsed: boolean;
  /** Writes the cache when it was missing or refused; call once the program has run (its compiled functions count). */
  save(): boolean;
}

/**
 * Compiles and runs `source` in this context with the cache in `dir` (undefined: no cache).
 * `name` and `key` as for readCodeCache; filename/lineOffset place it in stack traces.
 */
export function runWithCodeCache(
  source: string,
  opts: { dir: string | undefined; name: string; key: string; filename: string; lineOffset?: number },
): CachedScript {
  const cachedData = opts.dir === undefined ? undefined : readCodeCache(opts.dir, opts.name, opts.key);
  let script: vm.Script;
  try {
    script = new vm.Script(source, { filename: opts.filename, lineOffset: opts.lineOffset, cachedData });
  } catch (error) {
    // A source error is the program's own and surfaces as it would without a cache.
    if (!cachedData) throw error;
    script = new vm.Script(source, { filename: opts.filename, lineOffset: opts.lineOffset });
  }
  const cacheUsed = cachedData !== undefined && script.cachedDataRejected !== true;
  const result = script.runInThisContext();
  let saved = false;
  return {
    result,
    cacheUsed,
    save: () => {
      if (cacheUsed || saved || opts.dir === undefined) return false;
      saved = true;
      try {
        return writeCodeCache(opts.dir, opts.name, opts.key, script.createCachedData());
      } catch {
        return false;
      }
    },
  };
}
