/**
 * dmsetup adapter: table builders, status parsers, and argv for every dmsetup verb
 * cowstack uses. Tables are passed as one argv element (`--table`), never through a shell.
 */
import { commandFailed } from '../exec/errors.js';
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { sbin } from './program.js';

const req = (args: string[], kind: RunRequest['kind'], extra: Partial<RunRequest> = {}): RunRequest => ({
  argv: ['dmsetup', ...args],
  kind,
  root: true,
  timeout: kind === 'read' ? 'query' : 'change',
  ...extra,
});

// ---- tables --------------------------------------------------------------------------

export type SnapshotMode = 'P' | 'PO' | 'N';

export const linearTable = (sectors: number, device: string, offset = 0): string =>
  `0 ${sectors} linear ${device} ${offset}`;

/** Every I/O fails at once with EIO (a placeholder a process may open and probe without hanging). */
export const errorTable = (sectors: number): string => `0 ${sectors} error`;

export function snapshotTable(
  sectors: number,
  origin: string,
  cow: string,
  mode: SnapshotMode,
  chunkSectors: number,
): string {
  if (!Number.isInteger(chunkSectors) || chunkSectors < 8 || (chunkSectors & (chunkSectors - 1)) !== 0) {
    throw new Error(`snapshot chunk size must be a power of two of at least 8 sectors (4 KiB), got ${chunkSectors}`);
  }
  return `0 ${sectors} snapshot ${origin} ${cow} ${mode} ${chunkSectors}`;
}

export type CacheMode = 'writeback' | 'writethrough' | 'passthrough';

export function cacheTable(
  sectors: number,
  meta: string,
  data: string,
  origin: string,
  blockSectors: number,
  mode: CacheMode,
  policy = 'smq',
  policyArgs: Record<string, string | number> = {},
): string {
  if (blockSectors < 64 || blockSectors > 2097152 || blockSectors % 64 !== 0) {
    throw new Error(`cache block size must be a multiple of 64 sectors between 64 and 2097152, got ${blockSectors}`);
  }
  const args = Object.entries(policyArgs).flatMap(([k, v]) => [k, String(v)]);
  return (
    `0 ${sectors} cache ${meta} ${data} ${origin} ${blockSectors} ` +
    `1 ${mode} ${policy} ${args.length} ${args.join(' ')}`
  ).trimEnd();
}

export function writecacheTable(
  sectors: number,
  origin: string,
  cache: string,
  blockBytes = 4096,
  options: string[] = [],
): string {
  return `0 ${sectors} writecache s ${origin} ${cache} ${blockBytes} ${options.length} ${options.join(' ')}`.trimEnd();
}

// ---- status parsers --------------------------------------------------------------------

/** One line of `dmsetup status NAME` / `dmsetup table NAME`: start, length, target, rest. */
export interface DmLine {
  start: number;
  length: number;
  target: string;
  args: string[];
}

export function parseDmLines(stdout: string): DmLine[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const [start, length, target, ...args] = line.split(/\s+/);
      return { start: Number(start), length: Number(length), target: target ?? '', args };
    });
}

export type SnapshotStatus =
  | { state: 'active'; allocatedSectors: number; totalSectors: number; metadataSectors: number; usedPercent: number }
  | { state: 'invalid' | 'overflow' | 'merge-failed' | 'unknown' };

export function parseSnapshotStatus(args: string[]): SnapshotStatus {
  const first = args[0] ?? '';
  const special: Record<string, SnapshotStatus['state']> = {
    Invalid: 'invalid',
    Overflow: 'overflow',
    Unknown: 'unknown',
  };
  if (first in special) return { state: special[first]! } as SnapshotStatus;
  if (first === 'Merge' && args[1] === 'failed') return { state: 'merge-failed' };
  const m = /^(\d+)\/(\d+)$/.exec(first);
  if (!m) throw new Error(`unrecognised snapshot status "${args.join(' ')}"`);
  const allocated = Number(m[1]);
  const total = Number(m[2]);
  return {
    state: 'active',
    allocatedSectors: allocated,
    totalSectors: total,
    metadataSectors: Number(args[1] ?? 0),
    usedPercent: total ? Math.round((allocated / total) * 10000) / 100 : 0,
  };
}

export interface CacheStatus {
  metadataBlockSectors: number;
  metadataUsed: number;
  metadataTotal: number;
  cacheBlockSectors: number;
  cacheUsed: number;
  cacheTotal: number;
  readHits: number;
  readMisses: number;
  writeHits: number;
  writeMisses: number;
  demotions: number;
  promotions: number;
  dirty: number;
  features: string[];
  coreArgs: Record<string, string>;
  policy: string;
  policyArgs: Record<string, string>;
  mode: 'rw' | 'ro' | string;
  needsCheck: boolean;
  /** The target reported Fail / Error instead of counters. */
  failed?: boolean;
}

