/**
 * Files of a VM's backup directory on a host (OpenNebula's `<vm_dir>/backup`), handled as
 * the service user: it owns the directory, and reads cowstack's devices through the `disk`
 * group. Paths are validated by the caller (src/core/backups.ts).
 */
import type { RunRequest } from '../exec/types.js';

export const mkdirReq = (dir: string): RunRequest => ({ argv: ['mkdir', '-p', '--', dir], kind: 'write' });

/** Remove a backup directory and everything in it (postbackup). */
export const removeTreeReq = (dir: string): RunRequest => ({ argv: ['rm', '-rf', '--', dir], kind: 'write' });

export const removeFileReq = (file: string): RunRequest => ({ argv: ['rm', '-f', '--', file], kind: 'write' });

/** A sparse file of `bytes`: the canvas an increment's changed clusters are copied onto. */
export const sparseFileReq = (file: string, bytes: number): RunRequest => ({
  argv: ['truncate', '-s', String(bytes), '--', file],
  kind: 'write',
});

/** Copy `blocks` blocks of `block` bytes at block `at` of a device to the same place in a file. */
export const copyBlocksReq = (device: string, file: string, block: number, at: number, blocks: number): RunRequest => ({
  argv: [
    'dd',
    `if=${device}`,
    `of=${file}`,
    `bs=${block}`,
    `skip=${at}`,
    `seek=${at}`,
    `count=${blocks}`,
    'conv=notrunc',
    'status=none',
  ],
  kind: 'write',
  timeout: 'data',
});

/** The size in bytes of each file (stat), for the report. */
export const sizesReq = (files: readonly string[]): RunRequest => ({
  argv: ['stat', '-c', '%s', '--', ...files],
  kind: 'read',
});
