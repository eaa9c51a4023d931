import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { approve, revoke, type ApprovalResult } from '../../core/catalog/approval.js';
import { parsePublicKey, parseSecretKey, type PublicKey } from '../../core/catalog/minisign.js';
import { publishList } from '../../core/catalog/publish.js';
import { pullHosts, type PullHostsResult } from '../../core/catalog/pullHosts.js';
import { pullReplicas, type PullResult } from '../../core/catalog/replicas.js';
import { DEFAULT_SEED_PORT, seedCatalog, type SeedResult } from '../../core/catalog/seed.js';
import { readAccepted } from '../../core/catalog/state.js';
import { catalogStatus, type CatalogRow, type CatalogStatus } from '../../core/catalog/status.js';
import { fetchVerified, syncCatalog, type SyncResult } from '../../core/catalog/sync.js';
import { refuseRollback } from '../../core/catalog/verify.js';
import { stage, type StageResult } from '../../core/stage/run.js';
import { parsePeer, parsePeers, parseTracker } from '../../core/stage/spec.js';
import { formatSize } from '../../core/validate.js';
import type { PlannedCommand } from '../../exec/dryRunRunner.js';
import { notFound, usageError } from '../../exec/errors.js';
import { createContext, type Context } from '../context.js';
import { readSecret } from '../secret.js';
import { vgOption } from './shared.js';

function readKeyFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw notFound(`${what} ${file} cannot be read: ${(e as Error).message}`);
  }
}

/** The endorser's public key: --pubkey, else catalog.publicKey in the config. */
function trustedKey(ctx: Context, given?: string): PublicKey {
  const file = given ?? ctx.config.catalog.publicKey;
  if (!file) throw usageError('no trusted key', 'give --pubkey FILE or set catalog.publicKey in the config');
  return parsePublicKey(readKeyFile(file, 'public key'), `public key ${file}`);
}

/** Progress on long transfers: at most once a second, and at the end. */
function transferProgress(ctx: Context) {
  let last = 0;
  const started = Date.now();
  return (what: string, bytes: number, total?: number) => {
    const now = Date.now();
    if (now - last < 1000 && bytes !== total) return;
    last = now;
    const rate = formatSize(Math.round(bytes / Math.max((now - started) / 1000, 0.001)));
    ctx.progress.info(`${what}: ${formatSize(bytes)}${total ? ` / ${formatSize(total)}` : ''} (${rate}/s)`);
  };
}

const row = (r: CatalogRow): string =>
  `${r.lv.padEnd(28)} ${(r.endorsed ? 'endorsed' : '-').padEnd(9)} ${(r.approved ? 'approved' : '-').padEnd(9)} ` +
  `${(r.present ? 'present' : '-').padEnd(8)} ${(r.clonable ? 'clonable' : 'not clonable').padEnd(12)} ` +
  (r.replicated ? 'replicated' : '-');

const describeStatus = (s: CatalogStatus): string =>
  [
    ...s.lists.map(
      (l) =>
        `list ${l.id} version ${l.version}, expires ${l.expires}${l.expired ? ' (EXPIRED)' : ''}, ${l.images} image(s)`,
    ),
    ...(s.lists.length ? [] : ['no list accepted on this node']),
    ...s.images.map(row),
  ].join('\n');

const describeSync = (r: SyncResult): string =>
  [
    `list ${r.list.id} version ${r.list.version} accepted` +
      (r.list.previous !== undefined ? ` (was ${r.list.previous})` : '') +
      `, endorsed by ${r.list.endorser} until ${r.list.expires}`,
    ...r.images.map(
      (i) =>
        `  ${i.lv}: ${i.action}${i.sha256 ? ` (sha256 ${i.sha256})` : ''}` +
        `${i.seconds ? ` in ${i.seconds.toFixed(1)}s` : ''}${i.error ? `: ${i.error}` : ''}`,
    ),
    ...r.pruned.map((p) => `  ${p.lv}: ${p.action} (${p.why}${p.reason ? `; ${p.reason}` : ''})`),
  ].join('\n');

/** One command of a --dry-run plan made as data. */
const planLine = (p: PlannedCommand): string =>
  `  ${p.host}: ${p.title ?? ''}${p.argv.length ? `\n      ${p.argv.join(' ')}` : ''}`;

