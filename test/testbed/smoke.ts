// Smoke test of a running testbed: the guest kernel has the device-mapper targets cowstack
// needs, the guests run Node 20, LVM and targetcli work, and every node can log in to the
// shared LUN through 10.0.2.2 and sees the same bytes.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Testbed } from './testbed.js';

export interface SmokeResult {
  ok: boolean;
  checks: { node: string; check: string; ok: boolean; detail: string }[];
}

export async function runSmoke(
  tb: Testbed,
  opts: { lifecycle?: boolean; log?: (s: string) => void } = {},
): Promise<SmokeResult> {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const checks: SmokeResult['checks'] = [];
  const record = (node: string, check: string, ok: boolean, detail: string) => {
    checks.push({ node, check, ok, detail });
    log(`${ok ? 'ok  ' : 'FAIL'} ${node.padEnd(6)} ${check}: ${detail}`);
  };
  const portal = tb.portal;
  const iqn = tb.targetIqn;
  const byPath = `/dev/disk/by-path/ip-${portal}-iscsi-${iqn}-lun-1`;

  // per-node checks, nodes in parallel
  await Promise.all(
    tb.nodes.map(async (n) => {
      const t = await tb.ssh(n.name, ['dmsetup', 'targets']);
      const targets = t.stdout.split('\n').map((l) => l.split(/\s+/)[0]);
      const missing = ['snapshot', 'cache', 'writecache'].filter((x) => !targets.includes(x));
      record(
        n.name,
        'dmsetup targets',
        t.exitCode === 0 && missing.length === 0,
        missing.length ? `missing ${missing.join(',')}` : 'snapshot cache writecache',
      );

      const v = await tb.ssh(n.name, ['node', '--version']);
      record(
        n.name,
        'node --version',
        v.exitCode === 0 && v.stdout.startsWith('v20'),
        v.stdout.trim() || v.stderr.trim(),
      );

      const l = await tb.ssh(n.name, ['lvm', 'version']);
      record(
        n.name,
        'lvm version',
        l.exitCode === 0,
        (/LVM version:\s*(\S+)/.exec(l.stdout)?.[1] ?? l.stderr.trim()) || '?',
      );

      const tc = await tb.ssh(n.name, ['targetcli', 'ls'], { timeoutMs: 120_000 });
      record(
        n.name,
        'targetcli ls',
        tc.exitCode === 0 && tc.stdout.includes('backstores'),
        tc.exitCode === 0 ? 'works (dbus up)' : tc.stderr.trim(),
      );

      const i = await tb.ssh(n.name, ['cat', '/etc/iscsi/initiatorname.iscsi']);
      record(n.name, 'initiator IQN', i.stdout.trim() === `InitiatorName=${n.initiatorIqn}`, i.stdout.trim());

      const d = await tb.ssh(n.name, ['blockdev', '--getsize64', n.localDisk]);
      record(
        n.name,
        `local disk ${n.localDisk}`,
        d.exitCode === 0 && Number(d.stdout) === 2 * 2 ** 30,
        `${d.stdout.trim()} bytes`,
      );
    }),
  );

  // iSCSI: both nodes log in at the same time
  await Promise.all(
    tb.nodes.map(async (n) => {
      const r = await tb.sh(
        n.name,
        `set -e
iscsiadm -m node -o new -T ${iqn} -p ${portal} >/dev/null
iscsiadm -m node -T ${iqn} -p ${portal} --login >/dev/null
for i in $(seq 60); do [ -e '${byPath}' ] && break; sleep 0.5; done
udevadm settle
blockdev --getsize64 '${byPath}'`,
        { timeoutMs: 120_000 },
      );
      record(
        n.name,
        'iscsi login',
        r.exitCode === 0,
        r.exitCode === 0 ? `${byPath} (${r.stdout.trim()} bytes)` : r.stderr.trim(),
      );
    }),
  );

  // same bytes everywhere: the first node writes (O_DIRECT), all nodes read back (O_DIRECT)
  const first = tb.nodes[0]!;
  const w = await tb.sh(
    first.name,
    `set -e
dd if=/dev/urandom of=/tmp/smoke.bin bs=1M count=1 status=none
dd if=/tmp/smoke.bin of='${byPath}' bs=1M oflag=direct conv=fsync status=none
sha256sum </tmp/smoke.bin | cut -d' ' -f1`,
  );
  const want = w.stdout.trim();
  record(
    first.name,
    'write 1 MiB to LUN',
    w.exitCode === 0 && want.length === 64,
    w.exitCode === 0 ? want.slice(0, 16) : w.stderr.trim(),
  );
  await Promise.all(
    tb.nodes.map(async (n) => {
      const r = await tb.sh(
        n.name,
        `dd if='${byPath}' bs=1M count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1`,
      );
      record(n.name, 'read back from LUN', r.stdout.trim() === want, r.stdout.trim().slice(0, 16) || r.stderr.trim());
    }),
  );

  // leave the nodes as the product expects them: no session, no node record
  await Promise.all(
    tb.nodes.map(async (n) => {
      const r = await tb.sh(
        n.name,
        `set -e
dd if=/dev/zero of='${byPath}' bs=1M count=1 oflag=direct status=none || true
iscsiadm -m node -T ${iqn} -p ${portal} --logout >/dev/null
iscsiadm -m node -o delete -T ${iqn} -p ${portal}
! iscsiadm -m session >/dev/null 2>&1`,
        { timeoutMs: 120_000 },
      );
      record(n.name, 'iscsi logout', r.exitCode === 0, r.exitCode === 0 ? 'no sessions left' : r.stderr.trim());
    }),
  );

  await apiChecks(tb, record);
  if (opts.lifecycle) await lifecycleChecks(tb, record);
  return { ok: checks.every((c) => c.ok), checks };
}

