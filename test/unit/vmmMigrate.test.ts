/**
 * The VMM migrate action (src/vmm, `cowstack vmm migrate`, vmm/kvm/migrate): its arguments, the
 * VM's cowstack disks found in `virsh domblklist --details`, the order of the hand-over and what
 * each failure says and leaves. virsh and readlink go through the recording runner (the source
 * host's and the destination's); the hand-over steps themselves (core/migrate.ts, tested
 * command by command in migrate.test.ts) are replaced by recorders of who ran what where.
 * The domblklist table is in libvirt 9's format (header, rule, one row per drive, "-" for an
 * empty cdrom); the VM has a context cdrom, an empty cdrom, two cowstack disks, a volatile disk
 * (an LV of the repository VG, not a cowstack device) and a raw host disk.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CowstackError, EXIT, refused } from '../../src/exec/errors.js';
import type { NodeSession } from '../../src/core/node.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { R, W, ctxOf, U } from './repoFixtures.js';
import { recorder, rejectionOf } from './support.js';

const handed = vi.hoisted(() => ({
  calls: [] as Array<{ step: string; node: string; name: string; wait?: number }>,
  fail: undefined as undefined | { step: string; error: Error },
}));
vi.mock('../../src/core/migrate.js', () => {
  const step = (s: 'release' | 'acquire') => async (ctx: NodeSession, name: string, o?: { waitSeconds?: number }) => {
    handed.calls.push({
      step: s,
      node: ctx.node,
      name,
      ...(o?.waitSeconds !== undefined ? { wait: o.waitSeconds } : {}),
    });
    if (handed.fail?.step === s) throw handed.fail.error;
    return { name, vg: ctx.vg, step: s, action: `${s}d` };
  };
  return { releaseMigration: step('release'), acquireMigration: step('acquire') };
});

const { vmmMigrate } = await import('../../src/vmm/migrate.js');
const { parseVmmArgs } = await import('../../src/vmm/args.js');
const { parseMigrateOptions } = await import('../../src/vmm/migrateOptions.js');
const { main } = await import('../../src/cli/main.js');

const URI = 'qemu:///system';
const DIR = '/var/lib/one//datastores/0/42';
const RW0 = `/dev/mapper/cowstack-rw-${U.c3.replace(/-/g, '')}`;
const RW3 = `/dev/mapper/cowstack-rw-${U.c2.replace(/-/g, '')}`;
const DOMBLKLIST = [
  ' Type   Device   Target   Source',
  '------------------------------------------------------------------',
  ` file   disk     vda      ${DIR}/disk.0`,
  ` file   cdrom    hda      ${DIR}/disk.1`,
  ' file   cdrom    hdb      -',
  ` block  disk     vdb      ${DIR}/disk.2`,
  ' block  disk     vdc      /dev/sdb',
  ` file   disk     vdd      ${DIR}/disk.3`,
  '',
].join('\n');
const readlink = (path: string) => ['readlink', '--', path];

/** The source's reads: domblklist, then one readlink per disk drive. */
const sourceReads = (r: RecordingRunner) =>
  r
    .expect(['virsh', '-c', URI, 'domblklist', '--details', 'one-42'], { ...R, stdout: DOMBLKLIST })
    .expect(readlink(`${DIR}/disk.0`), { ...R, stdout: `${RW0}\n` })
    .expect(readlink(`${DIR}/disk.2`), { ...R, stdout: '/dev/mapper/vg-one--42--2\n' })
    .expect(readlink('/dev/sdb'), { ...R, exitCode: 1 })
    .expect(readlink(`${DIR}/disk.3`), { ...R, stdout: `${RW3}\n` });
const MIGRATE = ['virsh', '-c', URI, 'migrate', '--live', '--suspend', 'one-42', 'qemu+ssh://node2/system'];
const RESUME = ['virsh', '-c', URI, 'resume', 'one-42'];

let src: RecordingRunner;
let dst: RecordingRunner;
const info: string[] = [];
const env = (o: { dryRun?: boolean } = {}) => ({
  source: ctxOf(src, o),
  sourceName: 'node1',
  sessionFor: (host: string) => {
    expect(host).toBe('node2');
    return ctxOf(dst);
  },
  locked: <T>(_s: NodeSession, fn: () => Promise<T>) => fn(),
  uri: URI,
  acquireWaitSeconds: 60,
  info: (m: string) => void info.push(m),
});
const REQ = { action: 'migrate' as const, deployId: 'one-42', destHost: 'node2', srcHost: 'node1', vmId: 42 };
const HANDED = [
  { step: 'release', node: 'local', name: 'one-42-0' },
  { step: 'release', node: 'local', name: 'one-42-3' },
  { step: 'acquire', node: 'node2', name: 'one-42-0', wait: 60 },
  { step: 'acquire', node: 'node2', name: 'one-42-3', wait: 60 },
];

