/**
 * What staging runs left on this node, for `cache list`: one entry per image record in the
 * staging directory, with the bytes a download has so far (its sparse file's allocated size).
 * Read as the service user: the directory and its records are world-readable.
 */
import { readOwnFileReq } from '../../tools/files.js';
import { listFilesReq } from '../../tools/host.js';
import { parseSizes, sizesReq, STAGING_DIR } from '../../tools/staging.js';
import type { NodeSession } from '../node.js';
import { parseRecord, stagingFiles, type StageRecord } from './files.js';

export interface StagingEntry extends StageRecord {
  /** Bytes of the image on this node so far (downloading), else its size once staged. */
  stagedBytes: number;
}

export async function stagingStatus(ctx: NodeSession): Promise<StagingEntry[]> {
  const names = await ctx.runner.run(listFilesReq(STAGING_DIR));
  if (names.exitCode !== 0) return [];
  const out: StagingEntry[] = [];
  for (const name of names.stdout.split('\n').filter((n) => n.endsWith('.json'))) {
    const text = await ctx.runner.run(readOwnFileReq(`${STAGING_DIR}/${name}`));
    const r = parseRecord(text.exitCode === 0 ? text.stdout : undefined);
    if (!r) continue;
    let stagedBytes = r.phase === 'downloading' ? 0 : r.sizeBytes;
    if (r.phase === 'downloading') {
      const sizes = parseSizes((await ctx.runner.run(sizesReq(stagingFiles(r.uuid).image))).stdout);
      stagedBytes = Math.min(sizes?.allocated ?? 0, r.sizeBytes);
    }
    out.push({ ...r, stagedBytes });
  }
  return out;
}
