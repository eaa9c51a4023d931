import type { Command } from 'commander';
import { dropCaches, type DropResult } from '../../core/cache/eviction.js';
import { flushCaches, type FlushEntry, type FlushResult } from '../../core/cache/flush.js';
import { listCaches, type CacheReport } from '../../core/cache/list.js';
import { replicate, type ReplicateResult } from '../../core/cache/replicate.js';
import { initCache } from '../../core/cache/vg.js';
import { stagingStatus, type StagingEntry } from '../../core/stage/status.js';
import { formatSize } from '../../core/validate.js';
import { usageError } from '../../exec/errors.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

const stagingText = (staging: StagingEntry[]): string[] =>
  staging.length
    ? [
        'staging (catalog stage, catalog sync --replicas):',
        ...staging.map(
          (s) =>
            `  ${s.vg}/${s.image}`.padEnd(34) +
            ` ${s.phase.padEnd(11)} ${Math.floor((100 * s.stagedBytes) / Math.max(s.sizeBytes, 1))}% of ` +
            `${formatSize(s.sizeBytes)}  torrent ${s.infoHash}${s.error ? `  ${s.error}` : ''}`,
        ),
      ]
    : [];

const listText = (r: CacheReport & { staging: StagingEntry[] }): string =>
  [cacheText(r), ...stagingText(r.staging)].join('\n');

const cacheText = (r: CacheReport): string => {
  if (!r.exists)
    return (
      `no cache VG ${r.cacheVg} on this node: everything runs uncached (create one with: ` +
      'cowstack cache init DEVICE)'
    );
  const head = `${r.cacheVg}: ${formatSize(r.freeBytes)} free of ${formatSize(r.sizeBytes)}`;
  const rows = r.caches.map((c) => {
    const progress =
      c.state === 'copying' ? ` ${Math.floor((100 * c.copiedBytes) / Math.max(c.sizeBytes, 1))}% copied` : '';
    const origin = (c.origin.name ?? '(gone)').padEnd(24);
    const size = formatSize(c.sizeBytes).padStart(10);
    const open = c.open ? '  in use' : '';
    const dirty = c.dirtyBlocks !== undefined ? `  ${c.dirtyBlocks} dirty block(s)` : '';
    const lazy = c.lazy ? `  ${c.lazy.usedBlocks}/${c.lazy.totalBlocks} blocks, ${c.lazy.promotions} promoted` : '';
    const hits = c.hits !== undefined ? `  hits ${c.hits} misses ${c.misses}` : '';
    const used = c.lastUsed ? `  used ${c.lastUsed}` : '';
    const kind = c.kind.padEnd(8);
    return `  ${kind} ${origin} ${c.state.padEnd(9)} ${size}${open}${progress}${dirty}${lazy}${hits}${used}`;
  });
  return [head, ...(rows.length ? rows : ['  no caches'])].join('\n');
};

const flushLine = (e: FlushEntry): string => {
  if (!e.device) return `${e.clone}: ${e.reason ?? 'no write-back cache on this node'}: nothing to flush`;
  if (e.action === 'none') return `${e.clone}: nothing dirty in ${e.device}: nothing to flush`;
  return (
    `${e.clone}: ${e.dirtyBefore} dirty block(s) written back from ${e.device} in ${e.seconds.toFixed(1)} s; ` +
    `${e.dirtyAfter} dirty now`
  );
};

const flushText = (r: FlushResult): string =>
  r.clones.length
    ? r.clones.map(flushLine).join('\n')
    : 'no clone mapped on this node has a write-back cache: nothing to flush';

/** --timeout in seconds: a positive number, named when it is not. */
function timeoutMs(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const s = Number(text);
  if (!(Number.isFinite(s) && s > 0)) throw usageError(`--timeout "${text}" must be a positive number of seconds`);
  return s * 1000;
}

