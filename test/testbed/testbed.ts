// The testbed cluster's lifecycle: a host tgtd serving one shared LUN on 127.0.0.1, and N qemu
// TCG guests (node1..nodeN) that reach it at 10.0.2.2 and are reached over ssh through a
// hostfwd on 127.0.0.1. Everything it starts is recorded in STATE/state.json and can be found
// again from /proc (every process has a path below the state dir on its command line).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { trace } from '../../src/exec/trace.js';
import { checkHost, ensureImage } from './image.js';
import {
  allPids,
  cmdline,
  defaultLog,
  exists,
  freePort,
  isAlive,
  readJson,
  run,
  runOk,
  shQuote,
  sleep,
  tail,
  waitForExit,
  writeJsonAtomic,
  type RunResult,
} from './util.js';

export interface TestbedNode {
  name: string;
  sshPort: number;
  /** 1..N, also the node's intended sanlock host_id */
  hostId: number;
  initiatorIqn: string;
  /** guest path of the node's extra local disk (its "fast disk" for caches) */
  localDisk: string;
  /**
   * Host port forwarded to the guest's MIGRATE_GUEST_PORT: another guest reaches a service there
   * (a qemu waiting for an incoming live migration) at 10.0.2.2:<this port>. Absent in old states.
   */
  migratePort?: number;
  /**
   * Two host ports forwarded to the SAME port number in the guest, for peer-to-peer staging
   * (catalog stage): a BitTorrent client listening on peerPort and announcing it, a tracker on
   * trackerPort. Every guest reaches the others at 10.0.2.2:<port>, so a tracker inside a guest
   * (which sees every peer as 10.0.2.2) hands out addresses that work from every guest.
   * Absent in old states.
   */
  peerPort?: number;
  trackerPort?: number;
}

/** The guest port a node's migratePort forwards to. */
export const MIGRATE_GUEST_PORT = 4444;

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** set when timeoutMs expired; the local ssh client was killed and exitCode is 124 */
  timedOut?: boolean;
}

/**
 * A third guest that plays the repository server (an iSCSI target in its own kernel). It is
 * not booted by `up`: a test that needs it calls `boot(server.name)` and `powerOff` after, so
 * the other tests do not pay for an idle guest.
 */
export interface TestbedServer {
  name: string;
  sshPort: number;
  /** Its port 3260 as the nodes reach it: 10.0.2.2:<hostfwd port> (qemu user networking). */
  portal: string;
  initiatorIqn: string;
  localDisk: string;
}