const describePull = (r: PullResult): string =>
  [
    `list ${r.list.id} version ${r.list.version} accepted` +
      (r.list.previous !== undefined ? ` (was ${r.list.previous})` : '') +
      `; replicas on ${r.host}:`,
    ...r.images.map(
      (i) =>
        `  ${i.lv}: ${i.action}${i.sha256 ? ` (sha256 ${i.sha256})` : ''}` +
        `${i.seconds ? ` in ${i.seconds.toFixed(1)}s` : ''}${i.error ? `: ${i.error}` : ''}`,
    ),
    ...(r.plan ?? []).map(planLine),
  ].join('\n');

const describeSeed = (r: SeedResult): string =>
  [
    `list ${r.list.id} version ${r.list.version}; seeds on ${r.host}:`,
    ...r.images.map(
      (i) =>
        `  ${i.lv}: ${i.action}${i.port ? ` on port ${i.port}` : ''}` +
        `${i.infoHash && i.action !== 'no-torrent' ? ` (torrent ${i.infoHash})` : ''}` +
        `${i.sentBytes !== undefined ? `, sent ${formatSize(i.sentBytes)}` : ''}${i.error ? `: ${i.error}` : ''}`,
    ),
    ...(r.plan ?? []).map(planLine),
  ].join('\n');

const describePullHosts = (r: PullHostsResult): string =>
  [
    ...(r.seed ? [describeSeed(r.seed)] : []),
    ...r.hosts.map((h) =>
      h.result ? describePull(h.result) + (h.error ? `\n  ${h.error.message}` : '') : `${h.host}: ${h.error?.message}`,
    ),
    ...(r.seedStopped ? [describeSeed(r.seedStopped)] : []),
    `all nodes done in ${r.seconds.toFixed(1)}s`,
  ].join('\n');

const describeApproval = (all: ApprovalResult[]): string =>
  all
    .map((r) =>
      r.action === 'none'
        ? `${r.name}${r.versions.length ? `@${r.versions.join(',')}` : ''}: already so: nothing to do`
        : `${r.name}@${r.versions.join(',')}: ${r.action}`,
    )
    .join('\n');

const describeStage = (r: StageResult): string =>
  r.plan
    ? [
        `stage ${r.vg}/${r.image} (${formatSize(r.sizeBytes)}, sha256 ${r.sha256}) from ${r.seed} via ${r.tracker}:`,
        ...r.plan.map(planLine),
      ].join('\n')
    : [
        `${r.vg}/${r.image} (${formatSize(r.sizeBytes)}) from ${r.seed}` +
          (r.infoHash ? `, torrent ${r.infoHash}` : '') +
          (r.seedSentBytes !== undefined ? `, seed sent ${formatSize(r.seedSentBytes)}` : '') +
          ` in ${r.seconds.toFixed(1)}s`,
        ...r.hosts.map((h) =>
          h.action === 'none'
            ? `  ${h.host}: replica already complete: nothing to do`
            : `  ${h.host}: ${h.action}, sha256 verified, complete after ${h.completeAt?.toFixed(1)}s`,
        ),
      ].join('\n');

/** --hosts (HOST alone: on --peer-port) and --seed (default port DEFAULT_SEED_PORT), checked together. */
function pullPeers(hostsText: string, peerPort: string, seedText?: string) {
  const port = parsePeer(`node:${peerPort}`, '--peer-port').port;
  const hosts = parsePeers(
    hostsText
      .split(',')
      .map((t) => (t.includes(':') || !t.trim() ? t : `${t.trim()}:${port}`))
      .join(','),
  );
  const seed = seedText
    ? parsePeer(seedText.includes(':') ? seedText : `${seedText}:${DEFAULT_SEED_PORT}`, '--seed')
    : undefined;
  if (seed && hosts.some((h) => h.host === seed.host && h.port === seed.port))
    throw usageError(`--seed ${seed.host}:${seed.port} is the port of ${seed.host}'s own pull in --hosts`);
  return { hosts, seed };
}

