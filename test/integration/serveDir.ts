/**
 * A directory served over http on the host's loopback (catalogue lists and images): the
 * cowstack CLI on the host fetches from it and streams to the nodes. Only base names are
 * served, so a request never leaves the directory. Ranges are served (a torrent's web seed).
 */
import { promises as fsp } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

/** sent: bytes answered per file name (what the repository side served). */
export async function serveDir(dir: string): Promise<{ server: Server; base: string; sent: Map<string, number> }> {
  const sent = new Map<string, number>();
  const server = createServer((req, res) => {
    const name = path.basename(decodeURIComponent(req.url ?? '/'));
    const file = path.join(dir, name);
    const answer = (b: Buffer) => (sent.set(name, (sent.get(name) ?? 0) + b.length), res.end(b));
    fsp.readFile(file).then(
      (b) => {
        // aria2 fetches a torrent's web seed (BEP 19) piece by piece, with Range requests.
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        if (!range) return answer(b);
        const end = range[2] ? Math.min(Number(range[2]), b.length - 1) : b.length - 1;
        res.statusCode = 206;
        res.setHeader('Content-Range', `bytes ${range[1]}-${end}/${b.length}`);
        answer(b.subarray(Number(range[1]), end + 1));
      },
      () => ((res.statusCode = 404), res.end()),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sent };
}