export function register(program: Command): void {
  const cache = program
    .command('cache')
    .description(
      "node-local caches on the node's own disk (a local VG): image replicas, lazy read caches, write-back caches",
    );

  vgOption(
    cache
      .command('init')
      .description('create the node-local cache VG (name: cache.vg in the config) on an unused local disk')
      .argument('<device>'),
  ).action(async (device: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => initCache(op, device));
    await ctx.finish(r, (x) => {
      const what = x.action === 'created' ? 'created' : 'already so: nothing to do';
      return `${x.vg} on ${x.device}: ${what}${x.sizeBytes ? ` (${formatSize(x.sizeBytes)})` : ''}`;
    });
  });

  vgOption(
    cache
      .command('replicate')
      .description(
        'make a verified full local copy of an image (resumable); ' +
          'clones mapped here then read nothing from the repository',
      )
      .argument('<image>')
      .option('--rate <MiB/s>', 'copy rate limit (default: cache.rateMiBps in the config, else unlimited)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const rate = o.rate !== undefined ? Number(o.rate) : ctx.config.cache.rateMiBps;
    if (o.rate !== undefined && !(rate! > 0)) throw usageError(`--rate "${o.rate}" must be a positive number of MiB/s`);
    let last = 0;
    const r = await ctx.locked(o.vg, (op) =>
      replicate(op, name, {
        rateMiBps: rate,
        onProgress: (bytes, total) => {
          if (Date.now() - last < 1000 && bytes < total) return;
          last = Date.now();
          ctx.progress.info(`${formatSize(bytes)} / ${formatSize(total)} copied`);
        },
      }),
    );
    await ctx.finish(r, (x: ReplicateResult) => {
      const copy = `(${formatSize(x.sizeBytes)} in ${x.seconds.toFixed(1)}s, sha256 verified)`;
      const what =
        x.action === 'none'
          ? 'already replicated: nothing to do'
          : `${x.action} into ${x.cacheVg}/${x.replica} ${copy}`;
      return `${x.vg}/${x.name}: ${what}${x.evicted.length ? `\nevicted: ${x.evicted.join(', ')}` : ''}`;
    });
  });

  for (const verb of ['list', 'status'] as const) {
    vgOption(
      cache
        .command(verb)
        .description(
          verb === 'list'
            ? 'list the caches on this node'
            : 'the cache VG and every cache on this node: size, use, state, origin',
        ),
    ).action(async (o, cmd: Command) => {
      const ctx = createContext(cmd);
      const op = ctx.op(o.vg);
      await ctx.finish({ ...(await listCaches(op)), staging: await stagingStatus(op) }, listText);
    });
  }

  vgOption(
    cache
      .command('flush')
      .description(
        "write a mapped clone's write-back cache back to its COW now; it stays mapped, writable and cached. " +
          'Without CLONE: every clone mapped here with a write-back cache. A clone without one: nothing to do',
      )
      .argument('[clone]')
      .option('--timeout <seconds>', "give up on a clone's write-back after this long (default 1800)"),
  ).action(async (name: string | undefined, o, cmd: Command) => {
    const timeout = timeoutMs(o.timeout);
    const ctx = createContext(cmd);
    let last = 0;
    const r = await ctx.locked(o.vg, (op) =>
      flushCaches(op, {
        name,
        timeoutMs: timeout,
        onProgress: (clone, dirty, before) => {
          if (Date.now() - last < 1000) return;
          last = Date.now();
          ctx.progress.info(`${clone}: ${dirty} of ${before} dirty block(s) left`);
        },
      }),
    );
    await ctx.finish(r, flushText);
  });

  vgOption(
    cache
      .command('drop')
      .description('remove the local caches of an image, or every stale one (its image is gone)')
      .argument('[image]')
      .option('--stale', 'drop caches whose origin LV no longer exists'),
  ).action(async (image: string | undefined, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => dropCaches(op, { image, stale: o.stale }));
    await ctx.finish(r, (x: DropResult) =>
      x.dropped.length ? `dropped from ${x.cacheVg}: ${x.dropped.join(', ')}` : 'nothing to drop',
    );
  });
}
