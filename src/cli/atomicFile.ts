/**
 * Replace a file so that a reader never sees it half written: node_exporter's textfile
 * collector reads its directory at any moment, and a partly written file would publish
 * partial metrics (or be dropped as unparsable). The new content goes to a temporary file in
 * the same directory (rename is atomic only within one filesystem), is flushed to disk, and
 * is renamed over the old file. The temporary name does not end in .prom, so the collector
 * never reads it.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { CowstackError, EXIT } from '../exec/errors.js';

export async function writeFileAtomic(file: string, text: string, mode = 0o644): Promise<void> {
  const target = path.resolve(file);
  const tmp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    const fh = await fsp.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, target);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowstackError(EXIT.FAILED, `cannot write ${target}: ${(e as Error).message}`, {
      hint:
        code === 'ENOENT'
          ? `create the directory ${path.dirname(target)} first (node_exporter's --collector.textfile.directory)`
          : code === 'EACCES' || code === 'EPERM'
            ? `run as a user that may write ${path.dirname(target)} (the systemd unit in cluster-conf/ runs as root)`
            : undefined,
      cause: e,
    });
  }
}
