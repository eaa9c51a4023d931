/**
 * cowstack on the node itself, and operations racing on one node (issue 10 items 3 and 4).
 *
 * - The COW lifecycle (import, create, map, write, commit, clone of the commit, unmap,
 *   discard) with the single-file bundle on the node (no ssh: a child's stdin from Node is a
 *   socket, which `install ... /proc/self/fd/0` could not reopen), as root and as the service
 *   user through sudoers/cowstack. Data checked by sha256 against content computed here. The
 *   same lifecycle from the host with --host (ssh: a child's stdin is a pipe) is what every
 *   other integration file runs (clones.test.ts), so it is not run a third time here.
 * - Commands started at the same instant on one node (Promise.all): maps of sibling clones,
 *   the same clone mapped twice, unmap A racing map B. All succeed (the node lock serializes
 *   them), the data is intact, and nothing leaks (devices, journal entries).
 */
import { execa } from 'execa';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { cowstack, ROOT, type CliResult } from './cli.js';
import { REPO_VG } from './cluster.js';
import { sshConfigVariant } from './sshConfigVariant.js';
import { inFlight } from '../../src/core/journal.js';
import { deviceSha, MiB, overlay, pattern, sha256, writeAt } from './data.js';

let tb: Testbed;
let userSsh: string;
let work: string;
const USER = 'oneadmin';
const BUNDLE = '/usr/local/lib/cowstack.mjs';
const run = Date.now().toString(36).slice(-5);
const n = (s: string) => `nl-${s}-${run}`;
const N1 = 'node1';

type Mode = 'host' | 'root' | 'user';
/** The same shape as the host-side wrapper's result, whichever way the command ran. */
type Out = CliResult;

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

interface CliOpts {
  input?: Buffer;
  env?: Record<string, string>;
}

/** cowstack ARGS --vg repo on NODE: from the host over ssh, or the bundle on the node as root or the service user. */
async function cli(mode: Mode, node: string, args: string[], opts: CliOpts = {}): Promise<Out> {
  const full = ['--json', ...args, ...(['activate', 'deactivate'].includes(args[0]!) ? [] : ['--vg', REPO_VG])];
  if (mode === 'host') {
    if (opts.input) throw new Error('host mode: pass a file');
    return cowstack(tb, ['--host', node, ...full], { env: opts.env });
  }
  const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const remote = ['env', ...env, 'node', BUNDLE, ...full].map(quote).join(' ');
  const ssh = mode === 'root' ? ['-F', tb.sshConfig] : ['-F', userSsh];
  const r = await execa('ssh', [...ssh, node, '--', remote], { reject: false, input: opts.input, timeout: 600_000 });
  const stdout = String(r.stdout);
  let json: Out['json'];
  try {
    json = stdout.trim() ? JSON.parse(stdout) : undefined;
  } catch {
    throw new Error(`${mode}@${node}: cowstack ${args.join(' ')} printed non-JSON:\n${stdout}\n${r.stderr}`);
  }
  return { exitCode: r.exitCode ?? -1, stdout, stderr: String(r.stderr), json };
}