/** Status fields after "start len cache": see Documentation/admin-guide/device-mapper/cache.rst. */
export function parseCacheStatus(args: string[]): CacheStatus {
  if (args[0] === 'Fail' || args[0] === 'Error') {
    return { ...emptyCache(), failed: true };
  }
  let i = 0;
  const next = (): string => args[i++] ?? '';
  const pair = (): [number, number] => {
    const [a, b] = next().split('/');
    return [Number(a), Number(b)];
  };
  const metadataBlockSectors = Number(next());
  const [metadataUsed, metadataTotal] = pair();
  const cacheBlockSectors = Number(next());
  const [cacheUsed, cacheTotal] = pair();
  const counters = Array.from({ length: 7 }, () => Number(next()));
  const featureCount = Number(next());
  const features = Array.from({ length: featureCount }, () => next());
  const coreCount = Number(next());
  const core = Array.from({ length: coreCount }, () => next());
  const policy = next();
  const policyCount = Number(next());
  const pol = Array.from({ length: policyCount }, () => next());
  const mode = next();
  const check = next();
  return {
    metadataBlockSectors,
    metadataUsed,
    metadataTotal,
    cacheBlockSectors,
    cacheUsed,
    cacheTotal,
    readHits: counters[0]!,
    readMisses: counters[1]!,
    writeHits: counters[2]!,
    writeMisses: counters[3]!,
    demotions: counters[4]!,
    promotions: counters[5]!,
    dirty: counters[6]!,
    features,
    coreArgs: toPairs(core),
    policy,
    policyArgs: toPairs(pol),
    mode,
    needsCheck: check === 'needs_check',
  };
}

function emptyCache(): CacheStatus {
  return {
    metadataBlockSectors: 0,
    metadataUsed: 0,
    metadataTotal: 0,
    cacheBlockSectors: 0,
    cacheUsed: 0,
    cacheTotal: 0,
    readHits: 0,
    readMisses: 0,
    writeHits: 0,
    writeMisses: 0,
    demotions: 0,
    promotions: 0,
    dirty: 0,
    features: [],
    coreArgs: {},
    policy: '',
    policyArgs: {},
    mode: '',
    needsCheck: false,
  };
}

const toPairs = (list: string[]): Record<string, string> => {
  const out: Record<string, string> = {};
  for (let j = 0; j + 1 < list.length; j += 2) out[list[j]!] = list[j + 1]!;
  return out;
};

export interface WritecacheStatus {
  error: number;
  totalBlocks: number;
  freeBlocks: number;
  writebackBlocks: number;
  /** Blocks in use: in ssd mode every used block may hold data not yet written to the origin. */
  dirtyBlocks: number;
  readBlocks?: number;
  readHits?: number;
  writeBlocks?: number;
  writeHits?: number;
}

export function parseWritecacheStatus(args: string[]): WritecacheStatus {
  const [error, total, free, writeback] = args.slice(0, 4).map(Number);
  // Kernels >= 5.15 append read_blocks read_hits write_blocks write_hits_uncommitted
  // write_hits_committed ... (Documentation/admin-guide/device-mapper/writecache.rst).
  const extra = args.slice(4).map(Number);
  return {
    error: error!,
    totalBlocks: total!,
    freeBlocks: free!,
    writebackBlocks: writeback!,
    dirtyBlocks: total! - free!,
    ...(extra.length >= 5
      ? { readBlocks: extra[0]!, readHits: extra[1]!, writeBlocks: extra[2]!, writeHits: extra[3]! + extra[4]! }
      : {}),
  };
}

// ---- info ------------------------------------------------------------------------------

export interface DmDevice {
  name: string;
  uuid: string;
  open: number;
  major: number;
  minor: number;
  /** `LIsw`: live table, inactive table, suspended, then read-only ('r') or writable ('w'). */
  attr: string;
  readOnly: boolean;
  suspended: boolean;
  /** The dm devices this one stands on, by name (devs_used; a disk such as sda for an LV). */
  uses: string[];
}

// devs_used: the device graph without reading every table (unmap plans from it alone).
const INFO_FIELDS = 'name,uuid,open,major,minor,attr,devs_used';

export function parseInfoColumns(stdout: string): DmDevice[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && l !== 'No devices found')
    .map((l) => {
      const [name = '', uuid = '', open = '0', major = '0', minor = '0', attr = '', used = ''] = l.split('|');
      return {
        name,
        uuid,
        open: Number(open),
        major: Number(major),
        minor: Number(minor),
        attr,
        readOnly: attr.endsWith('r'),
        suspended: attr[2] === 's',
        uses: used ? used.split(',') : [],
      };
    });
}

