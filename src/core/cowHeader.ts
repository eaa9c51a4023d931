/**
 * A COW's snapshot header as the kernel last wrote it. dm-snapshot writes its header and
 * exception table with dm-io, below the LV's page cache, and udev's probe at activation may
 * have cached the first pages (zeros, from before a snapshot was loaded on the COW): stale
 * pages would read as "no header" or "no exceptions", so the cache is dropped first.
 */
import * as blockdev from '../tools/blockdev.js';
import * as store from '../tools/exceptionStore.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';

/** `od` of the first 16 bytes of `cow` (a path), read below its page cache (exceptionStore parses it). */
export async function readCowHeader(ctx: NodeSession, cow: string): Promise<string> {
  await runGuarded(ctx, [{ title: `drop cached pages of ${cow}`, req: blockdev.flushReq(cow) }]);
  return (await ctx.runner.run(store.headerReq(cow))).stdout;
}
