/**
 * A directory served over http on the host's loopback (catalogue lists and images): the
 * cowstack CLI on the host fetches from it and streams to the nodes. Only base names are
 * served, so a request never leaves the directory.
 */
import { promises as fsp } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export async function serveDir(dir: string): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const file = path.join(dir, path.basename(decodeURIComponent(req.url ?? '/')));
    fsp.readFile(file).then(
      (b) => res.end(b),
      () => ((res.statusCode = 404), res.end()),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}
