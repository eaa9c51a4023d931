/**
 * cowstack's own configuration (/etc/cowstack/cowstack.yaml by default). Everything has a
 * default so a node works with an empty file; CLI flags override the file.
 */
import { readFileSync, existsSync } from 'node:fs';
import yaml from 'js-yaml';
import { usageError } from '../exec/errors.js';
import type { SudoPolicy } from '../exec/types.js';
import { parseSize, validateHostName, validateIqn, validatePortal, validateVgName } from './validate.js';

export const DEFAULT_CONFIG_PATH = '/etc/cowstack/cowstack.yaml';

export interface Config {
  repository: {
    vg: string;
    lockType: 'sanlock' | 'dlm';
    /** Accept only these devices in LVM commands (VDSM-style per-command filter). */
    devices: string[];
    portal?: string;
    iqn?: string;
  };
  /**
   * More than one repository (README "Growing a site: several repositories"): the VG of each
   * OpenNebula datastore id (image and system datastores) that is not in repository.vg.
   * Keys are decimal datastore ids; an unmapped datastore uses repository.vg.
   */
  repositories: Record<string, string>;
  /**
   * lockWaitSeconds: how long an operation waits for another one on the same node to
   * finish (the node lock, core/nodeLock.ts) before it gives up naming the holder.
   */
  node: { hostId?: number; lockWaitSeconds: number };
  ssh: { config?: string };
  sudo: SudoPolicy;
  cow: { warnPercent: number; chunk: string };
  /** Warn (doctor, status) when the VG's metadata area, lease space or extents are this full. */
  capacity: { warnPercent: number };
  /** The repository server's target software (cowstack target ...). */
  target: { backend: 'auto' | 'lio' | 'tgt' };
  /** The OpenNebula TM driver (`cowstack tm`). */
  tm: {
    /** Cluster nodes that can run LVM commands when the host named by oned is unreachable (delete), or for monitor. */
    hosts: string[];
    /** COW size of a new VM disk, in percent of the image's virtual size (resize grows it). */
    cowPercent: number;
  };
  /**
   * The node-local cache VG (on the node's own disk, never shared) and what `clone map`
   * does with it by default. An absent VG means: everything works uncached.
   */
  cache: { vg: string; map: CacheMapMode[]; rateMiBps?: number; lazySize?: string };
  /** The image catalogue: the endorser's minisign public key file, the one key lists are checked with. */
  catalog: { publicKey?: string };
}

/**
 * replica: make (or use) a full local copy of the image; write: a write-back cache on the
 * local disk under a live clone's COW; lazy: a dm-cache (smq) of the image's hot blocks on
 * the local disk, shared by every clone of the image on the node (a complete replica wins:
 * it serves everything); none: no caches (a complete replica is not used).
 */
export type CacheMapMode = 'replica' | 'lazy' | 'write' | 'none';
export const CACHE_MAP_MODES: readonly CacheMapMode[] = ['replica', 'lazy', 'write', 'none'];

/** Parse `--cache replica,none`-style lists; the bad value is named. */
export function parseCacheModes(text: string | string[], where = '--cache'): CacheMapMode[] {
  const items = ([] as string[])
    .concat(text)
    .flatMap((t) => String(t).split(','))
    .map((t) => t.trim())
    .filter(Boolean);
  for (const m of items) {
    if (!CACHE_MAP_MODES.includes(m as CacheMapMode))
      throw usageError(
        `${where}: unknown cache mode "${m}"`,
        `use one of: ${CACHE_MAP_MODES.join(', ')} (comma-separated)`,
      );
  }
  if (items.includes('none') && items.length > 1)
    throw usageError(`${where}: "none" cannot be combined with other cache modes`);
  return items as CacheMapMode[];
}

export const defaultConfig = (): Config => ({
  repository: { vg: 'cowstack', lockType: 'sanlock', devices: [] },
  repositories: {},
  node: { lockWaitSeconds: 120 },
  ssh: {},
  sudo: 'auto',
  cow: { warnPercent: 80, chunk: '4K' },
  capacity: { warnPercent: 80 },
  target: { backend: 'auto' },
  tm: { hosts: [], cowPercent: 25 },
  cache: { vg: 'cowstack_cache', map: [] },
  catalog: {},
});

export function loadConfig(path?: string): { config: Config; path?: string } {
  const file = path ?? process.env.COWSTACK_CONFIG ?? DEFAULT_CONFIG_PATH;
  const explicit = Boolean(path ?? process.env.COWSTACK_CONFIG);
  const config = defaultConfig();
  if (!existsSync(file)) {
    if (explicit)
      throw usageError(`config file ${file} does not exist`, 'create it or drop --config to use the defaults');
    applyEnv(config);
    return { config };
  }
  let doc: unknown;
  try {
    doc = yaml.load(readFileSync(file, 'utf8'));
  } catch (e) {
    throw usageError(`config file ${file} is not valid YAML: ${(e as Error).message}`);
  }
  merge(config, doc ?? {}, file);
  applyEnv(config);
  return { config, path: file };
}

function applyEnv(config: Config): void {
  if (process.env.COWSTACK_SSH_CONFIG) config.ssh.config = process.env.COWSTACK_SSH_CONFIG;
  const wait = process.env.COWSTACK_LOCK_WAIT;
  if (wait) config.node.lockWaitSeconds = lockWait(wait, 'COWSTACK_LOCK_WAIT');
}

function lockWait(value: unknown, where: string): number {
  const n = Number(value);
  if (Number.isInteger(n) && n >= 0 && n <= 86_400) return n;
  throw usageError(`${where} must be a whole number of seconds from 0 to 86400, got "${String(value)}"`);
}

