/**
 * `catalog sync LIST --replicas --hosts n1,n2,...`: pull mode for many nodes from one command.
 * Each node runs its own pull (pullReplicas: the list verified on that node, its torrents'
 * info hashes and the files' sha512 checked there), all at once over the same transport as
 * `--host`, so the nodes download from each other. With `--seed HOST[:PORT]` the repository
 * side's BitTorrent seed (`catalog seed`) is started first on HOST and the nodes download
 * without the web seed: the repository side then sends what its seed uploads, not one copy per
 * node. The seed is stopped at the end (what it sent reported) unless it was running before
 * the command or --keep-seeding is given. Every node's client keeps seeding until no node is
 * still downloading that image (as in `catalog stage`), so the seed is not asked for pieces
 * again by the last ones. A node that fails does not stop the others: each node's result or
 * error is reported.
 */
import { CowstackError } from '../../exec/errors.js';
import type { StageNode } from '../stage/download.js';
import type { StagePeer } from '../stage/spec.js';
import type { PublicKey } from './minisign.js';
import { pullReplicas, type PullResult, type Swarm } from './replicas.js';
import { seedCatalog, type SeedResult } from './seed.js';

export interface PullHostsOptions {
  source: string;
  key: PublicKey;
  hosts: StagePeer[];
  /** The repository side's seed: started before the pulls, which then skip the web seed. */
  seed?: StagePeer;
  seedRateMiBps?: number;
  seedPeers?: number;
  /** Leave the seed running at the end (it is left anyway when it ran before this command). */
  keepSeeding?: boolean;
  rateMiBps?: number;
  timeoutSeconds?: number;
  pollMs?: number;
  dryRun?: boolean;
  node(host: string): StageNode;
  onProgress?(host: string, what: string): void;
}

export interface PullHostResult {
  host: string;
  result?: PullResult;
  error?: { message: string; exitCode: number };
  seconds: number;
}

export interface PullHostsResult {
  seed?: SeedResult;
  /** The seed's images stopped at the end, with what each sent. */
  seedStopped?: SeedResult;
  hosts: PullHostResult[];
  seconds: number;
}

/** The nodes still downloading each image (by LV name), and who waits for them to finish. */
export function swarm(): Swarm {
  const pending = new Map<string, Set<string>>();
  const waiting = new Map<string, Array<() => void>>();
  return {
    join(lv, host) {
      if (!pending.has(lv)) pending.set(lv, new Set());
      pending.get(lv)!.add(host);
    },
    leave(lv, host) {
      pending.get(lv)?.delete(host);
      if (pending.get(lv)?.size) return;
      for (const wake of waiting.get(lv) ?? []) wake();
      waiting.delete(lv);
    },
    settled(lv) {
      if (!pending.get(lv)?.size) return Promise.resolve();
      return new Promise((resolve) => waiting.set(lv, [...(waiting.get(lv) ?? []), resolve]));
    },
  };
}

export async function pullHosts(o: PullHostsOptions): Promise<{ result: PullHostsResult; error?: CowstackError }> {
  const started = Date.now();
  const since = () => (Date.now() - started) / 1000;
  const result: PullHostsResult = { hosts: [], seconds: 0 };
  const seedOpts = o.seed && {
    source: o.source,
    key: o.key,
    node: o.node(o.seed.host),
    port: o.seed.port,
    rateMiBps: o.seedRateMiBps,
    peers: o.seedPeers,
    dryRun: o.dryRun,
    onProgress: o.onProgress,
  };
  if (seedOpts) {
    const { result: seeded, error } = await seedCatalog(seedOpts);
    result.seed = seeded;
    // Without a verified seed the nodes would wait for pieces nobody has: nothing is pulled.
    if (error) return { result: { ...result, seconds: since() }, error };
  }
  let error: CowstackError | undefined;
  const together = swarm();
  result.hosts = await Promise.all(
    o.hosts.map(async (p): Promise<PullHostResult> => {
      try {
        const r = await pullReplicas({
          source: o.source,
          key: o.key,
          node: o.node(p.host),
          port: p.port,
          rateMiBps: o.rateMiBps,
          webSeed: o.seed === undefined,
          swarm: together,
          timeoutSeconds: o.timeoutSeconds,
          pollMs: o.pollMs,
          dryRun: o.dryRun,
          onProgress: o.onProgress,
        });
        error ??= r.error;
        return {
          host: p.host,
          result: r.result,
          ...(r.error ? { error: { message: r.error.message, exitCode: r.error.exitCode } } : {}),
          seconds: since(),
        };
      } catch (e) {
        if (!(e instanceof CowstackError)) throw e;
        error ??= e;
        return { host: p.host, error: { message: e.message, exitCode: e.exitCode }, seconds: since() };
      }
    }),
  );
  // Stopped only when this command started it: a seed that ran before is someone else's.
  const startedHere = (result.seed?.images ?? []).filter((i) => i.action === 'seeding').map((i) => i.lv);
  if (seedOpts && startedHere.length && !o.keepSeeding && !o.dryRun) {
    const stopped = await seedCatalog({ ...seedOpts, stop: true, only: startedHere });
    result.seedStopped = stopped.result;
    error ??= stopped.error;
  }
  result.seconds = since();
  if (error && result.hosts.filter((h) => h.error).length > 1)
    error = new CowstackError(
      error.exitCode,
      `${result.hosts.filter((h) => h.error).length} of ${o.hosts.length} nodes failed; first: ${error.message}`,
    );
  return { result, error: error ?? undefined };
}
