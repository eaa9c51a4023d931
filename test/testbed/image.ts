// Builds (once) and caches the testbed guest image: Debian's 6.1 kernel plus an uncompressed
// cpio initramfs holding a whole bookworm rootfs. See image/build-image.sh for the recipe.
import { createHash } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultLog, exists, isAlive, cmdline, run, runOk, sleep, readJson } from './util.js';

export const RECIPE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'image');
/** Files whose contents define the image (their hash names the cache entry). */
export const RECIPE_FILES = ['build-image.sh', 'init', 'poweroff', 'modules.txt', 'packages.txt'] as const;

/** Host commands the testbed needs, and the Debian package that provides each. */
export const HOST_TOOLS: Record<string, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  tgtd: 'tgt',
  tgtadm: 'tgt',
  debootstrap: 'debootstrap',
  cpio: 'cpio',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  'dpkg-deb': 'dpkg',
  'apt-get': 'apt',
};

export interface ImageManifest {
  hash: string;
  fullHash: string;
  builtAt: string;
  buildSeconds: number;
  kernel: { package: string; version: string; release: string };
  node: { version: string; binary: string };
  suite: string;
  mirror: string;
  packages: string[];
  installed: Record<string, string>;
  modules: number;
  sizes: { vmlinuz: number; initramfs: number };
}

export interface ImageInfo {
  dir: string;
  hash: string;
  built: boolean;
  seconds: number;
}

export function cacheRoot(cacheDir?: string): string {
  return path.resolve(cacheDir ?? process.env.COWSTACK_TESTBED_CACHE ?? '/var/cache/cowstack-testbed');
}

