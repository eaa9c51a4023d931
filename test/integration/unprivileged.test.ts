/**
 * Least privilege, for real: `cowstack install --node` puts sudoers/cowstack and the udev
 * rule on both nodes, then the whole COW lifecycle runs as the unprivileged service user
 * (oneadmin) over ssh, with cowstack prefixing `sudo -n` to exactly what needs root. The
 * VM disk it maps is owned by oneadmin (the udev rule), who writes it without root.
 */
import { execa } from 'execa';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { InstalledFile } from '../../src/core/install.js';
import type { Check } from '../../src/core/doctor.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { CLI, cowstack } from './cli.js';
import { REPO_VG } from './cluster.js';
import { MiB, overlay, pattern, sha256 } from './data.js';

let tb: Testbed;
let userSsh: string;
const USER = 'oneadmin';
const run = Date.now().toString(36).slice(-5);
const IMG = `up-img-${run}`;
const CLONE = `up-vm-${run}`;
const BASE = pattern(8 * MiB, 91);
const WRITE = pattern(2 * MiB, 92);

/** cowstack on the host, reaching NODE as oneadmin (its own ssh config and control master). */
const asUser = (node: string, args: string[], input?: string | Buffer) =>
  execa('node', [CLI, '--host', node, '--json', ...args], {
    reject: false,
    input,
    env: { COWSTACK_SSH_CONFIG: userSsh, COWSTACK_CONFIG: '/dev/null', NO_COLOR: '1' },
    timeout: 600_000,
  });
