import { Option, type Command } from 'commander';
import { SOURCE_FORMATS } from '../../core/imageSource.js';
import {
  createImage,
  exportImage,
  importImage,
  removeImage,
  renameImage,
  sealImage,
  type ImageResult,
} from '../../core/images.js';
import { copyImageToVg, type ImageCopyResult } from '../../core/imageCopy.js';
import type { ImageObj } from '../../core/metadata.js';
import { findImage, observeNode } from '../../core/observe.js';
import { inVgNameOrder } from '../../core/nodeLock.js';
import { formatSize, validateVgName } from '../../core/validate.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

const describe = (r: ImageResult): string => {
  const what: Record<ImageResult['action'], string> = {
    created: 'created (writable until sealed)',
    imported: 'imported and sealed',
    sealed: 'sealed (read-only)',
    renamed: 'renamed',
    removed: 'removed',
    exported: 'exported',
    none: 'already so: nothing to do',
  };
  // An import has two checksums: say which is which (the file's is what sha256sum FILE prints).
  const sums = r.sourceSha256
    ? [
        `source sha256 ${r.sourceSha256} (the file as given, ${r.sourceFormat})`,
        r.sha256 ? `image sha256 ${r.sha256} (the LV, zero-padded to ${formatSize(r.sizeBytes ?? 0)})` : '',
      ]
    : [r.sha256 ? `sha256 ${r.sha256}` : ''];
  const extra = [
    r.sizeBytes ? formatSize(r.sizeBytes) : '',
    ...sums,
    r.bytes && r.seconds
      ? `${formatSize(r.bytes)} in ${r.seconds.toFixed(1)}s ` +
        `(${formatSize(Math.round(r.bytes / Math.max(r.seconds, 0.001)))}/s)`
      : '',
  ]
    .filter(Boolean)
    .join(', ');
  const done = r.action === 'imported' && r.state === 'writable' ? 'imported (writable)' : what[r.action];
  return `${r.vg}/${r.name}: ${done}${extra ? ` (${extra})` : ''}`;
};

/** Where an image came from: a catalogue list (catalog sync), or by hand (image create/import). */
const origin = (x: ImageObj): string =>
  x.catalog ? `catalogue ${x.catalog.list} ${x.catalog.name}@${x.catalog.version}` : 'not from a catalogue';

