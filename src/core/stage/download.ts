/**
 * One node's side of a peer-to-peer transfer, shared by push (`catalog stage`) and pull
 * (`catalog sync --replicas`): its torrent written and checked, the wait for aria2 to finish
 * with the staged file verified (size, no resume record, digest), and the replica filled
 * from that file by `cache replicate`'s own path. What differs is the digest a file must
 * have: the image's recorded sha256 (push) or the signed list's sha512 (pull).
 */
import { CowstackError, EXIT } from '../../exec/errors.js';
import type { RunRequest } from '../../exec/types.js';
import * as aria2 from '../../tools/aria2.js';
import * as blockData from '../../tools/blockData.js';
import * as daemon from '../../tools/daemon.js';
import { readOwnFileReq, writeRootFileReq } from '../../tools/files.js';
import { existsReq } from '../../tools/host.js';
import * as staging from '../../tools/staging.js';
import { replicate, type ReplicateResult } from '../cache/replicate.js';
import { runGuarded } from '../executor.js';
import { beginStep, endStep } from '../journal.js';
import type { NodeSession } from '../node.js';
import { stagingFiles, type StagePhase, type StageRecord } from './files.js';
import { recordWriteReq, type StageImage } from './plan.js';

export interface StageNode {
  session: NodeSession;
  /** Run fn holding this node's node lock (what `cache replicate` runs under). */
  locked<T>(fn: () => Promise<T>): Promise<T>;
}

/** What a staged file must be before anything uses it. */
export interface StagedWant {
  uuid: string;
  name: string;
  sizeBytes: number;
  algo: 'sha256' | 'sha512';
  digest: string;
  /** Whose digest it is, for messages: "the image's", "the signed". */
  whose: string;
}

export type RecordedImage = Pick<StageImage, 'name' | 'vg' | 'uuid' | 'sha256' | 'sizeBytes'>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function run(s: NodeSession, req: RunRequest) {
  return s.runner.run(req);
}

export async function fileDigest(s: NodeSession, file: string, algo: StagedWant['algo']): Promise<string> {
  return blockData.parseChecksum((await run(s, blockData.checksumReq(file, algo))).stdout);
}

/** A staged file that is whole (size right, no aria2 resume record) and has the wanted digest. */
export async function verifiedFile(
  s: NodeSession,
  want: StagedWant,
  f = stagingFiles(want.uuid),
): Promise<boolean | 'partial'> {
  const sizes = staging.parseSizes((await run(s, staging.sizesReq(f.image))).stdout);
  if (!sizes) return false;
  if (sizes.size !== want.sizeBytes || (await run(s, existsReq(f.control, 'file'))).exitCode === 0) return 'partial';
  return (await fileDigest(s, f.image, want.algo)) === want.digest;
}

export function record(image: RecordedImage, infoHash: string, phase: StagePhase, error?: string): StageRecord {
  return {
    image: image.name,
    vg: image.vg,
    uuid: image.uuid,
    sha256: image.sha256,
    infoHash,
    sizeBytes: image.sizeBytes,
    phase,
    updated: new Date().toISOString(),
    ...(error ? { error } : {}),
  };
}

/** The torrent written on a node and read back by aria2: it must show the expected info hash. */
export async function writeTorrent(
  s: NodeSession,
  host: string,
  uuid: string,
  torrent: Buffer,
  infoHash: string,
  file = stagingFiles(uuid).torrent,
) {
  await run(s, writeRootFileReq(file, torrent));
  const got = aria2.parseInfoHash((await run(s, aria2.showTorrentReq(file))).stdout);
  if (got !== infoHash)
    throw new CowstackError(EXIT.FAILED, `the torrent written on ${host} has info hash ${got}, not ${infoHash}`);
}

/** A file the service user may read (/proc, the client's log); undefined when it cannot. */
export async function readOwn(s: NodeSession, file: string): Promise<string | undefined> {
  const r = await run(s, readOwnFileReq(file));
  return r.exitCode === 0 ? r.stdout : undefined;
}

async function logTail(s: NodeSession, log: string): Promise<string> {
  const text = (await readOwn(s, log)) ?? '';
  return text.trim().split('\n').slice(-5).join('\n');
}

export interface AwaitOptions {
  deadline: number;
  pollMs?: number;
  onProgress?(host: string, what: string): void;
  /** What to do next when it failed (the command to run again). */
  again: string;
}

/** Wait until the node's staged file is whole and has the wanted digest. */
export async function awaitDownload(s: NodeSession, host: string, want: StagedWant, o: AwaitOptions): Promise<void> {
  const f = stagingFiles(want.uuid);
  let lastShown = 0;
  for (;;) {
    const v = await verifiedFile(s, want);
    if (v === true) return;
    if (v === false && (await run(s, existsReq(f.control, 'file'))).exitCode !== 0) {
      const sizes = staging.parseSizes((await run(s, staging.sizesReq(f.image))).stdout);
      if (sizes && sizes.size === want.sizeBytes)
        throw new CowstackError(
          EXIT.FAILED,
          `the file downloaded on ${host} does not have ${want.whose} ${want.algo} ${want.digest}: not used`,
          { hint: `remove ${f.image} on ${host} and ${o.again}` },
        );
    }
    if ((await run(s, daemon.runningReq(f.pid))).exitCode !== 0)
      throw new CowstackError(EXIT.FAILED, `the BitTorrent client on ${host} stopped before its download completed`, {
        hint: `see ${f.log} on ${host}: ${await logTail(s, f.log)}; then ${o.again} (it resumes)`,
      });
    if (Date.now() > o.deadline)
      throw new CowstackError(EXIT.FAILED, `${host} has not finished downloading ${want.name} in time`, {
        hint: `${o.again}: the download resumes from where it is (aria2 control file)`,
      });
    if (Date.now() - lastShown > 5000) {
      const sizes = staging.parseSizes((await run(s, staging.sizesReq(f.image))).stdout);
      const pct = sizes ? Math.floor((100 * Math.min(sizes.allocated, want.sizeBytes)) / want.sizeBytes) : 0;
      o.onProgress?.(host, `${pct}% downloaded`);
      lastShown = Date.now();
    }
    await sleep(o.pollMs ?? 1000);
  }
}

/** The replica made from the node's verified staged file, under the node lock; the record follows. */
export async function replicaFromFile(
  node: StageNode,
  image: RecordedImage,
  infoHash: string,
  rateMiBps?: number,
): Promise<ReplicateResult> {
  const f = stagingFiles(image.uuid);
  await run(node.session, recordWriteReq(record(image, infoHash, 'copying')));
  const r = await node.locked(() => replicate(node.session, image.name, { sourceFile: f.image, rateMiBps }));
  await run(node.session, recordWriteReq(record(image, infoHash, 'complete')));
  return r;
}

/**
 * A node's part in a staging or pull run, journalled: begun before its BitTorrent client (or
 * tracker) starts, ended once they are stopped. An entry left by a killed run is how
 * `cowstack recover` knows to stop what it left running (by the pid files of the LV uuid).
 */
export async function journalStaging(node: StageNode, image: Pick<StageImage, 'vg' | 'name' | 'uuid'>, end = false) {
  const entry = { op: 'stage' as const, vg: image.vg, name: image.name, uuid: image.uuid };
  await node.locked(() => runGuarded(node.session, [end ? endStep(entry) : beginStep(entry)]));
}