export interface Testbed {
  stateDir: string;
  sshConfig: string;
  nodes: TestbedNode[];
  server: TestbedServer;
  /** the repository portal as seen from the guests, e.g. '10.0.2.2:3260' */
  portal: string;
  targetIqn: string;
  /** host path of the LUN file */
  lunPath: string;
  /**
   * Run argv on a guest as root over ssh; each arg single-quoted for the remote shell.
   * Never throws on non-zero exit.
   */
  ssh(node: string, argv: string[], opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  /** Run a bash snippet on the guest (test convenience only). */
  sh(node: string, script: string, opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  copyTo(node: string, localPath: string, remotePath: string): Promise<void>;
  /** Hard kill of that node's qemu (simulates a crash). */
  powerOff(node: string): Promise<void>;
  /** Boot a powered-off node again (same ports, same local disk) and wait for ssh. */
  boot(node: string): Promise<void>;
  /** True if the node's qemu process is running. */
  isRunning(node: string): boolean;
  /** Path of the node's serial console log on the host. */
  consoleLog(node: string): string;
  down(): Promise<void>;
}

export interface UpOptions {
  nodes?: number;
  stateDir?: string;
  memMiB?: number;
  /** Guest memory of node k (1-based) where it differs from memMiB: a small extra node. */
  nodeMemMiB?: Record<number, number>;
  lunGiB?: number;
  cacheDir?: string;
  /** Bound for each guest's boot-to-ssh (default 240 s). */
  bootTimeoutMs?: number;
  /**
   * The physical sector size the LUN reports: 4096 (tgt's default for a file on this host's
   * filesystem) or 512. lvmlockd lays sanlock's leases out for it: 8 MiB or 1 MiB a lease.
   * Default: COWSTACK_TESTBED_LUN_PBS, else 4096.
   */
  lunSectorBytes?: 512 | 4096;
  log?: (s: string) => void;
}

/** The LUN's physical sector size asked for by COWSTACK_TESTBED_LUN_PBS (4096 unless it says 512). */
export const envLunSectorBytes = (): 512 | 4096 => (process.env.COWSTACK_TESTBED_LUN_PBS === '512' ? 512 : 4096);

interface NodeState extends TestbedNode {
  /** 'server': the repository-server guest (not a cluster node; booted on demand). */
  role?: 'node' | 'server';
  /** Host port forwarded to the guest's 3260 (server only). */
  iscsiPort?: number;
  /** Its guest memory when not the testbed's memMiB. */
  memMiB?: number;
  pid: number | null;
  poweredOff: boolean;
  pidFile: string;
  consoleLog: string;
  localDiskFile: string;
  /** Host file of the guest's persistent state disk (ext4 at /var/lib/cowstack); absent in old states. */
  stateDiskFile?: string;
  qemuArgv: string[];
}

interface State {
  version: 1;
  stateDir: string;
  createdAt: string;
  imageDir: string;
  imageHash: string;
  memMiB: number;
  lunGiB: number;
  tgtd: { pid: number | null; controlPort: number; port: number; logFile: string };
  portal: string;
  hostPortal: string;
  targetIqn: string;
  lunPath: string;
  sshConfig: string;
  controlDir: string;
  nodes: NodeState[];
  timings?: Record<string, number>;
}

export const TARGET_IQN = 'iqn.2003-01.org.example.cowstack:repo';
const BOOT_TIMEOUT_MS = 240_000;
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function resolveStateDir(stateDir?: string): string {
  return path.resolve(stateDir ?? process.env.COWSTACK_TESTBED_STATE ?? path.join(REPO_ROOT, '.testbed'));
}

const stateFile = (dir: string) => path.join(dir, 'state.json');

async function readState(dir: string): Promise<State | undefined> {
  const s = await readJson<State>(stateFile(dir));
  return s?.version === 1 ? s : undefined;
}

// One writer at a time per state dir inside this process (boot/powerOff may run concurrently).
const stateLocks = new Map<string, Promise<unknown>>();
async function updateState(dir: string, fn: (s: State) => void): Promise<void> {
  const prev = stateLocks.get(dir) ?? Promise.resolve();
  const next = prev.then(async () => {
    const s = await readState(dir);
    if (!s) throw new Error(`no testbed state in ${dir}`);
    fn(s);
    await writeJsonAtomic(stateFile(dir), s);
  });
  stateLocks.set(
    dir,
    next.catch(() => undefined),
  );
  await next;
}

/** ssh control sockets must fit in sun_path (108 bytes) with ssh's temporary suffix. */
function controlDirFor(stateDir: string): string {
  if (stateDir.length <= 70) return stateDir;
  return `/tmp/cowstack-testbed-${createHash('sha256').update(stateDir).digest('hex').slice(0, 12)}`;
}

// ------------------------------------------------------------------ ownership and cleanup

type Owned = { pid: number; kind: 'qemu' | 'tgtd' | 'ssh-mux'; argv: string[] };

/**
 * Processes provably started by the testbed in stateDir: qemu and tgtd whose command line has a
 * path below the state dir (pid file, console log), and ssh multiplexing masters whose title
 * names a control socket in the state's control dir.
 */
export function ownedProcesses(stateDir: string, controlDir = controlDirFor(stateDir)): Owned[] {
  const below = (a: string) => a.startsWith(stateDir + '/') || a.startsWith(`file:${stateDir}/`);
  const out: Owned[] = [];
  for (const pid of allPids()) {
    if (pid === process.pid || !isAlive(pid)) continue;
    const argv = cmdline(pid);
    if (!argv || argv.length === 0) continue;
    const prog = path.basename(argv[0] ?? '');
    if (prog.startsWith('qemu-system-') && argv.some(below)) out.push({ pid, kind: 'qemu', argv });
    else if (prog === 'tgtd' && argv.some(below)) out.push({ pid, kind: 'tgtd', argv });
    else if (
      argv[0]?.startsWith('ssh: ') &&
      argv.join(' ').includes(`${controlDir}/cm-`) &&
      argv.join(' ').includes('[mux]')
    )
      out.push({ pid, kind: 'ssh-mux', argv });
  }
  return out;
}

function isOwnedPid(pid: number | null | undefined, stateDir: string, kind: 'qemu' | 'tgtd'): boolean {
  if (!pid || !isAlive(pid)) return false;
  const argv = cmdline(pid);
  if (!argv) return false;
  const prog = path.basename(argv[0] ?? '');
  const okProg = kind === 'qemu' ? prog.startsWith('qemu-system-') : prog === 'tgtd';
  return okProg && argv.some((a) => a.startsWith(stateDir + '/') || a.startsWith(`file:${stateDir}/`));
}

async function killPid(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitForExit(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitForExit(pid, 5000);
}

function tgtControlPort(argv: string[]): number | undefined {
  const i = argv.findIndex((a) => a === '-C' || a === '--control-port');
  const v = i >= 0 ? Number(argv[i + 1]) : NaN;
  return Number.isInteger(v) ? v : undefined;
}

/** Stops a tgtd the documented way (it ignores SIGTERM while serving), then SIGKILL if needed. */
async function stopTgtd(pid: number, controlPort: number | undefined, log: (s: string) => void): Promise<void> {
  if (controlPort !== undefined) {
    const C = ['-C', String(controlPort)];
    await run(['tgtadm', ...C, '--op', 'update', '--mode', 'sys', '--name', 'State', '-v', 'offline'], {
      timeoutMs: 10_000,
    });
    const show = await run(['tgtadm', ...C, '--lld', 'iscsi', '--op', 'show', '--mode', 'target'], {
      timeoutMs: 10_000,
    });
    for (const m of show.stdout.matchAll(/^Target (\d+):/gm)) {
      await run(['tgtadm', ...C, '--lld', 'iscsi', '--op', 'delete', '--mode', 'target', '--tid', m[1]!, '--force'], {
        timeoutMs: 10_000,
      });
    }
    await run(['tgtadm', ...C, '--op', 'delete', '--mode', 'system'], { timeoutMs: 10_000 });
    if (await waitForExit(pid, 5000)) return;
    log(`testbed: tgtd ${pid} did not exit after 'delete system'; killing it`);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await waitForExit(pid, 5000);
}

/**
 * Stops everything a testbed in stateDir started (including leftovers of a crashed run) and
 * removes its disks, sockets and state. Idempotent.
 */
async function cleanup(stateDir: string, log: (s: string) => void): Promise<void> {
  const st = await readState(stateDir);
  const controlDir = st?.controlDir ?? controlDirFor(stateDir);
  const found = ownedProcesses(stateDir, controlDir);
  // pids recorded in state.json are only trusted when /proc confirms they are ours
  const qemus = found.filter((o) => o.kind === 'qemu');
  const tgtds = found.filter((o) => o.kind === 'tgtd');
  const muxes = found.filter((o) => o.kind === 'ssh-mux');
  if (qemus.length) log(`testbed: stopping qemu ${qemus.map((q) => q.pid).join(' ')}`);
  await Promise.all(qemus.map((q) => killPid(q.pid, 5000)));
  for (const t of tgtds) {
    log(`testbed: stopping tgtd ${t.pid}`);
    const port = tgtControlPort(t.argv);
    await stopTgtd(t.pid, port, log);
    if (port !== undefined) {
      for (const f of [`/run/tgtd/socket.${port}`, `/run/tgtd/socket.${port}.lock`]) await fsp.rm(f, { force: true });
    }
  }
  await Promise.all(muxes.map((m) => killPid(m.pid, 2000)));

  // files this testbed created (console logs and tgtd.log stay for post-mortems)
  let names: string[] = [];
  try {
    names = await fsp.readdir(stateDir);
  } catch {
    /* no state dir */
  }
  const nodeFile = /^(lun\.img|(node\d+|server)\.(pid|local\.(img|qcow2)|state\.img))$/;
  const stateFile = /^(state\.json(\.tmp-\d+)?|ssh_config|cm-.*|id_ed25519(\.pub)?)$/;
  for (const n of names) {
    if (nodeFile.test(n) || stateFile.test(n)) {
      await fsp.rm(path.join(stateDir, n), { force: true });
    }
  }
  if (controlDir !== stateDir) await fsp.rm(controlDir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ up-lock

async function takeLock(stateDir: string): Promise<() => Promise<void>> {
  const lock = path.join(stateDir, 'lock');
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(lock, 'wx');
      await fsp.writeFile(lock, String(process.pid));
      closeSync(fd);
      return async () => {
        await fsp.rm(lock, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await fsp.readFile(lock, 'utf8').catch(() => '')).trim());
      const argv = pid && isAlive(pid) ? cmdline(pid) : undefined;
      if (pid && pid !== process.pid && argv?.some((a) => a.includes('node'))) {
        throw new Error(`another testbed operation (pid ${pid}) is running on ${stateDir}`);
      }
      await fsp.rm(lock, { force: true }); // stale: its owner is gone
    }
  }
  throw new Error(`could not lock ${stateDir}`);
}

// ------------------------------------------------------------------ pieces of up()

function sshConfigText(st: Pick<State, 'nodes' | 'controlDir' | 'stateDir'>): string {
  const key = path.join(st.stateDir, 'id_ed25519');
  const q = (s: string) => (/\s/.test(s) ? `"${s}"` : s);
  const blocks = st.nodes.map(
    (n) => `Host ${n.name}
  HostName 127.0.0.1
  Port ${n.sshPort}
  User root
  IdentityFile ${q(key)}
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ConnectTimeout 20
  ServerAliveInterval 15
  ServerAliveCountMax 8
  ControlMaster auto
  ControlPath ${q(path.join(st.controlDir, 'cm-%n'))}
  ControlPersist 60
`,
  );
  return (
    `# cowstack testbed: generated by test/testbed; use as: ssh -F ${st.stateDir}/ssh_config node1\n` +
    `\n${blocks.join('\n')}`
  );
}

/** A tgtd management port (tgtd accepts 1..32767) that no running tgtd uses. */
async function pickControlPort(): Promise<number> {
  const used = new Set<number>();
  for (const pid of allPids()) {
    const argv = cmdline(pid);
    if (argv && path.basename(argv[0] ?? '') === 'tgtd') used.add(tgtControlPort(argv) ?? 0);
  }
  for (;;) {
    const n = 20000 + Math.floor(Math.random() * 12000);
    if (used.has(n)) continue;
    const probe = await run(['tgtadm', '-C', String(n), '--op', 'show', '--mode', 'sys'], { timeoutMs: 5000 });
    if (probe.exitCode !== 0) return n;
  }
}

async function startTgtd(
  stateDir: string,
  port: number,
  lunPath: string,
  lunSectorBytes: 512 | 4096,
  log: (s: string) => void,
) {
  const logFile = path.join(stateDir, 'tgtd.log');
  let pid: number | undefined;
  let controlPort = 0;
  for (let attempt = 1; ; attempt++) {
    controlPort = await pickControlPort();
    const fd = openSync(logFile, 'w');
    // -p puts a path below the state dir on tgtd's command line: that is how cleanup recognises it
    const child = spawn(
      'tgtd',
      ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`, '-p', path.join(stateDir, 'tgtd.pid')],
      {
        detached: true,
        stdio: ['ignore', fd, fd],
      },
    );
    closeSync(fd);
    child.on('error', () => undefined);
    child.unref();
    pid = child.pid;
    if (!pid) throw new Error('could not start tgtd');
    const deadline = Date.now() + 15_000;
    let ready = false;
    while (isAlive(pid)) {
      const r = await run(['tgtadm', '-C', String(controlPort), '--op', 'show', '--mode', 'sys'], { timeoutMs: 5000 });
      if (r.exitCode === 0) {
        ready = true;
        break;
      }
      if (Date.now() > deadline) {
        await stopTgtd(pid, undefined, log);
        throw new Error(`tgtd did not answer on control port ${controlPort}:\n${r.stderr}`);
      }
      await sleep(200);
    }
    if (ready) break;
    const why = await tail(logFile, 20);
    if (attempt >= 5) throw new Error(`tgtd exited at start:\n${why}`);
    log(`testbed: tgtd exited at start (control port ${controlPort}); retrying: ${why.trim().split('\n').pop()}`);
  }
  const C = ['-C', String(controlPort)];
  await runOk(['tgtadm', ...C, '--lld', 'iscsi', '--op', 'new', '--mode', 'target', '--tid', '1', '-T', TARGET_IQN]);
  const lu = [
    'tgtadm',
    ...C,
    '--lld',
    'iscsi',
    '--op',
    'new',
    '--mode',
    'logicalunit',
    '--tid',
    '1',
    '--lun',
    '1',
    '-b',
    lunPath,
  ];
  const direct = await run([...lu, '--bsoflags', 'direct']);
  if (direct.exitCode !== 0) {
    log(`testbed: tgtd refused bsoflags=direct (${direct.stderr.trim()}); using buffered I/O`);
    await runOk(lu);
  }
  // tgt reports the backing file's block size (4096 here) as the physical sector size, and
  // lvmlockd lays sanlock's leases out for 4K sectors then. lbppbe=0 makes the LUN report
  // 512-byte physical sectors: 1 MiB leases, an eighth of the lock I/O (bench lockio).
  if (lunSectorBytes === 512) {
    const lun = ['--tid', '1', '--lun', '1'];
    await runOk([
      'tgtadm',
      ...C,
      '--lld',
      'iscsi',
      '--op',
      'update',
      '--mode',
      'logicalunit',
      ...lun,
      '--params',
      'lbppbe=0',
    ]);
  }
  await runOk(['tgtadm', ...C, '--lld', 'iscsi', '--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL']);
  return { pid, logFile, controlPort };
}

function qemuArgv(o: {
  name: string;
  imageDir: string;
  memMiB: number;
  sshPort: number;
  iscsiPort?: number;
  migratePort?: number;
  samePorts?: number[];
  disk: string;
  stateDisk: string;
  consoleLog: string;
  pidFile: string;
}): string[] {
  // A target inside the guest is offered to the other guests on the host's loopback only.
  const iscsiFwd = o.iscsiPort ? `,hostfwd=tcp:127.0.0.1:${o.iscsiPort}-:3260` : '';
  const migrateFwd = o.migratePort ? `,hostfwd=tcp:127.0.0.1:${o.migratePort}-:${MIGRATE_GUEST_PORT}` : '';
  const sameFwd = (o.samePorts ?? []).map((p) => `,hostfwd=tcp:127.0.0.1:${p}-:${p}`).join('');
  const fwd = `hostfwd=tcp:127.0.0.1:${o.sshPort}-:22${iscsiFwd}${migrateFwd}${sameFwd}`;
  for (const p of [o.disk, o.stateDisk, o.consoleLog, o.imageDir]) {
    if (/[,\s]/.test(p)) throw new Error(`paths with commas or spaces are not supported by this testbed: ${p}`);
  }
  return [
    'qemu-system-x86_64',
    '-name',
    `cowstack-testbed-${o.name}`,
    '-accel',
    'tcg',
    '-m',
    String(o.memMiB),
    '-smp',
    '1',
    '-nodefaults',
    '-no-reboot',
    '-kernel',
    path.join(o.imageDir, 'vmlinuz'),
    '-initrd',
    path.join(o.imageDir, 'initramfs.cpio'),
    '-append',
    `console=ttyS0 rdinit=/init net.ifnames=0 panic=5 mitigations=off cowstack.hostname=${o.name}`,
    // ipv6=off: no IPv6 route out of the guest; the only peer is 10.0.2.2 (host loopback)
    '-nic',
    `user,model=virtio-net-pci,ipv6=off,${fwd}`,
    // raw, not qcow2: every write the guest saw complete is in the host file even when qemu is
    // SIGKILLed (qcow2 keeps cluster allocations in qemu's memory until the guest flushes)
    '-drive',
    `file=${o.disk},if=none,id=local,format=raw,cache=writeback,discard=unmap`,
    '-device',
    'virtio-blk-pci,drive=local,serial=cowstack-local',
    // After the local disk, so that one stays /dev/vda. The guest's root is its initramfs (RAM):
    // this small disk keeps /var/lib/cowstack (the journal) across a power-off, as a
    // hypervisor's own disk does. Mounted by mountStateDisk after every boot.
    '-drive',
    `file=${o.stateDisk},if=none,id=state,format=raw,cache=writeback`,
    '-device',
    `virtio-blk-pci,drive=state,serial=${STATE_DISK_SERIAL}`,
    '-device',
    'virtio-rng-pci',
    '-display',
    'none',
    '-serial',
    `file:${o.consoleLog}`,
    '-daemonize',
    '-pidfile',
    o.pidFile,
  ];
}

const STATE_DISK_SERIAL = 'cowstack-state';
const STATE_DISK_BYTES = 256 * 2 ** 20;
const STATE_DIR_GUEST = '/var/lib/cowstack';

/**
 * Formats the guest's state disk on its first boot (ext4) and mounts it at /var/lib/cowstack:
 * the node's journal then survives a power-off like on a real hypervisor. Found by its virtio
 * serial, not by name. Run after every boot (the image itself does not know the disk).
 */
async function mountStateDisk(st: Pick<State, 'sshConfig'>, n: NodeState): Promise<void> {
  if (!n.stateDiskFile) return; // a testbed from before the state disk
  const script = [
    'set -e',
    'dev=; for d in /sys/block/vd*; do ' +
      `[ "$(cat "$d/serial" 2>/dev/null)" = ${STATE_DISK_SERIAL} ] && dev=/dev/\${d##*/}; done`,
    '[ -n "$dev" ] || { echo "no disk with serial ' + STATE_DISK_SERIAL + '" >&2; exit 3; }',
    `if mountpoint -q ${STATE_DIR_GUEST}; then exit 0; fi`,
    'blkid -p -o value -s TYPE "$dev" | grep -qx ext4 || mkfs.ext4 -q -F -L cowstack-state "$dev"',
    `mkdir -p ${STATE_DIR_GUEST}`,
    `mount -t ext4 "$dev" ${STATE_DIR_GUEST}`,
  ].join('\n');
  const r = await run(sshArgv(st, n.name, [], ['--', `bash -c ${shQuote(script)}`]), { timeoutMs: 120_000 });
  if (r.exitCode !== 0)
    throw new Error(
      `${n.name}: could not mount its state disk at ${STATE_DIR_GUEST} (exit ${r.exitCode}): ${r.stderr.trim()}`,
    );
}

/** Drops a node's ssh master (its connection died with the guest) so the next ssh opens a new one. */
async function dropMux(st: Pick<State, 'controlDir' | 'stateDir'>, node: string): Promise<void> {
  for (const m of ownedProcesses(st.stateDir, st.controlDir).filter(
    (o) => o.kind === 'ssh-mux' && o.argv.join(' ').includes(`/cm-${node} `),
  )) {
    await killPid(m.pid, 2000);
  }
  await fsp.rm(path.join(st.controlDir, `cm-${node}`), { force: true });
}

async function startQemu(n: NodeState): Promise<number> {
  await fsp.rm(n.pidFile, { force: true });
  if (await exists(n.consoleLog)) await fsp.rename(n.consoleLog, `${n.consoleLog}.1`);
  const r = await run(n.qemuArgv, { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`qemu for ${n.name} failed to start (exit ${r.exitCode}):\n${r.stderr.trim()}`);
  const pid = Number((await fsp.readFile(n.pidFile, 'utf8')).trim());
  if (!Number.isInteger(pid) || !isAlive(pid))
    throw new Error(`qemu for ${n.name} is not running after start:\n${r.stderr}`);
  return pid;
}

function sshArgv(st: Pick<State, 'sshConfig'>, node: string, options: string[] = [], command: string[] = []): string[] {
  return ['ssh', '-F', st.sshConfig, ...options, node, ...command];
}

async function waitForSsh(st: State, n: NodeState, pid: number, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  let last: RunResult | undefined;
  for (;;) {
    if (!isAlive(pid)) {
      throw new Error(
        `${n.name}: qemu (pid ${pid}) exited while booting. Console (${n.consoleLog}):\n${await tail(n.consoleLog)}`,
      );
    }
    // probe without multiplexing so no half-open master is left behind
    last = await run(
      sshArgv(st, n.name, ['-o', 'ControlMaster=no', '-o', 'ControlPath=none', '-o', 'ConnectTimeout=10'], ['true']),
      {
        timeoutMs: 30_000,
      },
    );
    if (last.exitCode === 0) break;
    if (Date.now() > deadline) {
      throw new Error(
        `${n.name}: no ssh on 127.0.0.1:${n.sshPort} after ${Math.round(timeoutMs / 1000)} s ` +
          `(last: ${last.stderr.trim()}).\n` +
          `Console tail (${n.consoleLog}):\n${await tail(n.consoleLog)}`,
      );
    }
    await sleep(1000);
  }
  // open the shared master connection now, so the first test command is fast
  await run(sshArgv(st, n.name, [], ['true']), { timeoutMs: 30_000 });
  return (Date.now() - t0) / 1000;
}

// ------------------------------------------------------------------ the Testbed object

function serverOf(st: State): TestbedServer {
  const s = st.nodes.find((n) => n.role === 'server');
  if (!s || !s.iscsiPort)
    throw new Error(`the testbed in ${st.stateDir} predates the server guest: run down and up again`);
  return {
    name: s.name,
    sshPort: s.sshPort,
    portal: `10.0.2.2:${s.iscsiPort}`,
    initiatorIqn: s.initiatorIqn,
    localDisk: s.localDisk,
  };
}

function makeTestbed(st0: State, log: (s: string) => void): Testbed {
  const dir = st0.stateDir;
  const nodeNames = st0.nodes.map((n) => n.name);
  const check = (node: string) => {
    if (!nodeNames.includes(node)) throw new Error(`unknown testbed node '${node}' (have: ${nodeNames.join(', ')})`);
  };
  const current = async (): Promise<State> => {
    const s = await readState(dir);
    if (!s) throw new Error(`testbed in ${dir} is gone (no state.json)`);
    return s;
  };

  const ssh: Testbed['ssh'] = async (node, argv, opts = {}) => {
    check(node);
    if (argv.length === 0) throw new Error('ssh: empty argv');
    const started = Date.now();
    const r = await run([...sshArgv(st0, node), '--', argv.map(shQuote).join(' ')], {
      input: opts.input,
      timeoutMs: opts.timeoutMs,
    });
    trace({ target: `testbed:${node}`, ms: Date.now() - started, exit: r.exitCode, argv });
    const res: ExecResult = { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
    if (r.timedOut) {
      res.timedOut = true;
      res.stderr += `\n[testbed] timed out after ${opts.timeoutMs} ms: ${argv.join(' ')}`;
    }
    return res;
  };

  return {
    stateDir: dir,
    sshConfig: st0.sshConfig,
    nodes: st0.nodes
      .filter((n) => n.role !== 'server')
      .map(({ name, sshPort, hostId, initiatorIqn, localDisk, migratePort, peerPort, trackerPort }) => ({
        name,
        sshPort,
        hostId,
        initiatorIqn,
        localDisk,
        ...(migratePort ? { migratePort } : {}),
        ...(peerPort && trackerPort ? { peerPort, trackerPort } : {}),
      })),
    server: serverOf(st0),
    portal: st0.portal,
    targetIqn: st0.targetIqn,
    lunPath: st0.lunPath,
    ssh,
    sh: (node, script, opts) => ssh(node, ['bash', '-c', script], opts),
    async copyTo(node, localPath, remotePath) {
      check(node);
      const mode = (statSync(localPath).mode & 0o7777).toString(8);
      const remote = `cat > ${shQuote(remotePath)} && chmod ${mode} ${shQuote(remotePath)}`;
      await new Promise<void>((resolve, reject) => {
        const [cmd, ...args] = sshArgv(st0, node, [], ['--', remote]);
        const child = spawn(cmd!, args, { stdio: ['pipe', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.on('data', (b: Buffer) => (err += b.toString()));
        child.on('error', reject);
        child.on('close', (code) =>
          code === 0
            ? resolve()
            : reject(new Error(`copyTo ${node}:${remotePath} failed (exit ${code}): ${err.trim()}`)),
        );
        const src = createReadStream(localPath);
        src.on('error', (e) => {
          child.kill('SIGKILL');
          reject(e);
        });
        src.pipe(child.stdin);
      });
    },
    async powerOff(node) {
      check(node);
      const st = await current();
      const n = st.nodes.find((x) => x.name === node)!;
      const pid = Number((await fsp.readFile(n.pidFile, 'utf8').catch(() => '')).trim()) || n.pid;
      if (pid && isOwnedPid(pid, dir, 'qemu')) {
        process.kill(pid, 'SIGKILL');
        if (!(await waitForExit(pid, 10_000))) throw new Error(`${node}: qemu ${pid} did not die`);
      }
      // its ssh master sees the connection drop; make sure it is gone before a reboot
      await dropMux(st, node);
      await updateState(dir, (s) => {
        const x = s.nodes.find((y) => y.name === node)!;
        x.pid = null;
        x.poweredOff = true;
      });
      log(`testbed: ${node} powered off (qemu ${pid ?? '-'} killed)`);
    },
    async boot(node) {
      check(node);
      const st = await current();
      const n = st.nodes.find((x) => x.name === node)!;
      const old = Number((await fsp.readFile(n.pidFile, 'utf8').catch(() => '')).trim());
      if (old && isOwnedPid(old, dir, 'qemu')) throw new Error(`${node} is already running (qemu pid ${old})`);
      if (!(await exists(n.qemuArgv[n.qemuArgv.indexOf('-initrd') + 1]!))) {
        throw new Error(`${node}: the image ${st.imageDir} is gone (rebuilt or pruned); run down and up again`);
      }
      log(`testbed: booting ${node}`);
      // Killed from outside (not through powerOff): its ssh master may still hang on.
      await dropMux(st, node);
      const pid = await startQemu(n);
      await updateState(dir, (s) => {
        const x = s.nodes.find((y) => y.name === node)!;
        x.pid = pid;
        x.poweredOff = false;
      });
      const secs = await waitForSsh(st, n, pid, BOOT_TIMEOUT_MS);
      await mountStateDisk(st, n);
      log(`testbed: ${node} up (ssh after ${secs.toFixed(1)} s)`);
    },
    isRunning(node) {
      check(node);
      const n = st0.nodes.find((x) => x.name === node)!;
      try {
        return isOwnedPid(Number(readFileSync(n.pidFile, 'utf8').trim()), dir, 'qemu');
      } catch {
        return false;
      }
    },
    consoleLog(node) {
      check(node);
      return st0.nodes.find((x) => x.name === node)!.consoleLog;
    },
    down: () => down(dir, log),
  };
}

// ------------------------------------------------------------------ public lifecycle

/** Boots a fresh testbed (cleaning up whatever a previous run in the same state dir left). */
export async function up(opts: UpOptions = {}): Promise<Testbed> {
  const log = opts.log ?? defaultLog;
  const count = opts.nodes ?? 2;
  const memMiB = opts.memMiB ?? 3072;
  const lunGiB = opts.lunGiB ?? 4;
  if (!Number.isInteger(count) || count < 1 || count > 8) throw new Error(`nodes must be 1..8 (got ${count})`);
  await checkHost();
  const stateDir = resolveStateDir(opts.stateDir);
  if (/[,\s]/.test(stateDir)) throw new Error(`state dir must not contain commas or spaces: ${stateDir}`);
  const t0 = Date.now();
  const image = await ensureImage({ cacheDir: opts.cacheDir, log });
  await fsp.mkdir(stateDir, { recursive: true });
  const release = await takeLock(stateDir);
  try {
    await cleanup(stateDir, log);
    const tUp = Date.now();
    const controlDir = controlDirFor(stateDir);
    await fsp.mkdir(controlDir, { recursive: true, mode: 0o700 });

    // distinct free ports on 127.0.0.1
    const ports = new Set<number>();
    while (ports.size < 4 * count + 3) ports.add(await freePort());
    const [iscsiPort, serverSshPort, serverIscsiPort, ...sshPorts] = [...ports] as [
      number,
      number,
      number,
      ...number[],
    ];

    await fsp.copyFile(path.join(image.dir, 'id_ed25519'), path.join(stateDir, 'id_ed25519'));
    await fsp.chmod(path.join(stateDir, 'id_ed25519'), 0o600);
    await fsp.copyFile(path.join(image.dir, 'id_ed25519.pub'), path.join(stateDir, 'id_ed25519.pub'));

    const lunPath = path.join(stateDir, 'lun.img');
    await fsp.writeFile(lunPath, '');
    await fsp.truncate(lunPath, lunGiB * 2 ** 30);

    const nodes: NodeState[] = [];
    for (let k = 1; k <= count; k++) {
      const name = `node${k}`;
      const disk = path.join(stateDir, `${name}.local.img`);
      const stateDisk = path.join(stateDir, `${name}.state.img`);
      const consoleLog = path.join(stateDir, `${name}.console.log`);
      const pidFile = path.join(stateDir, `${name}.pid`);
      const sshPort = sshPorts[k - 1]!;
      const migratePort = sshPorts[count + k - 1]!;
      const peerPort = sshPorts[2 * count + k - 1]!;
      const trackerPort = sshPorts[3 * count + k - 1]!;
      const nodeMem = opts.nodeMemMiB?.[k] ?? memMiB;
      nodes.push({
        name,
        sshPort,
        hostId: k,
        initiatorIqn: `iqn.2003-01.org.example.${name}:initiator`,
        localDisk: '/dev/vda',
        migratePort,
        peerPort,
        trackerPort,
        ...(nodeMem !== memMiB ? { memMiB: nodeMem } : {}),
        pid: null,
        poweredOff: false,
        pidFile,
        consoleLog,
        localDiskFile: disk,
        stateDiskFile: stateDisk,
        qemuArgv: qemuArgv({
          name,
          imageDir: image.dir,
          memMiB: nodeMem,
          sshPort,
          migratePort,
          samePorts: [peerPort, trackerPort],
          disk,
          stateDisk,
          consoleLog,
          pidFile,
        }),
      });
    }
    {
      const name = 'server';
      const disk = path.join(stateDir, `${name}.local.img`);
      const stateDisk = path.join(stateDir, `${name}.state.img`);
      const consoleLog = path.join(stateDir, `${name}.console.log`);
      const pidFile = path.join(stateDir, `${name}.pid`);
      nodes.push({
        name,
        role: 'server',
        sshPort: serverSshPort,
        iscsiPort: serverIscsiPort,
        hostId: 0,
        initiatorIqn: `iqn.2003-01.org.example.${name}:initiator`,
        localDisk: '/dev/vda',
        pid: null,
        poweredOff: true,
        pidFile,
        consoleLog,
        localDiskFile: disk,
        stateDiskFile: stateDisk,
        qemuArgv: qemuArgv({
          name,
          imageDir: image.dir,
          memMiB: Math.min(memMiB, 2048),
          sshPort: serverSshPort,
          iscsiPort: serverIscsiPort,
          disk,
          stateDisk,
          consoleLog,
          pidFile,
        }),
      });
    }
    const st: State = {
      version: 1,
      stateDir,
      createdAt: new Date().toISOString(),
      imageDir: image.dir,
      imageHash: image.hash,
      memMiB,
      lunGiB,
      tgtd: { pid: null, controlPort: 0, port: iscsiPort, logFile: path.join(stateDir, 'tgtd.log') },
      portal: `10.0.2.2:${iscsiPort}`,
      hostPortal: `127.0.0.1:${iscsiPort}`,
      targetIqn: TARGET_IQN,
      lunPath,
      sshConfig: path.join(stateDir, 'ssh_config'),
      controlDir,
      nodes,
    };
    await writeJsonAtomic(stateFile(stateDir), st);
    await fsp.writeFile(st.sshConfig, sshConfigText(st));

    log(`testbed: tgtd on 127.0.0.1:${iscsiPort} serving ${TARGET_IQN} (${lunGiB} GiB sparse LUN)`);
    const tgt = await startTgtd(stateDir, iscsiPort, lunPath, opts.lunSectorBytes ?? envLunSectorBytes(), log);
    st.tgtd.pid = tgt.pid;
    st.tgtd.controlPort = tgt.controlPort;
    await writeJsonAtomic(stateFile(stateDir), st);

    for (const n of nodes) {
      await fsp.writeFile(n.localDiskFile, '');
      await fsp.truncate(n.localDiskFile, 2 * 2 ** 30); // sparse 2 GiB
      await fsp.writeFile(n.stateDiskFile!, '');
      await fsp.truncate(n.stateDiskFile!, STATE_DISK_BYTES); // sparse, formatted at first boot
    }

    const cluster = nodes.filter((n) => n.role !== 'server');
    log(`testbed: booting ${cluster.map((n) => `${n.name} (${n.memMiB ?? memMiB} MiB)`).join(', ')} (qemu TCG)`);
    const tBoot = Date.now();
    const pids = await Promise.all(cluster.map((n) => startQemu(n)));
    cluster.forEach((n, i) => (n.pid = pids[i]!));
    await writeJsonAtomic(stateFile(stateDir), st);
    const secs = await Promise.all(
      cluster.map((n) => waitForSsh(st, n, n.pid!, opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS)),
    );
    await Promise.all(cluster.map((n) => mountStateDisk(st, n)));
    cluster.forEach((n, i) =>
      log(`testbed: ${n.name} ssh ready after ${secs[i]!.toFixed(1)} s (127.0.0.1:${n.sshPort})`),
    );
    st.timings = {
      imageSeconds: image.seconds,
      bootToSshSeconds: (Date.now() - tBoot) / 1000,
      upSeconds: (Date.now() - tUp) / 1000,
      totalSeconds: (Date.now() - t0) / 1000,
    };
    await writeJsonAtomic(stateFile(stateDir), st);
    log(
      `testbed: up in ${st.timings.upSeconds!.toFixed(1)} s (boot to ssh ${st.timings.bootToSshSeconds!.toFixed(1)} s)`,
    );
    return makeTestbed(st, log);
  } catch (e) {
    if (process.env.COWSTACK_TESTBED_KEEP_ON_FAILURE) {
      log(`testbed: up failed; leaving it as it is (COWSTACK_TESTBED_KEEP_ON_FAILURE)`);
    } else {
      log(`testbed: up failed; cleaning up`);
      await cleanup(stateDir, log).catch((c) => log(`testbed: cleanup failed: ${String(c)}`));
    }
    throw e;
  } finally {
    await release();
  }
}

/** Reuses a running testbed described by STATE/state.json; throws if it is not (fully) alive. */
export async function attach(stateDir?: string, opts: { log?: (s: string) => void } = {}): Promise<Testbed> {
  const log = opts.log ?? defaultLog;
  const dir = resolveStateDir(stateDir);
  const st = await readState(dir);
  if (!st) throw new Error(`no testbed in ${dir} (no state.json): run 'npm run testbed -- up'`);
  const problems: string[] = [];
  if (!isOwnedPid(st.tgtd.pid, dir, 'tgtd')) problems.push(`tgtd (pid ${st.tgtd.pid}) is not running`);
  const tb = makeTestbed(st, log);
  await Promise.all(
    st.nodes.map(async (n) => {
      if (n.poweredOff) return;
      if (!isOwnedPid(n.pid, dir, 'qemu')) {
        problems.push(`${n.name}: qemu (pid ${n.pid}) is not running`);
        return;
      }
      const r = await tb.ssh(n.name, ['true'], { timeoutMs: 60_000 });
      if (r.exitCode !== 0) problems.push(`${n.name}: ssh failed: ${r.stderr.trim()}`);
    }),
  );
  if (problems.length) throw new Error(`testbed in ${dir} is not healthy:\n  ${problems.join('\n  ')}`);
  return tb;
}

/**
 * Boots one node of the testbed in stateDir again: after powerOff, or after its qemu was
 * killed some other way (attach refuses a testbed with a dead node; this does not).
 */
export async function bootNode(node: string, stateDir?: string, log: (s: string) => void = defaultLog): Promise<void> {
  const dir = resolveStateDir(stateDir);
  const st = await readState(dir);
  if (!st) throw new Error(`no testbed in ${dir} (no state.json): run 'npm run testbed -- up'`);
  await makeTestbed(st, log).boot(node);
}

/** Stops everything the testbed in stateDir started and removes its LUN, disks and state. Idempotent. */
export async function down(stateDir?: string, log: (s: string) => void = defaultLog): Promise<void> {
  const dir = resolveStateDir(stateDir);
  if (!(await exists(dir))) return;
  await cleanup(dir, log);
  // a lock left by a dead `up` is stale
  const lock = path.join(dir, 'lock');
  const pid = Number((await fsp.readFile(lock, 'utf8').catch(() => '')).trim());
  if (pid && !isAlive(pid)) await fsp.rm(lock, { force: true });
}

export interface TestbedStatus {
  stateDir: string;
  exists: boolean;
  state?: Omit<State, 'nodes'> & { nodes: (NodeState & { running: boolean })[] };
  tgtdRunning: boolean;
  strays: Owned[];
}

/** What the state dir says and what is actually running (no ssh). */
export async function status(stateDir?: string): Promise<TestbedStatus> {
  const dir = resolveStateDir(stateDir);
  const st = await readState(dir);
  const owned = (await exists(dir)) ? ownedProcesses(dir, st?.controlDir) : [];
  const known = new Set<number>();
  let tgtdRunning = false;
  if (st?.tgtd.pid && isOwnedPid(st.tgtd.pid, dir, 'tgtd')) {
    tgtdRunning = true;
    known.add(st.tgtd.pid);
  }
  const nodes = (st?.nodes ?? []).map((n) => {
    const running = isOwnedPid(n.pid, dir, 'qemu');
    if (running && n.pid) known.add(n.pid);
    return { ...n, running };
  });
  return {
    stateDir: dir,
    exists: !!st,
    state: st ? { ...st, nodes } : undefined,
    tgtdRunning,
    strays: owned.filter((o) => o.kind !== 'ssh-mux' && !known.has(o.pid)),
  };
}