type Record_ = (node: string, check: string, ok: boolean, detail: string) => void;

/** The Testbed API itself: argv quoting, stdin, exit codes, timeouts, copyTo. */
async function apiChecks(tb: Testbed, record: Record_): Promise<void> {
  const n = tb.nodes[0]!.name;
  const q = await tb.ssh(n, ['printf', '%s|', "it's", 'a b', '$HOME', '"x"', '*', '']);
  record(n, 'api: argv quoting', q.stdout === `it's|a b|$HOME|"x"|*||`, JSON.stringify(q.stdout));
  const i = await tb.ssh(n, ['wc', '-c'], { input: Buffer.alloc(12345, 1) });
  record(n, 'api: stdin input', i.stdout.trim() === '12345', i.stdout.trim());
  const e = await tb.sh(n, 'echo oops >&2; exit 7');
  record(n, 'api: exit code', e.exitCode === 7 && e.stderr.includes('oops'), `exit ${e.exitCode}`);
  const t0 = Date.now();
  const t = await tb.ssh(n, ['sleep', '20'], { timeoutMs: 1500 });
  const ms = Date.now() - t0;
  record(
    n,
    'api: timeout',
    t.exitCode === 124 && t.timedOut === true && ms < 10_000,
    `exit ${t.exitCode} after ${ms} ms`,
  );
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cowstack-testbed-'));
  try {
    const f = path.join(dir, 'probe.sh');
    await writeFile(f, '#!/bin/sh\necho copied\n', { mode: 0o755 });
    await tb.copyTo(n, f, '/tmp/probe dir.sh');
    const c = await tb.ssh(n, ['/tmp/probe dir.sh']);
    record(n, 'api: copyTo keeps content and mode', c.stdout.trim() === 'copied', c.stdout.trim() || c.stderr.trim());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Crash and reboot of the last node: its local disk keeps every completed write. */
async function lifecycleChecks(tb: Testbed, record: Record_): Promise<void> {
  const n = tb.nodes[tb.nodes.length - 1]!;
  const w = await tb.sh(
    n.name,
    `dd if=/dev/urandom of=${n.localDisk} bs=1M count=2 oflag=direct status=none && dd if=${n.localDisk} bs=1M ` +
      'count=2 iflag=direct status=none | sha256sum',
  );
  await tb.powerOff(n.name);
  record(n.name, 'powerOff', !tb.isRunning(n.name), 'qemu killed');
  const t0 = Date.now();
  await tb.boot(n.name);
  record(n.name, 'boot', tb.isRunning(n.name), `ssh after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const r = await tb.sh(n.name, `dd if=${n.localDisk} bs=1M count=2 iflag=direct status=none | sha256sum`);
  record(n.name, 'local disk survives a crash', w.exitCode === 0 && r.stdout === w.stdout, r.stdout.slice(0, 16));
}