const ok = async (node: string, args: string[], input?: string | Buffer) => {
  const r = await asUser(node, args, input);
  expect(r.exitCode, `${USER}@${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return JSON.parse(String(r.stdout)).result;
};
/** A command run on the node as oneadmin (not through cowstack). */
const userSh = (node: string, argv: string[], input?: Buffer) =>
  execa('ssh', ['-F', userSsh, node, '--', ...argv], { reject: false, input });

beforeAll(async () => {
  tb = await attachMine();
  for (const n of tb.nodes) {
    const r = await tb.sh(
      n.name,
      `id ${USER} >/dev/null 2>&1 || useradd -m -s /bin/bash ${USER}
       install -d -m 0700 -o ${USER} -g ${USER} /home/${USER}/.ssh
       install -m 0600 -o ${USER} -g ${USER} /root/.ssh/authorized_keys /home/${USER}/.ssh/authorized_keys`,
    );
    expect(r.exitCode, r.stderr).toBe(0);
  }
  // The testbed's ssh config with the service user and separate control sockets.
  const text = await fsp.readFile(tb.sshConfig, 'utf8');
  userSsh = path.join(await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-user-')), 'ssh_config');
  await fsp.writeFile(userSsh, text.replace(/User root/g, `User ${USER}`).replace(/cm-%n/g, `cm-${USER}-%n`));
}, 120_000);

describe(`the service user (${USER}) with only sudoers/cowstack`, () => {
  const installNodeIdempotent =
    'cowstack install --node puts a visudo-checked sudoers, the udev rule and a config in place; ' +
    'a re-run changes nothing';
  it(installNodeIdempotent, async () => {
    for (const n of tb.nodes) {
      const first = await cowstack(
        tb,
        ['--host', n.name, '--json', 'install', '--node', '--user', USER, '--vg', REPO_VG],
        { check: true },
      );
      expect(first.json.result.files.map((f: InstalledFile) => f.path)).toEqual([
        '/etc/sudoers.d/cowstack',
        '/etc/udev/rules.d/99-cowstack.rules',
        '/var/lib/cowstack/journal',
        '/etc/cowstack/cowstack.yaml',
      ]);
      // The journal directory and every log in it carry the synchronous-update attribute.
      const attrs = await tb.ssh(n.name, ['lsattr', '-a', '--', '/var/lib/cowstack/journal']);
      expect(attrs.exitCode, attrs.stderr).toBe(0);
      for (const line of attrs.stdout
        .trim()
        .split('\n')
        .filter((l) => !l.endsWith('/..')))
        expect(line.split(/\s+/)[0], line).toContain('S');
      const again = await cowstack(
        tb,
        ['--host', n.name, '--json', 'install', '--node', '--user', USER, '--vg', REPO_VG],
        { check: true },
      );
      expect(again.json.result.files.map((f: InstalledFile) => f.action)).toEqual([
        'unchanged',
        'unchanged',
        'unchanged',
        'kept',
      ]);
      const mode = await tb.ssh(n.name, ['stat', '-c', '%a %U', '/etc/sudoers.d/cowstack']);
      expect(mode.stdout.trim()).toBe('440 root');
      // As the service user, install is refused: it is root's job.
      const refused = await asUser(n.name, ['install', '--node']);
      expect(refused.exitCode).toBe(6);
    }
  });

  const sudoLifecycle =
    'runs the COW lifecycle through sudo -n: import, clone, map, write as the user, commit, read on the other node';
  it(sudoLifecycle, async () => {
    const [n1, n2] = [tb.nodes[0]!.name, tb.nodes[1]!.name];
    const who = await userSh(n1, ['id', '-un']);
    expect(String(who.stdout).trim()).toBe(USER);
    const doctor = await asUser(n1, ['doctor', '--vg', REPO_VG]);
    expect(doctor.exitCode, String(doctor.stdout)).toBe(0);
    // Read through sudo's lsattr rule: the journal install --node made synchronous.
    const journal = (JSON.parse(String(doctor.stdout)).result.checks as Check[]).find(
      (c) => c.id === 'journal:synchronous',
    );
    expect(journal?.status, journal?.message).toBe('ok');

    const imported = await ok(n1, ['image', 'import', IMG, '-', '--vg', REPO_VG], BASE);
    expect(imported.sha256).toBe(sha256(BASE));
    expect((await ok(n2, ['clone', 'create', CLONE, '--from', IMG, '--cow-size', '8M', '--vg', REPO_VG])).action).toBe(
      'created',
    );
    const m = await ok(n1, ['clone', 'map', CLONE, '--vg', REPO_VG]);
    expect(m.mode).toBe('rw');

    // The VM's disk belongs to the hypervisor user (udev rule), who writes it without root.
    const owner = await tb.ssh(n1, ['stat', '-L', '-c', '%U:%G %a', m.device]);
    expect(owner.stdout.trim()).toBe(`${USER}:disk 660`);
    const w = await userSh(
      n1,
      [
        'dd',
        `of=${m.device}`,
        'bs=1M',
        'seek=3',
        'iflag=fullblock',
        'oflag=direct',
        'conv=fsync,notrunc',
        'status=none',
      ],
      WRITE,
    );
    expect(w.exitCode, String(w.stderr)).toBe(0);
    // ...but not the image underneath.
    const img = await userSh(n1, [
      'dd',
      'if=/dev/zero',
      `of=/dev/mapper/${REPO_VG}-${IMG.replace(/-/g, '--')}`,
      'bs=4096',
      'count=1',
      'status=none',
    ]);
    expect(img.exitCode, 'the image LV stays root-only').not.toBe(0);

    expect((await ok(n1, ['clone', 'commit', CLONE, '--vg', REPO_VG])).action).toBe('committed');
    const ro = await ok(n2, ['clone', 'map', CLONE, '--vg', REPO_VG]);
    expect(ro.mode).toBe('ro');
    const sum = await tb.ssh(n2, ['sha256sum', ro.device]);
    expect(sum.stdout.split(/\s+/)[0]).toBe(sha256(overlay(BASE, 3 * MiB, WRITE)));
    expect((await ok(n2, ['clone', 'unmap', CLONE, '--vg', REPO_VG])).action).toBe('unmapped');
    expect((await ok(n1, ['clone', 'rm', CLONE, '--vg', REPO_VG])).action).not.toBe('none');
    await ok(n1, ['image', 'rm', IMG, '--vg', REPO_VG]);
  });
});
