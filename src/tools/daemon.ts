/**
 * Long-running helpers started in the background on a node (the BitTorrent client, the
 * tracker): start-stop-daemon from dpkg, which every Debian host has, so a node needs no
 * systemd unit per download. The pid file is how a later run (or recover) finds and stops it.
 */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { sbin } from './program.js';

/**
 * Start argv in the background, its pid in pidFile; "already running" (same pid file) is
 * success. With `asUser` (user:group) it runs as that user: start-stop-daemon switches before
 * the exec, and the pid file (root's) is written before the switch.
 */
export const startReq = (pidFile: string, argv: readonly string[], title: string, asUser?: string): RunRequest => ({
  argv: [
    'start-stop-daemon',
    '--start',
    '--background',
    '--make-pidfile',
    '--pidfile',
    pidFile,
    '--oknodo',
    ...(asUser ? ['--chuid', asUser] : []),
    '--exec',
    argv[0]!,
    '--',
    ...argv.slice(1),
  ],
  kind: 'write',
  root: true,
  timeout: 'change',
  title,
});

/** Stop what pidFile names (TERM, then KILL after 10 s); nothing running is success. */
export const stopReq = (pidFile: string, title: string): RunRequest => ({
  argv: [
    'start-stop-daemon',
    '--stop',
    '--pidfile',
    pidFile,
    '--remove-pidfile',
    '--retry',
    'TERM/10/KILL/5',
    '--oknodo',
  ],
  kind: 'write',
  root: true,
  timeout: 'change',
  title,
});

/** Exit 0 while the process of pidFile runs. */
export const runningReq = (pidFile: string): RunRequest => ({
  argv: ['start-stop-daemon', '--status', '--pidfile', pidFile],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('start-stop-daemon', 'dpkg', 'run the BitTorrent client and tracker in the background (catalog stage)'),
];
