/**
 * Block data adapter (dd, sha256sum, sha512sum, md5sum, blkid, wipefs): the commands that read or write the
 * bytes of a device rather than its metadata. Every dd shape here is one that
 * sudoers/cowstack allows verbatim (dd with free arguments could overwrite any file), so a
 * new shape needs a new sudoers rule. Bulk copies keep one 4 MiB direct request in flight:
 * a bulk read or write of the shared LUN must not starve sanlock's lease renewals on the
 * same path.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin, sbin, SETUP } from './program.js';

/** dd's block for bulk copies: one LVM extent, so image sizes are whole blocks. */
export const BULK_BLOCK = '4M';

const dd = (args: string[], kind: RunRequest['kind'], extra: Partial<RunRequest> = {}): RunRequest => ({
  argv: ['dd', ...args],
  kind,
  root: true,
  timeout: 'data',
  ...extra,
});

/**
 * Zero the first `bytes` of a device (a snapshot COW header, a cache superblock): the
 * kernel then formats it afresh. Small, so the metadata-change timeout.
 */
export const zeroHeaderReq = (device: string, bytes: number): RunRequest =>
  dd(['if=/dev/zero', `of=${device}`, `bs=${bytes}`, 'count=1', 'oflag=direct', 'conv=fsync', 'status=none'], 'write', {
    timeout: 'change',
  });

/** Zero a whole device of `blocks` 4 MiB blocks (a new image must not show a former tenant's data). */
export const zeroReq = (device: string, blocks: number): RunRequest =>
  dd(
    [
      'if=/dev/zero',
      `of=${device}`,
      `bs=${BULK_BLOCK}`,
      `count=${blocks}`,
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ],
    'write',
  );

/** Copy one whole device onto another. */
export const copyReq = (from: string, to: string): RunRequest =>
  dd(
    [`if=${from}`, `of=${to}`, `bs=${BULK_BLOCK}`, 'iflag=direct', 'oflag=direct', 'conv=fsync', 'status=none'],
    'write',
  );

/** Copy blocks [at, at + blocks) of 4 MiB to the same place on another device (resumable copies). */
export const copyRangeReq = (from: string, to: string, at: number, blocks: number): RunRequest =>
  dd(
    [
      `if=${from}`,
      `of=${to}`,
      `bs=${BULK_BLOCK}`,
      `skip=${at}`,
      `seek=${at}`,
      `count=${blocks}`,
      'iflag=direct',
      'oflag=direct',
      'conv=fsync,notrunc',
      'status=none',
    ],
    'write',
  );

/**
 * Copy a device into a regular file (the staging copy of a sealed image that a node seeds).
 * Direct reads: the shared LUN is read once, at 4 MiB a request, and leaves no page cache.
 */
export const copyToFileReq = (device: string, file: string): RunRequest =>
  dd([`if=${device}`, `of=${file}`, `bs=${BULK_BLOCK}`, 'iflag=direct', 'conv=fsync', 'status=none'], 'write');

/** Write stdin onto a device (fullblock: a pipe delivers short reads that would misalign direct writes). */
export const writeFromStdinReq = (device: string, stdin: NodeJS.ReadableStream): RunRequest =>
  dd([`of=${device}`, `bs=${BULK_BLOCK}`, 'iflag=fullblock', 'oflag=direct', 'conv=fsync', 'status=none'], 'write', {
    stdin,
  });

/** Read a whole device to stdout, into a local file ('-': our own stdout). */
export const readToFileReq = (device: string, stdoutFile: string): RunRequest =>
  dd([`if=${device}`, `bs=${BULK_BLOCK}`, 'iflag=direct', 'status=none'], 'read', { stdoutFile });

/** sha256 (what cowstack records) or sha512 (what a catalogue list endorses) of a device or file. */
export const checksumReq = (device: string, algo: 'sha256' | 'sha512' = 'sha256'): RunRequest => ({
  argv: [`${algo}sum`, device],
  kind: 'read',
  root: true,
  timeout: 'data',
});

/** The MD5 OpenNebula's marketplace records for an exported image (its own drivers run md5sum). */
export const md5Req = (device: string): RunRequest => ({
  argv: ['md5sum', device],
  kind: 'read',
  root: true,
  timeout: 'data',
});

/** sha256sum, sha512sum and md5sum print "HEX  NAME". */
export const parseChecksum = (stdout: string): string => stdout.split(/\s+/)[0]!;

/** Probe a device for any signature (file system, partition table, PV): `-p` reads the device, not a cache. */
export const signaturesReq = (device: string): RunRequest => ({
  argv: ['blkid', '-p', '-o', 'export', device],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const wipeSignaturesReq = (device: string): RunRequest => ({
  argv: ['wipefs', '-a', device],
  kind: 'write',
  root: true,
});

/** Format a new volatile disk as swap. */
export const mkswapReq = (device: string): RunRequest => ({
  argv: ['mkswap', device],
  kind: 'write',
  root: true,
  timeout: 'data',
});

/** Format a new volatile disk with a file system of this type (mkfs -t). */
export const mkfsReq = (device: string, fsType: string): RunRequest => ({
  argv: ['mkfs', '-t', fsType, device],
  kind: 'write',
  root: true,
  timeout: 'data',
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('blkid', 'util-linux', 'refuse a non-empty LUN (cluster init)', SETUP),
  sbin('wipefs', 'util-linux', 'wipe the LUN with cluster init --force', SETUP),
  bin('dd', 'coreutils', 'zero a COW header, import/export/flatten image data'),
  bin('sha256sum', 'coreutils', 'checksum a sealed image'),
  bin('sha512sum', 'coreutils', 'check a downloaded catalogue image against its signed sha512'),
  bin('md5sum', 'coreutils', "the MD5 of an image exported to OpenNebula's marketplace (ds export)"),
  sbin('mkswap', 'util-linux', 'format a volatile swap disk (tm mkswap/mkimage)'),
  sbin('mkfs', 'util-linux', 'format a volatile disk with a file system (tm mkimage)'),
];
