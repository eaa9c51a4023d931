/**
 * opentracker (Debian opentracker): the BitTorrent tracker of a staging run, on the seed's
 * side. It hands every announcing peer the others' address as it saw the connection and the
 * port the peer announced. It is never run directly (so it has no sudoers rule of its own):
 * start-stop-daemon starts it (daemon.ts), and its whole argv is in that rule.
 */
/**
 * argv of a tracker on TCP port `port` (no UDP: aria2 announces over HTTP). Debian builds it
 * with an access whitelist: it tracks only the info hashes listed in `whitelist`, one a line.
 */
export const trackerArgv = (port: number, whitelist: string): string[] => [
  '/usr/bin/opentracker',
  '-p',
  String(port),
  '-w',
  whitelist,
];