export function register(program: Command): void {
  const image = program
    .command('image')
    .description('images: plain read-only LVs in the repository, the roots of clone chains');

  vgOption(
    image
      .command('create')
      .description('create an empty, zeroed image, writable until sealed')
      .argument('<name>')
      .requiredOption('--size <size>', 'e.g. 10G')
      .option('--no-zero', 'skip zeroing (the LV may expose old data of deleted LVs)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => createImage(op, name, o.size, { zero: o.zero })), describe);
  });

  vgOption(
    image
      .command('import')
      .description(
        'import a raw, gzip, zstd, xz, bzip2 or qcow2 file (or - for stdin) as a sealed image; ' +
          'prints the sha256 of the file and of the image',
      )
      .argument('<name>')
      .argument('<file>')
      .option('--no-seal', 'leave it writable')
      .addOption(
        new Option('--format <format>', 'the source format (raw: take the bytes as they are)')
          .choices(['auto', ...SOURCE_FORMATS])
          .default('auto'),
      ),
  ).action(async (name: string, file: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    let last = 0;
    const started = Date.now();
    const r = await ctx.locked(o.vg, (op) =>
      importImage(op, name, file, {
        seal: o.seal,
        format: o.format,
        onProgress: (bytes, total) => {
          const now = Date.now();
          if (now - last < 1000 && bytes < total) return;
          last = now;
          const rate = bytes / Math.max((now - started) / 1000, 0.001);
          ctx.progress.info(`${formatSize(bytes)} / ${formatSize(total)} (${formatSize(Math.round(rate))}/s)`);
        },
      }),
    );
    await ctx.finish(r, describe);
  });

  vgOption(
    image
      .command('seal')
      .description('make a writable image read-only for good (records its sha256)')
      .argument('<name>'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => sealImage(op, name)), describe);
  });

  vgOption(image.command('list').description('list images')).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    const state = await observeNode(ctx.op(o.vg));
    const list = [...state.repo.byName.values()]
      .filter((x) => x.kind === 'image')
      .map((x) => ({
        name: x.name,
        uuid: x.uuid,
        state: x.state,
        sizeBytes: x.sizeBytes,
        sha256: x.kind === 'image' ? x.sha256 : undefined,
        origin: x.kind === 'image' ? origin(x) : undefined,
        clones: state.repo.childrenOf(x).length,
      }));
    await ctx.finish(list, (l: typeof list) =>
      l.length
        ? l
            .map(
              (x) =>
                `${x.name.padEnd(24)} ${x.state.padEnd(12)} ${formatSize(x.sizeBytes).padStart(10)}  ${x.clones} ` +
                `clone(s)  ${x.origin}`,
            )
            .join('\n')
        : 'no images',
    );
  });

  vgOption(image.command('show').description('details of one image').argument('<name>')).action(
    async (name: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      const state = await observeNode(ctx.op(o.vg));
      const x = findImage(state, name);
      const doc = {
        name: x.name,
        vg: x.vg,
        uuid: x.uuid,
        state: x.state,
        sizeBytes: x.sizeBytes,
        sha256: x.sha256,
        origin: origin(x),
        readOnly: x.lv.readOnly,
        activeHere: x.lv.activeLocally,
        clones: state.repo.childrenOf(x).map((c) => c.name),
        tags: x.tags,
      };
      await ctx.finish(doc, (d: typeof doc) =>
        Object.entries(d)
          .map(([k, v]) => `${k.padEnd(10)} ${Array.isArray(v) ? v.join(', ') : v}`)
          .join('\n'),
      );
    },
  );

  vgOption(image.command('rm').description('remove an image that has no clones').argument('<name>')).action(
    async (name: string, o, cmd: Command) => {
      const ctx = createContext(cmd);
      await ctx.finish(await ctx.locked(o.vg, (op) => removeImage(op, name)), describe);
    },
  );

  vgOption(
    image
      .command('rename')
      .description('rename an image (clones follow: they point at its UUID)')
      .argument('<name>')
      .argument('<new-name>'),
  ).action(async (name: string, to: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => renameImage(op, name, to)), describe);
  });

  vgOption(
    image
      .command('copy')
      .description('copy a sealed image into another repository VG (verified against its recorded sha256, then sealed)')
      .argument('<name>')
      .requiredOption('--to-vg <vg>', 'the repository VG to copy it into')
      .option('--as <new-name>', "the copy's name (default: the same name)"),
  ).action(async (name: string, o: { vg?: string; toVg: string; as?: string }, cmd: Command) => {
    const ctx = createContext(cmd);
    const to = validateVgName(o.toVg);
    const from = o.vg ?? ctx.config.repository.vg;
    const r = await inVgNameOrder(
      [from, to],
      (vg, fn) => ctx.locked(vg, fn),
      () => copyImageToVg(ctx.op(from), ctx.op(to), name, o.as),
    );
    await ctx.finish(r, (c: ImageCopyResult) =>
      c.action === 'none'
        ? `${c.vg}/${c.image}: already a copy of ${c.fromVg}/${c.name}: nothing to do`
        : `${c.fromVg}/${c.name} copied to ${c.vg}/${c.image} ` +
          `(${formatSize(c.sizeBytes)}, sha256 ${c.sha256} verified, sealed)`,
    );
  });

  vgOption(
    image
      .command('export')
      .description("write an image's raw content to FILE or - (stdout)")
      .argument('<name>')
      .argument('<file>'),
  ).action(async (name: string, file: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => exportImage(op, name, file));
    // With "-" stdout carries the data: the report goes to stderr.
    if (file === '-') process.stderr.write(`${describe(r)}\n`);
    else await ctx.finish(r, describe);
  });
}
