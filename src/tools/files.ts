/**
 * Reading and writing small files and sysfs through the runner, so the same code works
 * locally and over ssh. Writes go through `install` with the content on stdin.
 */
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { bin, SETUP } from './program.js';

export const readFileReq = (path: string): RunRequest => ({
  argv: ['cat', '--', path],
  kind: 'read',
  root: true,
  allowFailure: true,
});

/** A file the caller can read itself (sysfs, or anything when cowstack already runs as root). */
export const readOwnFileReq = (path: string): RunRequest => ({
  argv: ['cat', '--', path],
  kind: 'read',
  allowFailure: true,
});

export async function readFile(runner: Runner, path: string): Promise<string | undefined> {
  const r = await runner.run(readFileReq(path));
  return r.exitCode === 0 ? r.stdout : undefined;
}

/** One name a line; with hidden, the dot files too (ls -A). */
export const listDirReq = (path: string, hidden = true): RunRequest => ({
  argv: ['ls', '-1', ...(hidden ? ['-A'] : []), '--', path],
  kind: 'read',
  allowFailure: true,
});

export async function listDir(runner: Runner, path: string): Promise<string[]> {
  const r = await runner.run(listDirReq(path));
  return r.exitCode === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

/** Resolve symlinks all the way; the path does not exist: a failure. */
export const realpathReq = (path: string): RunRequest => ({
  argv: ['realpath', '-e', '--', path],
  kind: 'read',
  allowFailure: true,
});

/**
 * A symlink's target, one level: a /dev/mapper/<name> link is not followed on to its /dev/dm-N,
 * which realpath does. Not a symlink: a failure.
 */
export const readLinkReq = (path: string): RunRequest => ({ ...realpathReq(path), argv: ['readlink', '--', path] });

/** The path a path request answers; undefined when it failed. */
async function pathAnswer(runner: Runner, req: RunRequest): Promise<string | undefined> {
  const r = await runner.run(req);
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

export const realpath = (runner: Runner, path: string) => pathAnswer(runner, realpathReq(path));
export const readLink = (runner: Runner, path: string) => pathAnswer(runner, readLinkReq(path));

/**
 * Where a program reads its stdin as a file. /dev/stdin is a symlink that udev or systemd
 * creates and minimal systems lack; /proc/self/fd/0 exists wherever /proc is mounted.
 * It reopens stdin, which a socket cannot be: the local runner gives such a child a file
 * (exec/localRunner.ts), ssh gives the remote command a pipe.
 */
export const STDIN_PATH = '/proc/self/fd/0';

/** Replace a file atomically enough for config: write a sibling, then rename over it. */
export function writeFileReqs(path: string, content: string, mode = '0644') {
  const tmp = `${path}.cowstack-new`;
  return [
    {
      argv: ['install', '-D', '-m', mode, STDIN_PATH, tmp],
      kind: 'write' as const,
      root: true,
      input: content,
      title: `write ${path}`,
    },
    { argv: ['mv', '-f', '--', tmp, path], kind: 'write' as const, root: true },
  ];
}

/**
 * A small root-owned file written whole from stdin in one command (no rename: a reader
 * that finds it cut short refuses it as damaged rather than trusting part of it).
 */
export const writeRootFileReq = (path: string, content: string | Buffer, mode = '0644'): RunRequest => ({
  argv: ['install', '-D', '-m', mode, STDIN_PATH, path],
  kind: 'write',
  root: true,
  input: content,
  title: `write ${path}`,
});

/** Kernel name (sdb, dm-3) of a block device path. */
export async function kernelName(runner: Runner, device: string): Promise<string | undefined> {
  const real = await realpath(runner, device);
  return real?.replace(/^\/dev\//, '');
}

/** What sits on top of a block device: dm names of its holders (sysfs), e.g. LVs on a PV. */
export async function holders(runner: Runner, device: string): Promise<Array<{ kernel: string; name: string }>> {
  const kname = await kernelName(runner, device);
  if (!kname) return [];
  const list = await listDir(runner, `/sys/class/block/${kname}/holders`);
  const out: Array<{ kernel: string; name: string }> = [];
  for (const h of list) {
    const name = (await readFile(runner, `/sys/class/block/${h}/dm/name`))?.trim();
    out.push({ kernel: h, name: name ?? h });
  }
  return out;
}

/** Running processes by exact name (pidof). */
export async function pidof(runner: Runner, program: string): Promise<number[]> {
  const r = await runner.run({ argv: ['pidof', program], kind: 'read', allowFailure: true });
  return r.exitCode === 0 ? r.stdout.trim().split(/\s+/).map(Number) : [];
}

/** Write a file from stdin as the caller (cowstack install, which runs as root itself). */
export const installFileReq = (path: string, content: string, mode: string): RunRequest => ({
  argv: ['install', '-D', '-m', mode, STDIN_PATH, path],
  kind: 'write',
  input: content,
  title: `write ${path}`,
});

export const moveReq = (from: string, to: string): RunRequest => ({
  argv: ['mv', '-f', '--', from, to],
  kind: 'write',
});

/** Also used by flock.ts (the lock directory, the holder file) and iscsiadm.ts (a node record). */
export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('cat', 'coreutils', 'read lvm.conf, lvmlocal.conf, journal entries, sysfs dm names'),
  bin(
    'install',
    'coreutils',
    "write journal entries, the catalogue state, the node lock's directory and holder (and lvm.conf at set-up)",
  ),
  bin('mv', 'coreutils', 'put a rewritten lvm.conf/lvmlocal.conf in place', SETUP),
];
