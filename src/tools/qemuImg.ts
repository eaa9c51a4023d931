/**
 * qemu-img and qemu-io: the qcow2 files of a backup. They run as the service user, not as
 * root: they read cowstack's /dev/mapper devices through the `disk` group (as OpenNebula's
 * oneadmin does on LVM hosts) and write files in the VM's backup directory, which is the
 * service user's. A backup file's qcow2 clusters are 64 KiB, the unit increments are cut in.
 */
import type { RunRequest } from '../exec/types.js';

/** qcow2 cluster size of every file cowstack writes: increments are whole clusters. */
export const CLUSTER = 65536;

const qemuImg = (args: string[], kind: RunRequest['kind'], extra: Partial<RunRequest> = {}): RunRequest => ({
  argv: ['qemu-img', ...args],
  kind,
  timeout: 'data',
  ...extra,
});

/** A raw device or file into a new qcow2 file (zero clusters stay unallocated). */
export const toQcow2Req = (from: string, file: string): RunRequest =>
  qemuImg(['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${CLUSTER}`, from, file], 'write');

/** An empty qcow2 of `bytes` virtual bytes: an increment with nothing changed. */
export const createQcow2Req = (file: string, bytes: number): RunRequest =>
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, file, String(bytes)], 'write');

/**
 * The qemu block options that open `files` as one chain: the last is the top, each file's
 * backing the one before it, the first (the full backup) has none. The files are not
 * touched (OpenNebula's own restore rebases copies; the options give the same chain).
 */
export function chainOptions(files: readonly string[]): string {
  const parts: string[] = [];
  files
    .slice()
    .reverse()
    .forEach((f, depth) => {
      const key = 'backing.'.repeat(depth);
      parts.push(`${key}driver=qcow2`, `${key}file.driver=file`, `${key}file.filename=${f}`);
    });
  return parts.join(',');
}

/** Write a backup chain's content onto an existing device (the full backup first, increments after). */
export const chainToDeviceReq = (files: readonly string[], device: string): RunRequest =>
  qemuImg(['convert', '-q', '-n', '--image-opts', chainOptions(files), '-O', 'raw', device], 'write');

export const infoReq = (file: string): RunRequest =>
  qemuImg(['info', '--output=json', '-f', 'qcow2', file], 'read', { timeout: 'query' });

/** `qemu-img info --output=json`: the virtual size in bytes. */
export function parseVirtualSize(stdout: string): number {
  const size = (JSON.parse(stdout) as { 'virtual-size'?: unknown })['virtual-size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0)
    throw new Error(`qemu-img info gave no virtual size: ${stdout.slice(0, 200)}`);
  return size;
}

export const mapReq = (file: string): RunRequest =>
  qemuImg(['map', '--output=json', '-f', 'qcow2', file], 'read', { timeout: 'query' });

export interface Range {
  start: number;
  length: number;
}

/** `qemu-img map --output=json`: the ranges that hold data in the file itself. */
export function parseDataRanges(stdout: string): Range[] {
  const rows = JSON.parse(stdout) as Array<{ start: number; length: number; data: boolean; depth?: number }>;
  return rows.filter((r) => r.data && !r.depth).map((r) => ({ start: r.start, length: r.length }));
}

/**
 * Mark ranges of a qcow2 file as zero clusters. Unallocated clusters of an increment mean
 * "unchanged since the previous backup"; a range the VM overwrote with zeros must say zero.
 */
export const writeZeroesReq = (file: string, ranges: readonly Range[]): RunRequest => ({
  argv: ['qemu-io', '-f', 'qcow2', ...ranges.flatMap((r) => ['-c', `write -z ${r.start} ${r.length}`]), file],
  kind: 'write',
  timeout: 'data',
});