export function register(program: Command): void {
  const catalog = program
    .command('catalog')
    .description('signed image lists: endorsed by their producer, approved by the site, imported verified');

  catalog
    .command('publish')
    .description('write LIST and LIST.minisig: a list of image files signed with a minisign secret key')
    .argument('<list>', 'the list file to write (its signature goes to LIST.minisig)')
    .argument('<images...>', 'NAME@VERSION=FILE, a raw disk plain or gzip/zstd/xz/bzip2-compressed')
    .requiredOption('--key <file>', 'minisign secret key')
    .option('--password-file <file>', "the key's password, from a file or - (stdin): for an encrypted key")
    .requiredOption('--id <id>', "the list's identity, e.g. site-images")
    .requiredOption('--list-version <n>', 'the list version: higher than any list published before')
    .option('--expires <days|time>', 'days from now, or a UTC time', '30')
    .option('--endorser <name>', 'who endorses the list')
    .option('--url-base <url>', 'where the image files will be served (default: beside the list)')
    .option(
      '--torrent-tracker <url>',
      'make NAME-VERSION.torrent of every raw image beside the list, announced here, its info hash signed',
    )
    .option('--web-seed <url>', 'where peers fetch the raw files over http as web seed (default: --url-base)')
    .action(async (out: string, images: string[], o, cmd: Command) => {
      const ctx = createContext(cmd);
      const password = o.passwordFile ? await readSecret(o.passwordFile) : undefined;
      const key = parseSecretKey(readKeyFile(o.key, 'secret key'), `secret key ${o.key}`, password);
      const version = Number(o.listVersion);
      if (!/^\d+$/.test(String(o.listVersion)))
        throw usageError(`--list-version "${o.listVersion}" is not a whole number`);
      const progress = transferProgress(ctx);
      const r = await publishList({
        out,
        key,
        id: o.id,
        version,
        endorser: o.endorser,
        expires: o.expires,
        urlBase: o.urlBase,
        torrentTracker: o.torrentTracker,
        webSeedBase: o.webSeed,
        images,
        onProgress: (file, bytes) => progress(`read ${file}`, bytes),
      });
      await ctx.finish(
        { ...r.list, file: r.out, signature: r.signature },
        (l) =>
          `${l.file}: list ${l.id} version ${l.version}, ${l.images.length} image(s), expires ${l.expires}, ` +
          `signed by key ${l.endorser.keyId} (${l.signature})`,
      );
    });

  vgOption(
    catalog
      .command('verify')
      .description("check a list's signature, expiry and version against what this node accepted; changes nothing")
      .argument('<list>', 'a path or an http(s) URL (its signature: LIST.minisig)')
      .option('--pubkey <file>', "the endorser's minisign public key (default: catalog.publicKey)"),
  ).action(async (source: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const { list } = await fetchVerified(source, trustedKey(ctx, o.pubkey), new Date());
    const last = await readAccepted(ctx.runner, list.id);
    refuseRollback(list, last, source);
    const doc = { ...list, accepted: last?.version };
    await ctx.finish(
      doc,
      (d) =>
        `${source}: valid, list ${d.id} version ${d.version} (this node accepted ${d.accepted ?? 'none yet'}), ` +
        `expires ${d.expires}, ${d.images.length} image(s)`,
    );
  });

  vgOption(
    catalog
      .command('sync')
      .description(
        'verify a list, import its approved images (sha512 checked before sealing), prune revoked ones nothing uses',
      )
      .argument('<list>', 'a path or an http(s) URL (its signature: LIST.minisig)')
      .option('--pubkey <file>', "the endorser's minisign public key (default: catalog.publicKey)")
      .option('--no-prune', 'keep catalogue images that are no longer endorsed or approved')
      .option(
        '--replicas',
        "instead: give this node a verified replica of every approved, present image through the list's " +
          'torrents (downloaded peer to peer, sha512 checked, then copied into the replica)',
      )
      .option('--peer-port <port>', 'with --replicas: the port the BitTorrent client of this node listens on', '6881')
      .option(
        '--hosts <host[:port],...>',
        "with --replicas: pull on each of these nodes at once from here (port: its client's, default --peer-port)",
      )
      .option(
        '--seed <host[:port]>',
        "with --hosts: first start the repository side's seed (catalog seed) on this node, at this port " +
          '(default 6882); the nodes then download without the web seed. Stopped at the end if started here',
      )
      .option('--seed-rate <MiB/s>', "with --seed: the seed's upload limit")
      .option('--seed-peers <n>', 'with --seed: peers the seed uploads to at once (default 1: about one copy sent)')
      .option('--keep-seeding', 'with --seed: leave the seed running at the end (catalog seed --stop stops it)')
      .option('--no-web-seed', "with --replicas: download from BitTorrent peers only, never the torrent's web seed")
      .option('--rate <MiB/s>', 'with --replicas: download/upload limit, and of the copy into the replica')
      .option('--timeout <seconds>', 'with --replicas: give up waiting for a download (a re-run resumes)', '3600'),
  ).action(async (source: string, o, cmd: Command) => {
    for (const [opt, given] of [
      ['--hosts', o.hosts],
      ['--no-web-seed', o.webSeed === false],
    ] as const)
      if (given && !o.replicas) throw usageError(`${opt} goes with --replicas`);
    for (const [opt, given] of [
      ['--seed', o.seed],
      ['--seed-rate', o.seedRate],
      ['--seed-peers', o.seedPeers],
      ['--keep-seeding', o.keepSeeding],
    ] as const)
      if (given && !o.hosts) throw usageError(`${opt} goes with --hosts`, 'or run catalog seed on the seed node');
    const many = o.replicas && o.hosts ? pullPeers(o.hosts, o.peerPort, o.seed) : undefined;
    const ctx = createContext(cmd);
    const key = trustedKey(ctx, o.pubkey);
    if (many) {
      const { hosts, seed } = many;
      const timeout = Number(o.timeout);
      if (!(timeout > 0)) throw usageError(`--timeout "${o.timeout}" must be a positive number of seconds`);
      const { result, error } = await pullHosts({
        source,
        key,
        hosts,
        seed,
        seedRateMiBps: o.seedRate !== undefined ? Number(o.seedRate) : undefined,
        seedPeers: o.seedPeers !== undefined ? Number(o.seedPeers) : undefined,
        keepSeeding: o.keepSeeding,
        rateMiBps: o.rate !== undefined ? Number(o.rate) : undefined,
        timeoutSeconds: timeout,
        dryRun: ctx.opts.dryRun,
        node: (host) => {
          const at = ctx.at(host);
          return { session: at.op(o.vg), locked: (fn) => at.locked(o.vg, () => fn()) };
        },
        onProgress: (host, what) => ctx.progress.info(`${host}: ${what}`),
      });
      return ctx.finish(result, describePullHosts, error);
    }
    if (o.replicas) {
      const timeout = Number(o.timeout);
      if (!(timeout > 0)) throw usageError(`--timeout "${o.timeout}" must be a positive number of seconds`);
      const { result, error } = await pullReplicas({
        webSeed: o.webSeed,
        source,
        key,
        port: parsePeer(`node:${o.peerPort}`, '--peer-port').port,
        rateMiBps: o.rate !== undefined ? Number(o.rate) : undefined,
        timeoutSeconds: timeout,
        dryRun: ctx.opts.dryRun,
        node: { session: ctx.op(o.vg), locked: (fn) => ctx.locked(o.vg, () => fn()) },
        onProgress: (host, what) => ctx.progress.info(`${host}: ${what}`),
      });
      return ctx.finish(result, describePull, error);
    }
    const progress = transferProgress(ctx);
    const { result, error } = await ctx.locked(o.vg, (op) =>
      syncCatalog(op, { source, key, prune: o.prune, onProgress: (what, n, total) => progress(what, n, total) }),
    );
    await ctx.finish(result, describeSync, error);
  });

  vgOption(
    catalog
      .command('seed')
      .description(
        "the repository side's BitTorrent seed of pull mode: read each approved, present image of a verified list " +
          'with a signed torrent once, check its sha512, seed it (aria2c as nobody); a running seed is left alone',
      )
      .argument('<list>', 'a path or an http(s) URL (its signature: LIST.minisig)')
      .option('--pubkey <file>', "the endorser's minisign public key (default: catalog.publicKey)")
      .option(
        '--seed-port <port>',
        "the port the seed listens on (not this node's own --peer-port)",
        String(DEFAULT_SEED_PORT),
      )
      .option('--rate <MiB/s>', "the seed's upload limit")
      .option('--peers <n>', 'peers the seed uploads to at once (default 1: the nodes trade the rest)')
      .option('--stop', "stop the seeds of the list's images and remove their files; says what each sent"),
  ).action(async (source: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const { result, error } = await seedCatalog({
      source,
      key: trustedKey(ctx, o.pubkey),
      port: parsePeer(`node:${o.seedPort}`, '--seed-port').port,
      rateMiBps: o.rate !== undefined ? Number(o.rate) : undefined,
      peers: o.peers !== undefined ? Number(o.peers) : undefined,
      stop: o.stop,
      dryRun: ctx.opts.dryRun,
      node: { session: ctx.op(o.vg), locked: (fn) => ctx.locked(o.vg, () => fn()) },
      onProgress: (host, what) => ctx.progress.info(`${host}: ${what}`),
    });
    await ctx.finish(result, describeSeed, error);
  });

  vgOption(
    catalog
      .command('stage')
      .description(
        'pre-stage verified replicas of an image on many nodes through BitTorrent: the seed reads the image ' +
          'once, every node downloads from the others while it seeds, checks the sha256, then fills its replica',
      )
      .argument('<image>')
      .requiredOption('--hosts <host[:port],...>', 'the nodes that get a replica (port: what its client listens on)')
      .option('--seed <host[:port]>', 'the node that reads the image and seeds it (default: the first of --hosts)')
      .option('--tracker <url>', 'announce URL (default: http://SEED:6969/announce, opentracker run on the seed)')
      .option('--tracker-port <port>', 'run opentracker on the seed at this port (default 6969 without --tracker)')
      .option('--rate <MiB/s>', 'upload and download limit of every client, and of the copy into the replica')
      .option('--timeout <seconds>', 'give up waiting for the downloads after this long (a re-run resumes)', '3600'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const hosts = parsePeers(o.hosts);
    const seed = o.seed ? parsePeer(o.seed, '--seed') : hosts[0]!;
    const tracker = parseTracker(seed, o.tracker, o.trackerPort);
    const rate = o.rate !== undefined ? Number(o.rate) : undefined;
    const timeout = Number(o.timeout);
    if (!(timeout > 0)) throw usageError(`--timeout "${o.timeout}" must be a positive number of seconds`);
    const r = await stage({
      image: name,
      seed,
      hosts,
      tracker,
      rateMiBps: rate,
      timeoutSeconds: timeout,
      dryRun: ctx.opts.dryRun,
      node: (host) => {
        const at = ctx.at(host);
        const session = at.op(o.vg);
        return { session, locked: (fn) => at.locked(o.vg, () => fn()) };
      },
      onProgress: (host, what) => ctx.progress.info(`${host}: ${what}`),
    });
    await ctx.finish(r, describeStage);
  });

  vgOption(
    catalog
      .command('approve')
      .description('approve a catalogue image version for this site (a tag on the repository VG)')
      .argument('<image...>', 'NAME@VERSION, or NAME when the accepted lists endorse one version'),
  ).action(async (refs: string[], o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => approve(op, refs)), describeApproval);
  });

  vgOption(
    catalog
      .command('revoke')
      .description('withdraw the approval (NAME alone: of every version); the next sync prunes unused images')
      .argument('<image...>', 'NAME@VERSION or NAME'),
  ).action(async (refs: string[], o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => revoke(op, refs)), describeApproval);
  });

  vgOption(
    catalog
      .command('list')
      .description('catalogue images: endorsed, approved, present, clonable, replicated (as seen from this node)'),
  ).action(async (o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await catalogStatus(ctx.op(o.vg)), describeStatus);
  });

  vgOption(
    catalog.command('show').description('one catalogue image').argument('<image>', 'NAME, NAME@VERSION or its LV name'),
  ).action(async (ref: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const s = await catalogStatus(ctx.op(o.vg));
    const hits = s.images.filter((r) => r.lv === ref || r.name === ref || `${r.name}@${r.version}` === ref);
    if (!hits.length) throw notFound(`no catalogue image ${ref}`, 'cowstack catalog list shows them');
    await ctx.finish(hits, (h) =>
      h
        .map((r) =>
          Object.entries(r)
            .map(([k, v]) => `${k.padEnd(9)} ${String(v)}`)
            .join('\n'),
        )
        .join('\n\n'),
    );
  });
}