/** A mapping of the config file; anything else (absent, a scalar) reads as an empty one. */
type Section = Record<string, unknown>;
const section = (v: unknown): Section => (typeof v === 'object' && v !== null ? (v as Section) : {});

function oneOf<T extends string>(v: unknown, allowed: readonly T[]): v is T {
  return typeof v === 'string' && (allowed as readonly string[]).includes(v);
}

const list = (v: unknown): string[] => ([] as unknown[]).concat(v).map(String);

/** `repositories:` as datastore id -> VG, each validated; the bad key or value is named. */
function repositoryMap(v: unknown, file: string): Record<string, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw usageError(
      `${file}: repositories must be a mapping of OpenNebula datastore ids to VG names`,
      'e.g. repositories: { "100": repo2, "101": repo2 }',
    );
  const out: Record<string, string> = {};
  for (const [id, vg] of Object.entries(v as Section)) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(id))
      throw usageError(
        `${file}: repositories: datastore id "${id}" is not a number`,
        'use the id `onedatastore list` shows',
      );
    if (typeof vg !== 'string' && typeof vg !== 'number')
      throw usageError(`${file}: repositories.${id} must be a VG name, got ${JSON.stringify(vg)}`);
    try {
      out[id] = validateVgName(String(vg));
    } catch (e) {
      throw usageError(`${file}: repositories.${id}: ${(e as Error).message}`, 'name the VG `cluster init` made');
    }
  }
  return out;
}

/** The repository VG of an OpenNebula datastore: its entry in `repositories`, else repository.vg. */
export const vgOfDatastore = (config: Pick<Config, 'repository' | 'repositories'>, dsId: number): string =>
  config.repositories[String(dsId)] ?? config.repository.vg;

/** Every repository VG the config names, the default first. */
export const repositoryVgs = (config: Pick<Config, 'repository' | 'repositories'>): string[] => [
  ...new Set([config.repository.vg, ...Object.values(config.repositories)]),
];

function merge(config: Config, doc: unknown, file: string): void {
  if (typeof doc !== 'object' || Array.isArray(doc)) throw usageError(`config file ${file} must be a YAML mapping`);
  const d = section(doc);
  const r = section(d.repository);
  if (r.vg !== undefined) config.repository.vg = validateVgName(String(r.vg));
  if (r.lockType !== undefined) {
    if (!oneOf(r.lockType, ['sanlock', 'dlm'] as const))
      throw usageError(`${file}: repository.lockType must be sanlock or dlm, got "${r.lockType}"`);
    config.repository.lockType = r.lockType;
  }
  if (r.devices !== undefined) config.repository.devices = list(r.devices);
  if (r.portal !== undefined) config.repository.portal = validatePortal(String(r.portal));
  if (r.iqn !== undefined) config.repository.iqn = validateIqn(String(r.iqn));
  if (d.repositories !== undefined) config.repositories = repositoryMap(d.repositories, file);
  const node = section(d.node);
  if (node.hostId !== undefined) config.node.hostId = Number(node.hostId);
  if (node.lockWaitSeconds !== undefined) {
    config.node.lockWaitSeconds = lockWait(node.lockWaitSeconds, `${file}: node.lockWaitSeconds`);
  }
  const ssh = section(d.ssh);
  if (ssh.config !== undefined) config.ssh.config = String(ssh.config);
  if (d.sudo !== undefined) {
    if (!oneOf(d.sudo, ['auto', 'always', 'never'] as const))
      throw usageError(`${file}: sudo must be auto, always or never, got "${d.sudo}"`);
    config.sudo = d.sudo;
  }
  const cow = section(d.cow);
  if (cow.warnPercent !== undefined) config.cow.warnPercent = Number(cow.warnPercent);
  if (cow.chunk !== undefined) config.cow.chunk = String(cow.chunk);
  const capacity = section(d.capacity);
  if (capacity.warnPercent !== undefined) {
    const p = Number(capacity.warnPercent);
    if (!Number.isInteger(p) || p < 1 || p > 100)
      throw usageError(`${file}: capacity.warnPercent must be an integer from 1 to 100, got "${capacity.warnPercent}"`);
    config.capacity.warnPercent = p;
  }
  const target = section(d.target);
  if (target.backend !== undefined) {
    if (!oneOf(target.backend, ['auto', 'lio', 'tgt'] as const))
      throw usageError(`${file}: target.backend must be auto, lio or tgt, got "${target.backend}"`);
    config.target.backend = target.backend;
  }
  const tm = section(d.tm);
  if (tm.hosts !== undefined) config.tm.hosts = list(tm.hosts).map((h) => validateHostName(h));
  if (tm.cowPercent !== undefined) {
    const p = Number(tm.cowPercent);
    if (!Number.isInteger(p) || p < 1 || p > 200)
      throw usageError(`${file}: tm.cowPercent must be an integer from 1 to 200, got "${tm.cowPercent}"`);
    config.tm.cowPercent = p;
  }
  const catalog = section(d.catalog);
  if (catalog.publicKey !== undefined) config.catalog.publicKey = String(catalog.publicKey);
  const cache = section(d.cache);
  if (cache.vg !== undefined) config.cache.vg = validateVgName(String(cache.vg));
  if (cache.map !== undefined) config.cache.map = parseCacheModes(list(cache.map), `${file}: cache.map`);
  if (cache.rateMiBps !== undefined) {
    const r = Number(cache.rateMiBps);
    if (!(r > 0)) throw usageError(`${file}: cache.rateMiBps must be a positive number, got "${cache.rateMiBps}"`);
    config.cache.rateMiBps = r;
  }
  if (cache.lazySize !== undefined) {
    parseSize(String(cache.lazySize), `${file}: cache.lazySize`);
    config.cache.lazySize = String(cache.lazySize);
  }
}