beforeEach(() => {
  src = recorder();
  dst = recorder('node2');
  handed.calls.length = 0;
  handed.fail = undefined;
  info.length = 0;
});

describe('vmm migrate: the hand-over in order', () => {
  it('migrates paused, releases every cowstack disk here, acquires each there, resumes there', async () => {
    sourceReads(src).expect(MIGRATE, W);
    dst.expect(RESUME, W);
    const r = await vmmMigrate(env(), REQ);
    expect(r.disks).toEqual([
      { lv: 'one-42-0', target: 'vda', source: `${DIR}/disk.0`, device: RW0 },
      { lv: 'one-42-3', target: 'vdd', source: `${DIR}/disk.3`, device: RW3 },
    ]);
    expect(r.others).toEqual([
      { target: 'hda', source: `${DIR}/disk.1`, why: 'a cdrom, not a disk' },
      { target: 'hdb', why: 'a cdrom, not a disk' },
      { target: 'vdb', source: `${DIR}/disk.2`, why: '/dev/mapper/vg-one--42--2 is not a cowstack writable clone' },
      { target: 'vdc', source: '/dev/sdb', why: 'not a link to a cowstack device' },
    ]);
    expect(handed.calls).toEqual(HANDED);
    expect(r.released).toHaveLength(2);
    expect(r.acquired).toHaveLength(2);
    expect(r.plan.map((s) => [s.host, s.step, s.disk])).toEqual([
      ['node1', 'migrate', undefined],
      ['node1', 'release', 'one-42-0'],
      ['node1', 'release', 'one-42-3'],
      ['node2', 'acquire', 'one-42-0'],
      ['node2', 'acquire', 'one-42-3'],
      ['node2', 'resume', undefined],
    ]);
    src.verify();
    dst.verify();
  });

  it('--dry-run: the reads only, and the plan with the exact commands', async () => {
    sourceReads(src);
    const r = await vmmMigrate(env({ dryRun: true }), REQ);
    expect(r.released).toBeUndefined();
    expect(r.plan[0]!.command).toEqual(MIGRATE);
    expect(r.plan[3]!.command).toEqual(['cowstack', 'clone', 'migrate', 'acquire', 'one-42-0', '--wait', '60']);
    expect(r.plan.at(-1)!.command).toEqual(RESUME);
    expect(handed.calls).toEqual([]);
    expect(src.calls.every((c) => c.kind === 'read')).toBe(true);
    src.verify();
    dst.verify();
  });

  it('a VM without cowstack disks still migrates and resumes (nothing to hand over)', async () => {
    const table = DOMBLKLIST.split('\n').slice(0, 2).concat(' block  disk     vda      /dev/sdb', '').join('\n');
    src
      .expect(['virsh', '-c', URI, 'domblklist', '--details', 'one-42'], { ...R, stdout: table })
      .expect(readlink('/dev/sdb'), { ...R, exitCode: 1 })
      .expect(MIGRATE, W);
    dst.expect(RESUME, W);
    expect((await vmmMigrate(env(), REQ)).disks).toEqual([]);
    expect(handed.calls).toEqual([]);
    src.verify();
    dst.verify();
  });
});

