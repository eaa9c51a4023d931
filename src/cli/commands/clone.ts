import type { Command } from 'commander';
import {
  commitClone,
  createAndMapClone,
  createClone,
  discardClone,
  growClone,
  mapClone,
  unmapClone,
  type CloneResult,
} from '../../core/clones.js';
import { flattenClone, type FlattenResult } from '../../core/flatten.js';
import { parseCacheModes } from '../../core/config.js';
import { formatSize } from '../../core/validate.js';
import { createContext } from '../context.js';
import { registerMigrate } from './cloneMigrate.js';
import { vgOption } from './shared.js';

const describe = (r: CloneResult, instead?: string): string => {
  const what: Record<CloneResult['action'], string> = {
    created: `created on ${r.parent}`,
    completed: `creation completed on ${r.parent}`,
    none: 'already so: nothing to do',
    mapped: 'mapped',
    unmapped: 'unmapped and released',
    committed: `committed: read-only, usable as a parent on any node`,
    discarded: 'discarded',
    removed: 'removed',
    grown: `COW grown to ${formatSize(r.cowBytes ?? 0)}`,
  };
  const ro = r.mode === 'ro' ? ' (read-only)' : '';
  const replica = r.replica ? ` (on local replica ${r.replica})` : '';
  const reset = r.lazy?.reset ? `, reset: ${r.lazy.resetReason}` : '';
  const lazy = r.lazy ? ` (on lazy cache ${r.lazy.lv}: ${r.lazy.action}${reset})` : '';
  const dev = r.device ? `\n${r.device}${ro}${replica}${lazy}` : '';
  const warn = (r.warnings ?? []).map((w) => `\nwarning: ${w}`).join('');
  return `${r.vg}/${r.name}: ${instead ?? what[r.action]}${dev}${warn}`;
};

export function register(program: Command): void {
  const clone = program.command('clone').description('copy-on-write clones of images and committed clones');

  vgOption(
    clone
      .command('create')
      .description('create a COW clone of an image or committed clone (its first chunk zeroed)')
      .argument('<name>')
      .requiredOption('--from <parent>', 'sealed image or committed clone')
      .option('--cow-size <size>', 'COW space (default: 25% of the virtual size)')
      .option('--chunk <size>', 'snapshot chunk size, power of two from 4K to 1M', undefined)
      .option('--map', 'also map it on this node, in the same operation (as clone map; prints its device)')
      .option('--force', 'clone a catalogue image that is not endorsed and approved (logged to syslog)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const spec = { name, from: o.from, cowSize: o.cowSize, chunk: o.chunk ?? ctx.config.cow.chunk, force: o.force };
    if (!o.map) {
      await ctx.finish(await ctx.locked(o.vg, (op) => createClone(op, spec)), describe);
      return;
    }
    // One operation: the COW is held from its lvcreate on and mapped from the same observation.
    const { created, mapped } = await ctx.locked(o.vg, (op) => createAndMapClone(op, spec));
    const r = { ...mapped, parent: created.parent, cowBytes: created.cowBytes, chunkSectors: created.chunkSectors };
    // A dry run plans the creation only: the map is not "already so", it comes once the COW exists.
    const deferred = ctx.opts.dryRun && created.action === 'created' && mapped.action === 'none';
    const mapping = (x: CloneResult) => describe(x, deferred ? 'mapped next, on the new COW' : undefined);
    await ctx.finish({ ...r, created: created.action }, (x) => `${describe(created)}\n${mapping(x)}`);
  });

  vgOption(
    clone
      .command('map')
      .description('map a clone on this node (live: writable, exclusive; committed: read-only) and print its device')
      .argument('<name>')
      .option(
        '--cache <modes>',
        "comma list: replica (make the image's local replica first if missing), " +
          "lazy (a dm-cache of the image's hot blocks on the local disk), write (a write-back cache under the COW), " +
          'or none (ignore local caches); default: cache.map in the config',
      )
      .option(
        '--lazy-size <size>',
        'data size of a new lazy cache (default: cache.lazySize in the config, ' +
          'else a quarter of the image within 32M..4G)',
      ),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const cache = o.cache !== undefined ? parseCacheModes(o.cache) : undefined;
    await ctx.finish(await ctx.locked(o.vg, (op) => mapClone(op, name, { cache, lazySize: o.lazySize })), describe);
  });

  vgOption(
    clone
      .command('unmap')
      .description('remove the mapping and release the COW on this node')
      .argument('<name>')
      .option('--force', 'even if open (its users get I/O errors)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => unmapClone(op, name, { force: o.force })), describe);
  });

  vgOption(
    clone
      .command('commit')
      .description('sync-back: unmap, release, and make the clone a read-only parent any node can use')
      .argument('<name>')
      .option('--force', 'even if open (its users get I/O errors)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => commitClone(op, name, { force: o.force })), describe);
  });

  vgOption(
    clone
      .command('discard')
      .description('unmap (if mapped here) and delete a clone; nothing goes back')
      .argument('<name>')
      .option('--force', 'even if open'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => discardClone(op, name, { force: o.force })), describe);
  });

  vgOption(
    clone.command('rm').description('delete a clone that is not mapped here and has no children').argument('<name>'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => discardClone(op, name, { mustBeUnmapped: true })), describe);
  });

  vgOption(
    clone
      .command('grow')
      .description("extend a live clone's COW, also while mapped")
      .argument('<name>')
      .requiredOption('--cow-size <size>', 'new total COW size'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => growClone(op, name, o.cowSize)), describe);
  });

  registerMigrate(clone);

  vgOption(
    clone
      .command('flatten')
      .description("copy a committed clone's chain into a new standalone sealed image")
      .argument('<name>')
      .requiredOption('--to <image>', 'new image name'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => flattenClone(op, name, o.to));
    await ctx.finish(
      r,
      (x: FlattenResult) =>
        `${x.vg}/${x.name}: ${x.action === 'none' ? 'already flattened' : 'flattened'} into image ${x.image} ` +
        `(${formatSize(x.sizeBytes)}${x.sha256 ? `, sha256 ${x.sha256}` : ''})`,
    );
  });
}
