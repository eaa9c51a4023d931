/**
 * `catalog sync LIST --replicas --hosts n1,n2,...`: pull mode for many nodes from one command.
 * Each node runs its own pull (pullReplicas: the list verified on that node, its torrents'
 * info hashes and the files' sha512 checked there), all at once over the same transport as
 * `--host`, so the nodes download from each other. With `--seed HOST[:PORT]` the repository
 * side's BitTorrent seed (`catalog seed`) is started first on HOST and the nodes download
 * without the web seed: the repository side then sends what its seed uploads, not one copy per
 * node. One node (the seed's own, if it pulls too) downloads each image first; once its copy
 * verified, the seed is stopped (what it sent reported) and the other nodes download from it
 * and from each other: the repository sends one copy (unless the seed ran before the command,
 * or --keep-seeding). Every node's client keeps seeding until no node of the run still needs
 * that image (as in `catalog stage`). A node that fails does not stop the others: each node's
 * result or error is reported.
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

/**
 * The nodes of one run and each image: every node must be done with it (its file verified, or
 * nothing to pull, or failed, or its pull ended) before any node's client stops seeding it; with
 * a leader, the other nodes start on an image only once the leader is done with it, and
 * onLeader runs first (pullHosts stops the repository seed there once the leader holds a
 * verified copy: the others get theirs from the nodes, and the repository sent one copy).
 */
export function swarm(hosts: string[], leader?: string, onLeader?: (lv: string, ok: boolean) => Promise<void>): Swarm {
  const done = new Map<string, Set<string>>();
  const ended = new Set<string>();
  const gates = new Map<string, { open: Promise<void>; release: () => void }>();
  let waiting: Array<{ lv: string; wake: () => void }> = [];
  const isSettled = (lv: string) => hosts.every((h) => ended.has(h) || done.get(lv)?.has(h));
  const check = () => {
    const now = waiting.filter((w) => isSettled(w.lv));
    waiting = waiting.filter((w) => !now.includes(w));
    for (const w of now) w.wake();
  };
  const gate = (lv: string) => {
    if (!gates.has(lv)) {
      let release = () => {};
      const open = new Promise<void>((r) => (release = r));
      gates.set(lv, { open, release });
      if (leader && ended.has(leader)) release();
    }
    return gates.get(lv)!;
  };
  return {
    async ready(lv, host) {
      if (leader && host !== leader) await gate(lv).open;
    },
    async leave(lv, host, ok) {
      if (done.get(lv)?.has(host)) return;
      if (!done.has(lv)) done.set(lv, new Set());
      done.get(lv)!.add(host);
      if (host === leader) {
        await onLeader?.(lv, ok);
        gate(lv).release();
      }
      check();
    },
    settled(lv) {
      if (isSettled(lv)) return Promise.resolve();
      return new Promise((wake) => waiting.push({ lv, wake }));
    },
    async end(host) {
      ended.add(host);
      if (host === leader) for (const g of gates.values()) g.release();
      check();
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
  // The seed's node pulls first when it is one of the nodes (its download stays on the node).
  const leader = o.seed ? (o.hosts.find((h) => h.host === o.seed!.host) ?? o.hosts[0]!).host : undefined;
  const startedHere = new Set((result.seed?.images ?? []).filter((i) => i.action === 'seeding').map((i) => i.lv));
  const stopSeed = async (lvs: string[]) => {
    if (!seedOpts || !lvs.length) return;
    const stopped = await seedCatalog({ ...seedOpts, stop: true, only: lvs });
    for (const lv of lvs) startedHere.delete(lv);
    result.seedStopped = {
      ...stopped.result,
      images: [...(result.seedStopped?.images ?? []), ...stopped.result.images],
    };
    error ??= stopped.error;
  };
  const together = swarm(
    o.hosts.map((h) => h.host),
    leader,
    async (lv, ok) => {
      // The leader holds a verified copy: from here on the nodes seed each other.
      if (ok && startedHere.has(lv) && !o.keepSeeding) {
        o.onProgress?.(o.seed!.host, `${leader} has ${lv}: stopping the repository seed, the nodes seed each other`);
        await stopSeed([lv]);
      }
    },
  );
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
  if (!o.keepSeeding && !o.dryRun) await stopSeed([...startedHere]);
  result.seconds = since();
  if (error && result.hosts.filter((h) => h.error).length > 1)
    error = new CowstackError(
      error.exitCode,
      `${result.hosts.filter((h) => h.error).length} of ${o.hosts.length} nodes failed; first: ${error.message}`,
    );
  return { result, error: error ?? undefined };
}