export function readPackageList(): string[] {
  return readFileSync(path.join(RECIPE_DIR, 'packages.txt'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

async function which(cmd: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const d of dirs) {
    if (d && (await exists(path.join(d, cmd)))) return true;
  }
  return false;
}

/** Throws a helpful error if the host lacks root or a needed tool. */
export async function checkHost(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the testbed needs root (debootstrap, tgtd, qemu networking)');
  const missing: string[] = [];
  for (const [cmd, pkg] of Object.entries(HOST_TOOLS)) {
    if (!(await which(cmd))) missing.push(pkg);
  }
  if (missing.length) {
    throw new Error(`missing host packages; run: apt-get install -y ${[...new Set(missing)].join(' ')}`);
  }
}

const KERNEL_RE = /^linux-image-6\.1\.0-(\d+)-amd64(-unsigned)?$/;

/** The newest Debian 6.1.0-N amd64 kernel package apt knows (signed preferred), and its version. */
export async function resolveKernelPackage(
  log: (s: string) => void = defaultLog,
): Promise<{ name: string; version: string }> {
  const override = process.env.COWSTACK_TESTBED_KERNEL_PKG;
  const lookup = async () => {
    const names = override
      ? [override]
      : (await run(['apt-cache', 'pkgnames', 'linux-image-6.1.0-'])).stdout
          .split('\n')
          .filter((n) => KERNEL_RE.test(n.trim()));
    const ranked = names
      .map((n) => n.trim())
      .map((n) => ({ n, abi: Number(KERNEL_RE.exec(n)?.[1] ?? 0), unsigned: n.endsWith('-unsigned') }))
      .sort((a, b) => b.abi - a.abi || Number(a.unsigned) - Number(b.unsigned));
    for (const { n } of ranked) {
      const show = await run(['apt-cache', 'show', '--no-all-versions', n]);
      const v = /^Version: (.+)$/m.exec(show.stdout)?.[1];
      if (show.exitCode === 0 && v) return { name: n, version: v.trim() };
    }
    return undefined;
  };
  let found = await lookup();
  if (!found) {
    log('testbed: no linux-image-6.1.0-*-amd64 in the apt lists; running apt-get update');
    await runOk(['apt-get', 'update', '-q'], { timeoutMs: 300_000 });
    found = await lookup();
  }
  if (!found) throw new Error(`no Debian 6.1 kernel package found (${override ?? 'linux-image-6.1.0-N-amd64'})`);
  return found;
}

/** sha256 over the recipe files, the package list, the kernel package version and process.version. */
export async function imageHash(kernel: { name: string; version: string }): Promise<string> {
  const h = createHash('sha256');
  for (const f of RECIPE_FILES) {
    h.update(`file ${f}\0`);
    h.update(await fsp.readFile(path.join(RECIPE_DIR, f)));
    h.update('\0');
  }
  h.update(`packages ${readPackageList().join(',')}\0`);
  h.update(`kernel ${kernel.name}=${kernel.version}\0`);
  h.update(`node ${process.version}\0`);
  return h.digest('hex');
}

/** Lazily unmounts everything mounted below dir (a killed debootstrap leaves proc/sys mounted). */
async function unmountBelow(dir: string): Promise<void> {
  const mounts = (await fsp.readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && m.startsWith(dir + '/'))
    .sort()
    .reverse();
  for (const m of mounts) await run(['umount', '-l', m]);
}

/** Removes a build directory, never following into a mount. */
async function removeBuildDir(dir: string): Promise<void> {
  await unmountBelow(dir);
  const still = (await fsp.readFile('/proc/mounts', 'utf8')).includes(` ${dir}/`);
  if (still) throw new Error(`refusing to remove ${dir}: something is still mounted below it`);
  await fsp.rm(dir, { recursive: true, force: true });
}

function lockOwner(pidText: string | undefined): number | undefined {
  const pid = Number(pidText?.trim());
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
  const argv = cmdline(pid);
  return argv && argv.some((a) => a.includes('node')) ? pid : undefined;
}

async function isComplete(dir: string): Promise<boolean> {
  return (
    (await exists(path.join(dir, 'manifest.json'))) &&
    (await exists(path.join(dir, 'vmlinuz'))) &&
    (await exists(path.join(dir, 'initramfs.cpio'))) &&
    (await exists(path.join(dir, 'id_ed25519')))
  );
}

/** Removes stale temp build dirs and keeps the current image plus the newest other one. */
async function prune(root: string, keepHash: string, log: (s: string) => void): Promise<void> {
  const entries = await fsp.readdir(root, { withFileTypes: true });
  const complete: { name: string; mtime: number }[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const full = path.join(root, e.name);
    const tmp = /^\.tmp-[0-9a-f]+-(\d+)$/.exec(e.name);
    if (tmp) {
      if (!lockOwner(tmp[1])) {
        log(`testbed: removing stale build dir ${full}`);
        await removeBuildDir(full);
      }
      continue;
    }
    if (/^[0-9a-f]{16}$/.test(e.name) && e.name !== keepHash && (await isComplete(full))) {
      complete.push({ name: e.name, mtime: (await fsp.stat(full)).mtimeMs });
    }
  }
  complete.sort((a, b) => b.mtime - a.mtime);
  for (const old of complete.slice(1)) {
    log(`testbed: pruning old image ${path.join(root, old.name)}`);
    await fsp.rm(path.join(root, old.name), { recursive: true, force: true });
  }
}

/**
 * Returns the cached image for the current recipe, building it first if needed. A build goes
 * into a temp dir next to the cache entry and is renamed into place only when complete.
 */
export async function ensureImage(
  opts: { cacheDir?: string; log?: (s: string) => void; force?: boolean } = {},
): Promise<ImageInfo> {
  const log = opts.log ?? defaultLog;
  const t0 = Date.now();
  await checkHost();
  const root = cacheRoot(opts.cacheDir);
  await fsp.mkdir(root, { recursive: true });
  const kernel = await resolveKernelPackage(log);
  const fullHash = await imageHash(kernel);
  const hash = fullHash.slice(0, 16);
  const dir = path.join(root, hash);

  if (opts.force && (await exists(dir))) {
    log(`testbed: --force: removing ${dir}`);
    await fsp.rm(dir, { recursive: true, force: true });
  }
  if (await isComplete(dir)) return { dir, hash, built: false, seconds: (Date.now() - t0) / 1000 };

  // One builder per hash; others wait for it. A lock whose owner died is taken over.
  const lock = path.join(root, `.lock-${hash}`);
  for (;;) {
    try {
      await fsp.mkdir(lock);
      await fsp.writeFile(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = lockOwner(await fsp.readFile(path.join(lock, 'pid'), 'utf8').catch(() => undefined));
      if (owner) {
        log(`testbed: image ${hash} is being built by pid ${owner}; waiting`);
        while (isAlive(owner) && !(await isComplete(dir))) await sleep(2000);
        if (await isComplete(dir)) return { dir, hash, built: false, seconds: (Date.now() - t0) / 1000 };
      } else {
        // no live owner (or the pid file was not written yet: give a racing owner a moment)
        await sleep(500);
        const again = lockOwner(await fsp.readFile(path.join(lock, 'pid'), 'utf8').catch(() => undefined));
        if (!again) await fsp.rm(lock, { recursive: true, force: true });
      }
    }
  }

  const tmp = path.join(root, `.tmp-${hash}-${process.pid}`);
  try {
    if (await isComplete(dir)) return { dir, hash, built: false, seconds: (Date.now() - t0) / 1000 };
    await prune(root, hash, log);
    await removeBuildDir(tmp);
    await fsp.mkdir(tmp, { recursive: true });
    const packages = readPackageList();
    const mirror = process.env.COWSTACK_TESTBED_MIRROR ?? 'http://deb.debian.org/debian';
    const suite = 'bookworm';
    const nodeBin = process.execPath;
    log(`testbed: building image ${hash} (kernel ${kernel.name} ${kernel.version}, node ${process.version}) in ${tmp}`);
    let partial = '';
    const r = await run(['bash', path.join(RECIPE_DIR, 'build-image.sh')], {
      env: {
        ...process.env,
        PATH: `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        LC_ALL: 'C',
        DEBIAN_FRONTEND: 'noninteractive',
        TB_OUT: tmp,
        TB_KERNEL_PKG: kernel.name,
        TB_PACKAGES: packages.join(','),
        TB_NODE_BIN: nodeBin,
        TB_RECIPE_DIR: RECIPE_DIR,
        TB_MIRROR: mirror,
        TB_SUITE: suite,
        TB_DEB_CACHE: path.join(root, 'debs'),
      },
      onStderr: (chunk) => {
        partial += chunk;
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) if (l.trim()) log(l);
      },
    });
    if (partial.trim()) log(partial);
    if (r.exitCode !== 0) throw new Error(`image build failed (exit ${r.exitCode}); see the log above`);

    const release = (await fsp.readFile(path.join(tmp, 'kernel-release'), 'utf8')).trim();
    const installed: Record<string, string> = {};
    for (const line of (await fsp.readFile(path.join(tmp, 'dpkg.lst'), 'utf8')).split('\n')) {
      const [n, v] = line.split('\t');
      if (n && v) installed[n] = v;
    }
    const seconds = (Date.now() - t0) / 1000;
    const manifest: ImageManifest = {
      hash,
      fullHash,
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round(seconds),
      kernel: { package: kernel.name, version: kernel.version, release },
      node: { version: process.version, binary: nodeBin },
      suite,
      mirror,
      packages,
      installed,
      modules: (await fsp.readFile(path.join(tmp, 'modules.lst'), 'utf8')).split('\n').filter(Boolean).length,
      sizes: {
        vmlinuz: (await fsp.stat(path.join(tmp, 'vmlinuz'))).size,
        initramfs: (await fsp.stat(path.join(tmp, 'initramfs.cpio'))).size,
      },
    };
    await fsp.writeFile(path.join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    if (await exists(dir)) await fsp.rm(dir, { recursive: true, force: true }); // incomplete leftover
    await fsp.rename(tmp, dir);
    log(
      `testbed: image ${hash} built in ${Math.round(seconds)} s ` +
        `(initramfs ${(manifest.sizes.initramfs / 2 ** 20).toFixed(0)} MiB)`,
    );
    return { dir, hash, built: true, seconds };
  } finally {
    if (await exists(tmp))
      await removeBuildDir(tmp).catch((e) => log(`testbed: could not remove ${tmp}: ${String(e)}`));
    await fsp.rm(lock, { recursive: true, force: true });
  }
}

export async function readManifest(dir: string): Promise<ImageManifest | undefined> {
  return readJson<ImageManifest>(path.join(dir, 'manifest.json'));
}
