/**
 * Host adapter: the plain POSIX programs cowstack runs on a node or the front-end (files and
 * links of the VM directories, the node's name, who holds a device). Most run as the
 * service user; only those that touch root's files or other users' processes run as root.
 */
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { bin, SETUP } from './program.js';

/** The node's name as the cluster registers it (uname -n, what lvmlockd and sanlock see too). */
export const nodeNameReq = (): RunRequest => ({ argv: ['uname', '-n'], kind: 'read' });

export async function nodeName(runner: Runner): Promise<string> {
  return (await runner.run(nodeNameReq())).stdout.trim();
}

export const userIdReq = (): RunRequest => ({ argv: ['id', '-u'], kind: 'read' });

const TEST_FLAG = { file: '-f', dir: '-d', executable: '-x' } as const;
/** Exit 0 when the path exists as that kind. */
export const existsReq = (path: string, what: keyof typeof TEST_FLAG): RunRequest => ({
  argv: ['test', TEST_FLAG[what], path],
  kind: 'read',
  allowFailure: true,
});

export const mkdirReq = (dir: string): RunRequest => ({ argv: ['mkdir', '-p', '--', dir], kind: 'write' });

/** Point `path` at `target`, replacing a link that is there (-n: never descend into a linked directory). */
export const linkReq = (target: string, path: string): RunRequest => ({
  argv: ['ln', '-sfn', '--', target, path],
  kind: 'write',
});

/** rm -f (or -rf with recursive) as the service user: a missing path is not an error. */
export const removeReq = (path: string, o: { recursive?: boolean } = {}): RunRequest => ({
  argv: ['rm', o.recursive ? '-rf' : '-f', '--', path],
  kind: 'write',
});

/** rm -f of one of root's own files (a journal entry). */
export const removeRootFileReq = (path: string): RunRequest => ({
  argv: ['rm', '-f', '--', path],
  kind: 'write',
  root: true,
});

/** Keep the first original of a file we rewrite (--no-clobber: a second run keeps the first copy). */
export const backupOnceReq = (path: string): RunRequest => ({
  argv: ['cp', '-a', '--no-clobber', path, `${path}.cowstack-orig`],
  kind: 'write',
  root: true,
  allowFailure: true,
});

/** One line in the node's system log (an admin's --force past a refusal is recorded where admins look). */
export const syslogReq = (message: string): RunRequest => ({
  argv: ['logger', '-t', 'cowstack', '-p', 'auth.warning', '--', message],
  kind: 'write',
});

/** The names of the regular files directly in dir, one a line. */
export const listFilesReq = (dir: string): RunRequest => ({
  argv: ['find', dir, '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n'],
  kind: 'read',
  allowFailure: true,
});

/** "NAME MODE" (octal permission bits) of each regular file directly in dir, one a line. */
export const fileModesReq = (dir: string): RunRequest => ({
  argv: ['find', dir, '-maxdepth', '1', '-type', 'f', '-printf', '%f %m\\n'],
  kind: 'read',
  allowFailure: true,
});

/** fileModesReq's answer by file name (modes as numbers); a directory that is not there has none. */
export function parseFileModes(stdout: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const m = /^(.+) ([0-7]{1,4})$/.exec(line);
    if (m) out.set(m[1]!, Number.parseInt(m[2]!, 8));
  }
  return out;
}

/** Symlinks named like `name` exactly `depth` levels below dir, as paths. */
export const findLinksReq = (dir: string, depth: number, name: string): RunRequest => ({
  argv: ['find', dir, '-mindepth', String(depth), '-maxdepth', String(depth), '-type', 'l', '-name', name],
  kind: 'read',
  allowFailure: true,
});

/** A remote file into a local one (stdout goes to the file, never into memory). */
export const fetchFileReq = (path: string, localFile: string): RunRequest => ({
  argv: ['cat', '--', path],
  kind: 'read',
  stdoutFile: localFile,
  timeout: 'data',
});

/** Write stdin into a file as the service user (a VM directory's files). */
export const storeFileReq = (
  path: string,
  stdin: NodeJS.ReadableStream,
  extra: Pick<RunRequest, 'timeout'> = {},
): RunRequest => ({
  argv: ['dd', `of=${path}`, 'bs=1M', 'status=none'],
  kind: 'write',
  stdin,
  ...extra,
});

/** An ISO 9660 image of dir with Joliet and Rock Ridge names (what OpenNebula's context disk is). */
export const isoImageReq = (out: string, label: string, dir: string): RunRequest => ({
  argv: ['genisoimage', '-quiet', '-o', out, '-V', label, '-J', '-R', dir],
  kind: 'write',
});

/** The pids that hold a device open on stdout (fuser's decorations go to stderr); exit 1 = nobody. */
export const openersReq = (device: string): RunRequest => ({
  argv: ['fuser', device],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const processesReq = (pids: readonly number[] | readonly string[]): RunRequest => ({
  argv: ['ps', '-o', 'pid=,user=,comm=', '-p', pids.join(',')],
  kind: 'read',
  allowFailure: true,
});

/** visudo's syntax check of a sudoers file before it goes into place (a broken one locks out sudo). */
export const sudoersCheckReq = (file: string): RunRequest => ({
  argv: ['visudo', '-cf', file],
  kind: 'write',
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('fuser', 'psmisc', 'name the processes holding a device open'),
  bin('rm', 'coreutils', 'remove finished journal entries'),
  bin('cp', 'coreutils', 'back up lvm.conf/lvmlocal.conf once', SETUP),
];