const ok = async (mode: Mode, node: string, args: string[], opts: { input?: Buffer } = {}) => {
  const r = await cli(mode, node, args, opts);
  expect(r.exitCode, `${mode}@${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.json.result;
};

/**
 * What cowstack left on a node: any of its devices (nothing else on this cluster maps while
 * this file runs), these LVs still active, and journal entries of any operation.
 */
async function leftovers(node: string, names: string[]): Promise<string[]> {
  const dm = await tb.ssh(node, ['dmsetup', 'info', '-c', '--noheadings', '-o', 'name,uuid']);
  const devices = dm.stdout.split('\n').filter((l) => l.includes('COWSTACK-'));
  const lvs = await tb.ssh(node, ['lvs', '--noheadings', '-o', 'lv_name,lv_active', REPO_VG]);
  const rows = lvs.stdout.split('\n').map((l) => l.trim());
  const active = rows.filter((l) => names.includes(l.split(/\s+/)[0]!) && /active/.test(l));
  // Entries in flight: files of their own, or begun and not ended in a VG's log.
  const files = await tb.ssh(node, ['ls', '-1', '-A', '/var/lib/cowstack/journal']);
  const entries = files.stdout.split('\n').filter((f) => f.endsWith('.json'));
  const log = await tb.ssh(node, ['cat', `/var/lib/cowstack/journal/${REPO_VG}.log`]);
  const open = inFlight(REPO_VG, log.stdout).map((e) => `${e.op} ${e.name} (log)`);
  return [...devices, ...active, ...entries, ...open];
}

beforeAll(async () => {
  tb = await attachMine();
  work = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-nl-'));
  for (const node of tb.nodes) {
    await tb.copyTo(node.name, path.join(ROOT, 'dist/cowstack.mjs'), BUNDLE);
    const r = await tb.sh(
      node.name,
      `chmod 0644 ${BUNDLE}
       id ${USER} >/dev/null 2>&1 || useradd -m -s /bin/bash ${USER}
       install -d -m 0700 -o ${USER} -g ${USER} /home/${USER}/.ssh
       install -m 0600 -o ${USER} -g ${USER} /root/.ssh/authorized_keys /home/${USER}/.ssh/authorized_keys`,
    );
    expect(r.exitCode, r.stderr).toBe(0);
    // sudoers/cowstack of this tree (with the node lock's rules), the udev rule and the config.
    const install = ['install', '--node', '--user', USER, '--vg', REPO_VG];
    await cowstack(tb, ['--host', node.name, '--json', ...install], { check: true });
  }
  userSsh = await sshConfigVariant(
    tb,
    { User: () => USER, ControlPath: (old) => old.replace(/cm-%n$/, `cm-nl-${USER}-%n`) },
    { file: path.join(work, 'ssh_config') },
  );
}, 300_000);

describe('the COW lifecycle on the node itself', () => {
  const BASE = pattern(4 * MiB, 301);
  const title = {
    root: 'with the bundle on the node as root',
    user: `with the bundle on the node as ${USER} through sudo`,
  };
  for (const [i, mode] of (['root', 'user'] as const).entries()) {
    it(
      title[mode],
      async () => {
        const img = n(`img${i}`);
        const a = n(`a${i}`);
        const b = n(`b${i}`);
        const w1 = pattern(1 * MiB, 310 + i);
        const w2 = pattern(1 * MiB, 320 + i);
        // Import is journalled: on the node it reads the image from its own stdin.
        const imported = await ok(mode, N1, ['image', 'import', img, '-'], { input: BASE });
        expect(imported.sha256).toBe(sha256(BASE));
        expect((await ok(mode, N1, ['clone', 'create', a, '--from', img, '--cow-size', '8M'])).action).toBe('created');
        const ma = await ok(mode, N1, ['clone', 'map', a]);
        expect(ma.mode).toBe('rw');
        await writeAt(tb, N1, ma.device, 1, w1);
        const afterA = overlay(BASE, 1 * MiB, w1);
        expect(await deviceSha(tb, N1, ma.device)).toBe(sha256(afterA));
        expect((await ok(mode, N1, ['clone', 'commit', a])).action).toBe('committed');
        // A clone of the commit, written, read back whole.
        expect((await ok(mode, N1, ['clone', 'create', b, '--from', a, '--cow-size', '8M'])).action).toBe('created');
        const mb = await ok(mode, N1, ['clone', 'map', b]);
        await writeAt(tb, N1, mb.device, 2, w2);
        expect(await deviceSha(tb, N1, mb.device)).toBe(sha256(overlay(afterA, 2 * MiB, w2)));
        expect((await ok(mode, N1, ['clone', 'unmap', b])).action).toBe('unmapped');
        // The committed parent still reads as committed, read-only.
        const ra = await ok(mode, N1, ['clone', 'map', a]);
        expect(ra.mode).toBe('ro');
        expect(await deviceSha(tb, N1, ra.device)).toBe(sha256(afterA));
        expect((await ok(mode, N1, ['clone', 'unmap', a])).action).toBe('unmapped');
        expect(await leftovers(N1, [img, a, b]), 'after the last unmap').toEqual([]);
        await ok(mode, N1, ['clone', 'discard', b]);
        await ok(mode, N1, ['clone', 'rm', a]);
        await ok(mode, N1, ['image', 'rm', img]);
        expect(await leftovers(N1, [img, a, b])).toEqual([]);
      },
      1_200_000,
    );
  }
});

describe('concurrent operations on one node are serialized', () => {
  const BASE = pattern(4 * MiB, 401);
  const img = n('rimg');
  const parent = n('rp');
  const [s1, s2] = [n('rs1'), n('rs2')];
  const pw = pattern(1 * MiB, 402);
  const parentData = overlay(BASE, 0, pw);
  const data: Record<string, Buffer> = {};

  const both = async (mode: Mode, x: string[], y: string[]) => {
    const [rx, ry] = await Promise.all([cli(mode, N1, x), cli(mode, N1, y)]);
    return [rx, ry] as const;
  };
  const succeeded = (r: Out, what: string) => expect(r.exitCode, `${what}\n${r.stdout}\n${r.stderr}`).toBe(0);
  const check = async (name: string, device: string) =>
    expect(await deviceSha(tb, N1, device), `${name} content`).toBe(sha256(data[name]!));

  it('sets up a committed parent with two live siblings', async () => {
    const file = path.join(work, 'rbase.raw');
    await fsp.writeFile(file, BASE);
    await ok('host', N1, ['image', 'import', img, file]);
    await ok('host', N1, ['clone', 'create', parent, '--from', img, '--cow-size', '8M']);
    const m = await ok('host', N1, ['clone', 'map', parent]);
    await writeAt(tb, N1, m.device, 0, pw);
    await ok('host', N1, ['clone', 'commit', parent]);
    for (const [i, s] of [s1, s2].entries()) {
      await ok('host', N1, ['clone', 'create', s, '--from', parent, '--cow-size', '8M']);
      // Each sibling gets its own write, so a mix-up of their devices shows in the checksums.
      const ms = await ok('host', N1, ['clone', 'map', s]);
      const w = pattern(1 * MiB, 410 + i);
      await writeAt(tb, N1, ms.device, 2, w);
      data[s] = overlay(parentData, 2 * MiB, w);
      await ok('host', N1, ['clone', 'unmap', s]);
    }
  });

  // Two rounds: the old code failed in the first one every time (see the issue's note).
  for (const [round, mode] of (['host', 'root'] as const).entries()) {
    const how = mode === 'host' ? '--host' : 'bundle on the node';
    it(`round ${round + 1} (${how}): siblings, the same clone twice, unmap A racing map B`, async () => {
      // Two maps of sibling clones of one committed parent: both succeed.
      const [a, b] = await both(mode, ['clone', 'map', s1], ['clone', 'map', s2]);
      succeeded(a, `map ${s1}`);
      succeeded(b, `map ${s2}`);
      await check(s1, a.json.result.device);
      await check(s2, b.json.result.device);
      // unmap A racing map B (B unmapped first): both succeed, B reads its data.
      await ok(mode, N1, ['clone', 'unmap', s2]);
      const [ua, mb] = await both(mode, ['clone', 'unmap', s1], ['clone', 'map', s2]);
      succeeded(ua, `unmap ${s1}`);
      succeeded(mb, `map ${s2}`);
      await check(s2, mb.json.result.device);
      // The same clone mapped twice at once: one maps, the other finds it mapped (or refuses clearly).
      const [m1, m2] = await both(mode, ['clone', 'map', s1], ['clone', 'map', s1]);
      for (const r of [m1, m2]) {
        if (r.exitCode !== 0) expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(6);
      }
      const winner = [m1, m2].find((r) => r.exitCode === 0);
      expect(winner, `${m1.stderr}\n${m2.stderr}`).toBeDefined();
      await check(s1, winner!.json.result.device);
      await ok(mode, N1, ['clone', 'unmap', s1]);
      await ok(mode, N1, ['clone', 'unmap', s2]);
      const status = await ok(mode, N1, ['status']);
      expect(JSON.stringify(status)).not.toContain(s1);
    });
  }

  it('a command that cannot get the lock in time says so (exit 5); status and --dry-run do not wait', async () => {
    // Hold the lock from outside (as a hung operation would) for longer than everything below.
    const lock = `/var/lib/cowstack/journal/${REPO_VG}.lock`;
    const holder = tb.ssh(N1, ['timeout', '60', 'flock', lock, 'sleep', '45']);
    await new Promise((r) => setTimeout(r, 2000));
    const started = Date.now();
    const r = await cli('host', N1, ['clone', 'map', s1], { env: { COWSTACK_LOCK_WAIT: '2' } });
    expect(r.exitCode, r.stderr).toBe(5);
    expect(r.json?.message).toContain(`another cowstack operation holds the node lock of VG ${REPO_VG} on ${N1}`);
    // Read-only commands and --dry-run never take the lock (with the default 120 s wait they would hang here).
    expect((await cli('host', N1, ['status'])).exitCode).toBe(0);
    const dry = await cli('host', N1, ['--dry-run', 'clone', 'map', s1]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(Date.now() - started, 'all of it while the lock was held').toBeLessThan(40_000);
    // Let the lock go now rather than wait out the holder's 45 s.
    await tb.ssh(N1, ['pkill', '-f', '^sleep 45$']);
    await holder;
  });

  it('leaves no devices, journal entries or LVs behind', async () => {
    await ok('host', N1, ['clone', 'rm', s1]);
    await ok('host', N1, ['clone', 'rm', s2]);
    await ok('host', N1, ['clone', 'rm', parent]);
    await ok('host', N1, ['image', 'rm', img]);
    expect(await leftovers(N1, [img, parent, s1, s2])).toEqual([]);
  });
});