const infoArgs = ['info', '-c', '--noheadings', '--separator', '|', '-o', INFO_FIELDS];

export async function listDevices(runner: Runner): Promise<DmDevice[]> {
  const r = await runner.run(req(infoArgs, 'read'));
  return parseInfoColumns(r.stdout);
}

export async function deviceInfo(runner: Runner, name: string): Promise<DmDevice | undefined> {
  const r = await runner.run(req([...infoArgs, name], 'read', { allowFailure: true }));
  if (r.exitCode !== 0) {
    if (/No such device|does not exist|not found/i.test(r.stderr)) return undefined;
    throw commandFailed(runner.target, r);
  }
  return parseInfoColumns(r.stdout)[0];
}

export async function table(runner: Runner, name: string): Promise<DmLine[]> {
  return parseDmLines((await runner.run(req(['table', name], 'read'))).stdout);
}

export const statusReq = (name: string): RunRequest => req(['status', name], 'read');

export async function status(runner: Runner, name: string): Promise<DmLine[]> {
  return parseDmLines((await runner.run(statusReq(name))).stdout);
}

/** `dmsetup status` of every device in one call: "name: start len target args". */
export async function statusAll(runner: Runner): Promise<Map<string, DmLine[]>> {
  return parseNamedLines((await runner.run(req(['status'], 'read'))).stdout);
}

/** "name: start len target args" lines (dmsetup status / table without a name). */
export function parseNamedLines(stdout: string): Map<string, DmLine[]> {
  const out = new Map<string, DmLine[]>();
  for (const line of stdout.split('\n')) {
    const m = /^(\S+): (.*)$/.exec(line.trim());
    if (!m) continue;
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), ...parseDmLines(m[2]!)]);
  }
  return out;
}

/** `dmsetup table` of every device in one call: "name: start len target args". */
export async function tableAll(runner: Runner): Promise<Map<string, DmLine[]>> {
  return parseNamedLines((await runner.run(req(['table'], 'read'))).stdout);
}

export async function targets(runner: Runner): Promise<Map<string, string>> {
  const r = await runner.run(req(['targets'], 'read'));
  return new Map(
    r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p[0])
      .map((p) => [p[0]!, (p[1] ?? '').replace(/^v/, '')]),
  );
}

// ---- writes (requests only: plans decide when they run) --------------------------------

export const createReq = (
  name: string,
  uuid: string,
  tableText: string,
  opts: { readOnly?: boolean } = {},
): RunRequest =>
  req(['create', name, '--uuid', uuid, ...(opts.readOnly ? ['--readonly'] : []), '--table', tableText], 'write', {
    title: `map ${name}`,
  });
/**
 * Load a table into the inactive slot (`resume` swaps it in); read-only for a device nothing
 * may write. (`dmsetup load` is the same command under another name.)
 */
export const reloadReq = (name: string, tableText: string, opts: { readOnly?: boolean } = {}): RunRequest =>
  req(['reload', name, ...(opts.readOnly ? ['--readonly'] : []), '--table', tableText], 'write');
/**
 * A device with no table yet (`--notable`): a table is then `load`ed into its inactive slot and
 * swapped in by `resume` when the caller chooses (a live backup point's read-only layer, which
 * may only go live while the writable snapshot it takes the exception store from is suspended).
 */
export const createEmptyReq = (name: string, uuid: string): RunRequest =>
  req(['create', name, '--uuid', uuid, '--notable'], 'write', { title: `create ${name} without a table` });
/** Rename a device (open or not: its users keep it; only /dev/mapper/<name> changes). Its uuid stays. */
export const renameReq = (from: string, to: string): RunRequest => req(['rename', from, to], 'write');
/** Drops a device's inactive table (one `reload` loaded and no resume swapped in). */
export const clearReq = (name: string): RunRequest => req(['clear', name], 'write');
export const suspendReq = (name: string, noflush = false): RunRequest =>
  req(['suspend', ...(noflush ? ['--noflush'] : []), name], 'write');
export const resumeReq = (name: string): RunRequest => req(['resume', name], 'write');
/** --force (only on explicit request) swaps an open device's table for error first: its users get I/O errors. */
export const removeReq = (name: string, force = false): RunRequest =>
  req(['remove', ...(force ? ['--force'] : []), '--retry', name], 'write', { title: `unmap ${name}` });
export const messageReq = (name: string, message: string): RunRequest => req(['message', name, '0', message], 'write');

/** doctor's probe: prints "Library version: ...". */
export const versionReq = (): RunRequest => ({
  argv: ['dmsetup', 'version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('dmsetup', 'dmsetup', 'map/unmap cowstack snapshot devices, read tables and status'),
];
