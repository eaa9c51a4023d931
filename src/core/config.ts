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
   * lockWaitSeconds: how long an operation waits for another one on the same node to
   * finish (the node lock, core/nodeLock.ts) before it gives up naming the holder.
   */
  node: { hostId?: number; lockWaitSeconds: number };
  ssh: { config?: string };
  sudo: SudoPolicy;
  cow: { warnPercent: number; chunk: string };
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
  node: { lockWaitSeconds: 120 },
  ssh: {},
  sudo: 'auto',
  cow: { warnPercent: 80, chunk: '4K' },
  target: { backend: 'auto' },
  tm: { hosts: [], cowPercent: 25 },
  cache: { vg: 'cowstack_cache', map: [] },
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

function merge(config: Config, doc: unknown, file: string): void {
  if (typeof doc !== 'object' || Array.isArray(doc)) throw usageError(`config file ${file} must be a YAML mapping`);
  const d = doc as Record<string, any>;
  const r = d.repository ?? {};
  if (r.vg !== undefined) config.repository.vg = validateVgName(String(r.vg));
  if (r.lockType !== undefined) {
    if (r.lockType !== 'sanlock' && r.lockType !== 'dlm')
      throw usageError(`${file}: repository.lockType must be sanlock or dlm, got "${r.lockType}"`);
    config.repository.lockType = r.lockType;
  }
  if (r.devices !== undefined) config.repository.devices = [].concat(r.devices).map(String);
  if (r.portal !== undefined) config.repository.portal = validatePortal(String(r.portal));
  if (r.iqn !== undefined) config.repository.iqn = validateIqn(String(r.iqn));
  if (d.node?.hostId !== undefined) config.node.hostId = Number(d.node.hostId);
  const wait = d.node?.lockWaitSeconds;
  if (wait !== undefined) config.node.lockWaitSeconds = lockWait(wait, `${file}: node.lockWaitSeconds`);
  if (d.ssh?.config !== undefined) config.ssh.config = String(d.ssh.config);
  if (d.sudo !== undefined) {
    if (!['auto', 'always', 'never'].includes(d.sudo))
      throw usageError(`${file}: sudo must be auto, always or never, got "${d.sudo}"`);
    config.sudo = d.sudo;
  }
  if (d.cow?.warnPercent !== undefined) config.cow.warnPercent = Number(d.cow.warnPercent);
  if (d.cow?.chunk !== undefined) config.cow.chunk = String(d.cow.chunk);
  if (d.target?.backend !== undefined) {
    if (!['auto', 'lio', 'tgt'].includes(d.target.backend))
      throw usageError(`${file}: target.backend must be auto, lio or tgt, got "${d.target.backend}"`);
    config.target.backend = d.target.backend;
  }
  if (d.tm?.hosts !== undefined) config.tm.hosts = [].concat(d.tm.hosts).map((h) => validateHostName(String(h)));
  if (d.tm?.cowPercent !== undefined) {
    const p = Number(d.tm.cowPercent);
    if (!Number.isInteger(p) || p < 1 || p > 200)
      throw usageError(`${file}: tm.cowPercent must be an integer from 1 to 200, got "${d.tm.cowPercent}"`);
    config.tm.cowPercent = p;
  }
  if (d.cache?.vg !== undefined) config.cache.vg = validateVgName(String(d.cache.vg));
  if (d.cache?.map !== undefined) config.cache.map = parseCacheModes(d.cache.map, `${file}: cache.map`);
  if (d.cache?.rateMiBps !== undefined) {
    const r = Number(d.cache.rateMiBps);
    if (!(r > 0)) throw usageError(`${file}: cache.rateMiBps must be a positive number, got "${d.cache.rateMiBps}"`);
    config.cache.rateMiBps = r;
  }
  if (d.cache?.lazySize !== undefined) {
    parseSize(String(d.cache.lazySize), `${file}: cache.lazySize`);
    config.cache.lazySize = String(d.cache.lazySize);
  }
}