describe("vmm migrate: the site's virsh migrate options (kvmrc MIGRATE_OPTIONS)", () => {
  it('passes them after --live --suspend as argv elements, in the plan too', async () => {
    const opts = ['--p2p', '--tunnelled', '--bandwidth', '100'];
    const migrate = [...MIGRATE.slice(0, 6), ...opts, ...MIGRATE.slice(6)];
    sourceReads(src).expect(migrate, W);
    dst.expect(RESUME, W);
    const r = await vmmMigrate({ ...env(), migrateOptions: opts }, REQ);
    expect(r.plan[0]!.command).toEqual(migrate);
    expect(handed.calls).toEqual(HANDED);
    src.verify();
    dst.verify();
  });

  it.each([
    ['', []],
    ['  ', []],
    ['--unsafe', ['--unsafe']],
    ['--p2p --tunnelled', ['--p2p', '--tunnelled']],
    [
      '--migrateuri=tcp://10.0.2.2:5000  --bandwidth 100',
      ['--migrateuri', 'tcp://10.0.2.2:5000', '--bandwidth', '100'],
    ],
    [
      '--listen-address 0.0.0.0 --parallel --parallel-connections=4',
      ['--listen-address', '0.0.0.0', '--parallel', '--parallel-connections', '4'],
    ],
  ])('parses %j', (text, argv) => {
    expect(parseMigrateOptions(text)).toEqual(argv);
  });

  it.each([
    ['--copy-storage-all', 'copies the disk through qemu'],
    ['--copy-storage-inc', 'copies the disk through qemu'],
    ['--offline', 'no paused destination'],
    ['--suspend', 'cowstack always passes it'],
    ['--desturi=qemu:///x', 'the destination is the host oned names'],
    ['--xml /tmp/evil.xml', 'not an option cowstack passes to virsh migrate'],
    ['; rm -rf /', 'not an option cowstack passes'],
    ['--unsafe=1', 'it takes no value'],
    ['--bandwidth', 'its value is missing'],
    ['--bandwidth fast', 'its value "fast" is not MiB/s'],
    ['--migrateuri tcp://h:1;x', 'is not tcp://HOST[:PORT]'],
    ['--tunnelled', '--tunnelled needs --p2p'],
    ['--p2p --tunnelled --migrateuri tcp://h:1', '--migrateuri has no use with --tunnelled'],
  ])('refuses %j, naming why (exit 2)', (text, message) => {
    let e: unknown;
    try {
      parseMigrateOptions(text);
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(CowstackError);
    expect((e as CowstackError).exitCode).toBe(EXIT.USAGE);
    expect((e as CowstackError).message).toContain(message);
  });

  it('a refused option through the CLI: exit 2 before anything runs', async () => {
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    process.env.COWSTACK_CONFIG = '/dev/null';
    try {
      const argv = [
        'node',
        'cowstack',
        'vmm',
        '--migrate-options=--copy-storage-all',
        '--',
        'migrate',
        'one-42',
        'node2',
      ];
      expect(await main(argv), err).toBe(2);
      expect(err).toContain('migrate option "--copy-storage-all" (MIGRATE_OPTIONS "--copy-storage-all") is refused');
    } finally {
      vi.restoreAllMocks();
      delete process.env.COWSTACK_CONFIG;
    }
    expect(handed.calls).toEqual([]);
  });
});

describe('vmm migrate: failures', () => {
  it('a failed virsh migrate: the VM keeps running here, nothing handed over (exit 1)', async () => {
    sourceReads(src).expect(MIGRATE, { kind: 'write', exitCode: 1, stderr: 'error: operation failed: job aborted' });
    const e = await rejectionOf(vmmMigrate(env(), REQ), EXIT.FAILED);
    expect(e.message).toBe('virsh migrate of one-42 to node2 failed: the VM keeps running on node1');
    expect(e.data).toMatchObject({ cause: 'error: operation failed: job aborted' });
    expect(handed.calls).toEqual([]);
    src.verify();
    dst.verify();
  });

  // After the point of no return: the VM stays paused on node2, is never resumed here, and the
  // error says which command to run where, then the resume.
  it.each([
    {
      step: 'release',
      error: refused('vg/one-42-0 is open on this host', 'stop its user'),
      what: 'release of one-42-0 on node1 failed (vg/one-42-0 is open on this host)',
      todo: 'cowstack clone migrate release one-42-0 (on node1)',
      at: 0,
    },
    {
      step: 'acquire',
      error: new CowstackError(EXIT.LOCK_CONFLICT, 'vg/one-42-0 is locked by another host'),
      what: 'acquire of one-42-0 on node2 failed (vg/one-42-0 is locked by another host)',
      todo: 'cowstack clone migrate acquire one-42-0 --wait 60 (on node2)',
      at: 2,
    },
    {
      step: 'resume',
      what: 'virsh resume on node2 failed (error: Failed to resume domain one-42)',
      todo: 'nothing more for the disks (they are handed over)',
      at: 4,
    },
  ])('a failed $step: paused on the destination, what to run where (exit 1)', async (c) => {
    sourceReads(src).expect(MIGRATE, W);
    if (c.error) handed.fail = { step: c.step, error: c.error };
    else dst.expect(RESUME, { kind: 'write', exitCode: 1, stderr: 'error: Failed to resume domain one-42' });
    const e = await rejectionOf(vmmMigrate(env(), REQ), EXIT.FAILED);
    expect(e.message).toBe(`${c.what}; the VM is paused on node2 and must not be resumed on node1`);
    expect(e.hint).toBe(`fix the cause, then run: ${c.todo}; then virsh resume one-42 on node2`);
    if (c.error) expect(e.data).toMatchObject({ causeExitCode: c.error.exitCode });
    const remaining = (e.data as { remaining: Array<{ step: string }> }).remaining.map((s) => s.step);
    // The failed step (at: its place in the plan after the migration) and all after it.
    expect(remaining).toEqual(['release', 'release', 'acquire', 'acquire', 'resume'].slice(c.at));
    expect(handed.calls).toEqual(HANDED.slice(0, Math.min(c.at + 1, HANDED.length)));
    // No virsh resume on the source: it expects nothing after the migration.
    src.verify();
    dst.verify();
  });

  it('domblklist fails (no such domain): nothing runs', async () => {
    src.expect(['virsh', '-c', URI, 'domblklist', '--details', 'one-42'], {
      ...R,
      exitCode: 1,
      stderr: "error: failed to get domain 'one-42'",
    });
    await rejectionOf(vmmMigrate(env(), REQ), EXIT.FAILED);
    expect(handed.calls).toEqual([]);
    src.verify();
  });
});

describe('vmm arguments: validated, option-shaped values refused as data', () => {
  it('parses DEPLOY_ID DEST_HOST [SRC_HOST VM_ID], ignoring later plain arguments', () => {
    expect(parseVmmArgs('migrate', ['one-42', 'node2'])).toEqual({
      action: 'migrate',
      deployId: 'one-42',
      destHost: 'node2',
    });
    expect(parseVmmArgs('migrate', ['one-42', 'node2', 'node1', '42', 'extra'])).toEqual(REQ);
  });

  it.each([
    [['one-42'], 'takes DEPLOY_ID DEST_HOST'],
    [['one 42', 'node2'], 'deploy id "one 42" is invalid'],
    [['one-42', 'node2;rm'], 'destination host "node2;rm" is invalid'],
    [['one-42', 'node2', 'no/de1'], 'source host "no/de1" is invalid'],
    [['one-42', 'node2', 'node1', '42x'], 'VM id "42x" is invalid'],
  ])('refuses %j (exit 2)', (args, message) => {
    expect(() => parseVmmArgs('migrate', args)).toThrow(message);
  });

  it('refuses an unknown action', () => {
    expect(() => parseVmmArgs('deploy', ['one-42', 'node2'])).toThrow('unknown VMM action "deploy"');
  });

  const HOSTILE = ['--config=evil.yaml', '--dry-run', '--help', '-h', '--json', '--', '-'];
  it.each(HOSTILE)('refuses "%s" in every position, through the CLI, running nothing', async (h) => {
    const args = ['one-42', 'node2', 'node1', '42'];
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    process.env.COWSTACK_CONFIG = '/dev/null';
    try {
      for (let i = 0; i <= args.length; i++) {
        err = '';
        const argv = [...args.slice(0, i), h, ...args.slice(i)];
        expect(await main(['node', 'cowstack', 'vmm', '--', 'migrate', ...argv]), err).toBe(2);
        expect(err).toContain(`ERROR: migrate: vmm migrate: argument ${i + 1} "${h}" looks like an option`);
      }
    } finally {
      vi.restoreAllMocks();
      delete process.env.COWSTACK_CONFIG;
    }
    expect(handed.calls).toEqual([]);
  });
});

describe('vmm/kvm/migrate', () => {
  let dir: string;
  beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), 'cowstack-vmm-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('hands oned arguments to cowstack vmm untouched, after --, with the URI and the wait', () => {
    const bin = join(dir, 'cowstack');
    const log = join(dir, 'argv');
    writeFileSync(bin, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${log}'\n`);
    chmodSync(bin, 0o755);
    const script = new URL('../../vmm/kvm/migrate', import.meta.url).pathname;
    const args = ['one-42', 'node2', '--dry-run', '42'];
    const r = spawnSync(script, args, {
      encoding: 'utf8',
      env: {
        PATH: process.env.PATH!,
        COWSTACK_BIN: bin,
        COWSTACK_ACQUIRE_WAIT: '30',
        MIGRATE_OPTIONS: '--p2p --tunnelled',
      },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(log, 'utf8').split('\n').slice(0, -1)).toEqual([
      'vmm',
      '--uri',
      URI,
      '--migrate-options=--p2p --tunnelled',
      '--acquire-wait',
      '30',
      '--',
      'migrate',
      ...args,
    ]);
  });
});
