/**
 * Backups through the OpenNebula TM driver on the real-kernel testbed: a clone's disk backed
 * up in incremental mode (the chain's full backup, then two increments, as oned's
 * prebackup calls with the VM XML on stdin), the files carried to this host (the backup
 * datastore's part) and restored on the other node: through the TM restore action into a
 * new VM (offline describe), with `cowstack backup restore` at each point (live describe).
 * Every restored disk's or image's sha256 equals the content computed here from what was
 * written; each increment holds only the clusters that changed (qemu-img map, read on the node).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';
import { clusterCli } from './cli.js';
import { chainLevels, REPO_VG } from './cluster.js';
import { MiB, deviceSha, overlay, pattern, sha256, writeAt } from './data.js';
import { DS, FE, tmWithImage, type TmHarness } from './tm-harness.js';
import { hmp, installQmpClient, qmp, startQemu, stopQemu } from './qemuVm.js';

let tb: Testbed;
let tm: TmHarness;
const run = Date.now().toString(36).slice(-5);
const IMG = pattern(16 * MiB, 71);
const img = `bkimg-${run}`;
const VM = 300 + (parseInt(run, 36) % 200);
const SYS = 0;
const IDS = 1;
const KiB = 1024;
const CLUSTER = 64 * KiB;
const vmDir = `/var/lib/one/datastores/${SYS}/${VM}`;
const disk = `${vmDir}/disk.0`;
const bkDir = `${vmDir}/backup`;
const carried = `/var/tmp/bk-${run}`;
const tmArgs = [`node1:${DS}/${SYS}/${VM}`, '0', `one-${VM}`, '-', String(VM), String(SYS)];

/** The VM XML oned's VMM driver gives prebackup on stdin (only what the driver reads, and some noise). */
const vmXml = (mode: 'FULL' | 'INCREMENT', last: number) =>
  `<VM><ID>${VM}</ID><TEMPLATE><GRAPHICS><MODE>vnc</MODE></GRAPHICS></TEMPLATE>` +
  `<BACKUPS><BACKUP_CONFIG><MODE>${mode}</MODE><LAST_INCREMENT_ID>${last}</LAST_INCREMENT_ID>` +
  `</BACKUP_CONFIG><BACKUP_IDS/></BACKUPS></VM>`;

const ssh = async (node: string, argv: string[]) => {
  const r = await tb.ssh(node, argv, { timeoutMs: 300_000 });
  expect(r.exitCode, `${argv.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
};
/** Bytes of the file's own data clusters, as qemu-img reads them on the node. */
const dataBytes = async (file: string) =>
  (
    JSON.parse(await ssh('node1', ['qemu-img', 'map', '--output=json', '-f', 'qcow2', file])) as Array<{
      length: number;
      data: boolean;
    }>
  )
    .filter((r) => r.data)
    .reduce((n, r) => n + r.length, 0);

/**
 * The backup datastore's part and OpenNebula's restore: the files carried from node1 to node2
 * (through this host), then each point's chain (full + increments up to it) restored there into
 * image `<prefix><N>-<run>`, whose sha256 (computed on node2) must be the content at point N.
 */
/** Backup files `<dir>/disk.0.<n>` (n < count) of node1 copied to this host, to `local(n)`. */
async function fetchBackups(dir: string, count: number, local: (n: number) => string, from = 0): Promise<void> {
  for (let n = from; n < count; n++) {
    const b64 = await ssh('node1', ['base64', '-w0', `${dir}/disk.0.${n}`]);
    await fsp.mkdir(path.dirname(local(n)), { recursive: true });
    await fsp.writeFile(local(n), Buffer.from(b64, 'base64'));
  }
}

/**
 * Restore on node2 the chains up to each of `points` (default: every point); the files before
 * `carriedFrom` are on node2 already (an earlier restore carried them).
 */
async function restoreEach(
  dir: string,
  prefix: string,
  contents: Buffer[],
  points = contents.map((_, n) => n),
  carriedFrom = 0,
) {
  await ssh('node2', ['mkdir', '-p', dir]);
  const ns = contents.map((_, n) => n);
  const local = (n: number) => path.join(tm.dir, `${prefix}.disk.0.${n}`);
  await fetchBackups(dir, ns.length, local, carriedFrom);
  for (const n of ns.slice(carriedFrom)) await tb.copyTo('node2', local(n), `${dir}/disk.0.${n}`);
  for (const n of points) {
    const files = ns.slice(0, n + 1).map((k) => `${dir}/disk.0.${k}`);
    const r = await clusterCli(tb, 'node2', ['backup', 'restore', `${prefix}${n}-${run}`, ...files]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).result.sha256, `${prefix}: restored at point ${n}`).toBe(sha256(contents[n]!));
  }
}

beforeAll(async () => {
  ({ tb, tm } = await tmWithImage(img, IMG));
  await installQmpClient(tb);
});

describe.sequential('backups: full + two increments on node1, restored on node2', () => {
  // Point 0: 1 MiB at 2 MiB. Point 1: two 4 KiB writes and a 64 KiB range zeroed (3
  // clusters). Point 2: 8 KiB rewritten inside point 0's range, 4 KiB at 15 MiB (2 clusters).
  const c0 = overlay(IMG, 2 * MiB, pattern(MiB, 72));
  const c1 = overlay(
    overlay(overlay(c0, 5 * MiB, pattern(4 * KiB, 73)), 9 * MiB, pattern(4 * KiB, 74)),
    12 * MiB,
    Buffer.alloc(CLUSTER),
  );
  const c2 = overlay(overlay(c1, 2 * MiB, pattern(8 * KiB, 75)), 15 * MiB, pattern(4 * KiB, 76));
  const contents = [c0, c1, c2];
  const started = Date.now();
  const times: Record<string, number> = {};
  const timed = async (name: string, p: Promise<{ seconds: number; stderr: string }>) => {
    const r = await p;
    times[name] = r.seconds;
    return r;
  };

  it('deploy, write, back up (the chain full, then increments 1 and 2)', async () => {
    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, `node1:${DS}/${SYS}/${VM}/disk.0`, String(VM), String(IDS)]);
    await writeAt(tb, 'node1', disk, 2, pattern(MiB, 72));
    await timed('prebackup 0', tm.ok('prebackup', tmArgs, vmXml('INCREMENT', -1)));
    await ssh('node1', ['mkdir', '-p', carried]);
    const keep = async (n: number) =>
      ssh('node1', ['cp', '--sparse=always', `${bkDir}/disk.0.${n}`, `${carried}/disk.0.${n}`]);
    await keep(0);
    expect(Buffer.from(await ssh('node1', ['cat', `${bkDir}/vm.xml`]), 'base64').toString()).toBe(
      vmXml('INCREMENT', -1),
    );
    await tm.ok('postbackup', tmArgs, vmXml('INCREMENT', -1));
    expect((await tb.ssh('node1', ['test', '-e', bkDir])).exitCode).toBe(1);
    // The disk kept its content and is linked to its new top, on backup point 0.
    expect(await ssh('node1', ['sha256sum', disk])).toMatch(sha256(c0));
    expect(
      await ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_tags', `${REPO_VG}/one-${VM}-0-b0`]),
    ).toContain('cowstack_state:committed');

    await writeAt(tb, 'node1', disk, 5, pattern(4 * KiB, 73));
    await writeAt(tb, 'node1', disk, 9, pattern(4 * KiB, 74));
    await writeAt(tb, 'node1', disk, 12, Buffer.alloc(CLUSTER));
    const inc1 = await timed('prebackup 1', tm.ok('prebackup', tmArgs, vmXml('INCREMENT', 0)));
    expect(inc1.stderr).toMatch(/increment 1 \(3 changed range\(s\)\) of 196608 bytes/);
    // Each point is a chain level: image <- b0 <- b1 <- top, as the parent tags say.
    const levels = await chainLevels(tb, 'node1', `one-${VM}-0`);
    expect(levels).toBe(3);
    expect(inc1.stderr).toContain(`the disk now stands on ${levels} snapshot level(s)`);
    await keep(1);
    await tm.ok('postbackup', tmArgs, vmXml('INCREMENT', 0));

    await writeAt(tb, 'node1', disk, 2, pattern(8 * KiB, 75));
    await writeAt(tb, 'node1', disk, 15, pattern(4 * KiB, 76));
    await timed('prebackup 2', tm.ok('prebackup', tmArgs, vmXml('INCREMENT', 1)));
    await keep(2);
    await tm.ok('postbackup', tmArgs, vmXml('INCREMENT', 1));
    expect(await ssh('node1', ['sha256sum', disk])).toMatch(sha256(c2));
  });

  it("increments hold the changed clusters only (zeroed ones as zero clusters), not the disk's 16 MiB", async () => {
    expect(await dataBytes(`${carried}/disk.0.0`)).toBe(16 * MiB);
    expect(await dataBytes(`${carried}/disk.0.1`)).toBe(2 * CLUSTER); // the zeroed cluster holds no data
    expect(await dataBytes(`${carried}/disk.0.2`)).toBe(2 * CLUSTER);
    for (const n of [1, 2]) {
      const size = Number(await ssh('node1', ['stat', '-c', '%s', `${carried}/disk.0.${n}`]));
      expect(size).toBeLessThan(MiB);
    }
  });

  // oned's `onevm restore` through the TM action, the backup on an rsync datastore on this host
  // (test/integration/one-remotes plays its drivers), into a new VM deployed on node2.
  it('TM restore into a new VM on node2: at the full backup, then the whole chain; refused while open', async () => {
    const t0 = Date.now();
    const NEW = VM + 100;
    const BK = 900 + (VM % 100);
    const BKDS = 100;
    // The rsync datastore's layout: <BASE_PATH>/<backed-up VM>/<backup dir>/disk.<id>.<increment>.
    const base = path.join(tm.dir, 'bkds');
    await fetchBackups(carried, 3, (n) => path.join(base, String(VM), `b${n}`, `disk.0.${n}`));
    const incs = [0, 1, 2].map((n) => `<INCREMENT><ID>${n}</ID><SOURCE>b${n}</SOURCE></INCREMENT>`).join('');
    await tm.oneXml(
      'onevm',
      NEW,
      `<VM><ID>${NEW}</ID><STATE>8</STATE><TEMPLATE><DISK><DISK_ID>0</DISK_ID></DISK></TEMPLATE></VM>`,
    );
    await tm.oneXml(
      'oneimage',
      BK,
      `<IMAGE><ID>${BK}</ID><TYPE>6</TYPE><DATASTORE_ID>${BKDS}</DATASTORE_ID><SOURCE>b0</SOURCE>` +
        `<VMS><ID>${VM}</ID></VMS><BACKUP_INCREMENTS>${incs}</BACKUP_INCREMENTS><FORMAT>raw</FORMAT></IMAGE>`,
    );
    await tm.oneXml(
      'onedatastore',
      BKDS,
      `<DATASTORE><ID>${BKDS}</ID><DS_MAD><![CDATA[rsync]]></DS_MAD><BASE_PATH>${base}</BASE_PATH></DATASTORE>`,
    );
    const ndir = `${DS}/${SYS}/${NEW}`;
    const ndisk = `${ndir}/disk.0`;
    const restore = (inc: string) => tm.run('restore', [`node2:${ndir}`, String(NEW), String(BK), inc, '0']);
    const restored = async () =>
      (await ssh('node2', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]))
        .split(/\s+/)
        .filter((n) => n.startsWith(`one-${NEW}-0-r`));
    // The new VM as oned deployed it (a clone of the original image), then powered off.
    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, `node2:${ndisk}`, String(NEW), String(IDS)]);
    for (const [inc, n] of [
      ['0', 0],
      ['-1', 2],
    ] as const) {
      const r = await restore(inc);
      expect(r.exitCode, r.stderr).toBe(0);
      times[`restore ${inc}`] = r.seconds;
      expect(await deviceSha(tb, 'node2', ndisk), `restored at point ${n}`).toBe(sha256(contents[n]!));
      // One restored image per disk: the earlier one went with the disk it replaced.
      expect(await restored()).toHaveLength(1);
      expect((await tb.ssh('node2', ['test', '-e', `${ndir}/disk.0.backup`])).exitCode).toBe(1);
    }
    // A running VM (the disk held open) is refused before anything is downloaded or changed.
    const holder = await ssh('node2', ['sh', '-c', `sleep 600 < ${ndisk} > /dev/null 2>&1 & echo $!`]);
    try {
      const r = await restore('0');
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(`one-${NEW}-0 is open on node2`);
      expect(r.stderr).toMatch('power the VM off before restoring');
      expect(await deviceSha(tb, 'node2', ndisk)).toBe(sha256(contents[2]!));
    } finally {
      await ssh('node2', ['kill', holder]);
    }
    await tm.ok('delete', [`node2:${ndir}/`, String(NEW), String(SYS)]);
    expect(await restored()).toEqual([]);
    times['restore test'] = (Date.now() - t0) / 1000;
  });

  it('a reset chain starts from the disk as it is, also where the disk stands on the last full backup', async () => {
    // sha256 of a backup file's disk content, converted to raw on node1 and summed there.
    const fileSha = async (file: string) => {
      const raw = `/var/tmp/bk-check-${run}.raw`;
      await ssh('node1', ['qemu-img', 'convert', '-q', '-f', 'qcow2', '-O', 'raw', file, raw]);
      const sum = (await ssh('node1', ['sha256sum', raw])).split(/\s+/)[0];
      await ssh('node1', ['rm', '-f', raw]);
      return sum;
    };
    // Reset after the full + two increments (LAST_INCREMENT_ID -1 again): the old points go
    // aside, point 0 is taken anew and read whole.
    await timed('prebackup 0, reset', tm.ok('prebackup', tmArgs, vmXml('INCREMENT', -1)));
    expect(await fileSha(`${bkDir}/disk.0.0`)).toBe(sha256(c2));
    await tm.ok('postbackup', tmArgs, vmXml('INCREMENT', -1));
    // That chain had only its full backup, so the disk stands right on its point 0. Written
    // since, and reset again: the new full backup holds the write, not the old point.
    const c3 = overlay(c2, 7 * MiB, pattern(CLUSTER, 77));
    await writeAt(tb, 'node1', disk, 7, pattern(CLUSTER, 77));
    await timed('prebackup 0, reset on b0', tm.ok('prebackup', tmArgs, vmXml('INCREMENT', -1)));
    expect(await fileSha(`${bkDir}/disk.0.0`), 'the full backup of a reset chain is the disk now').toBe(sha256(c3));
    await tm.ok('postbackup', tmArgs, vmXml('INCREMENT', -1));
    expect(await ssh('node1', ['sha256sum', disk])).toMatch(sha256(c3));
  });

  it('a full-mode backup reads the disk as it is; terminate removes the backup points', async () => {
    await timed('prebackup full', tm.ok('prebackup', tmArgs, vmXml('FULL', -1)));
    await ssh('node1', ['qemu-img', 'compare', '-q', '-f', 'qcow2', '-F', 'raw', `${bkDir}/disk.0.0`, disk]);
    await tm.ok('postbackup', tmArgs, vmXml('FULL', -1));
    await tm.ok('delete', [`node1:${DS}/${SYS}/${VM}/`, String(VM), String(SYS)]);
    const lvs = await ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]);
    expect(lvs.split(/\s+/).filter((n) => n.startsWith(`one-${VM}-`))).toEqual([]);
    for (const node of ['node1', 'node2']) await ssh(node, ['rm', '-rf', carried]);
    console.log(
      `backup.test: ${((Date.now() - started) / 1000).toFixed(1)} s; TM actions (s): ${JSON.stringify(times)}`,
    );
  });
});

describe.sequential("live backups (prebackup_live) of a running qemu VM's disk, restored on node2", () => {
  // A second VM on the same image: qemu (TCG, running its firmware) holds the disk open from
  // before the first backup to after the last; it writes through its own block layer (the
  // monitor's qemu-io), and reads each earlier write back after every switch.
  const LVM = VM + 200;
  const lvDir = `${DS}/${SYS}/${LVM}`;
  const ldisk = `${vmDir.replace(`/${VM}`, `/${LVM}`)}/disk.0`;
  const largs = [`node1:${lvDir}`, '0', `one-${LVM}`, '-', String(LVM), String(SYS)];
  const lxml = (last: number) => vmXml('INCREMENT', last).replace(`<ID>${VM}</ID>`, `<ID>${LVM}</ID>`);
  const lcarried = `/var/tmp/bkl-${run}`;
  const fill = (byte: number, len: number) => Buffer.alloc(len, byte);
  // What the VM writes before point N (qemu-io "write -P byte offset length"), and the disk after.
  const writes: Array<Array<[number, number, number]>> = [
    [[0x5a, 2 * MiB, MiB]],
    [
      [0x6b, 5 * MiB, 4 * KiB],
      [0x00, 12 * MiB, CLUSTER],
    ],
    [
      [0x7c, 2 * MiB, 8 * KiB],
      [0x8d, 15 * MiB, 4 * KiB],
    ],
    // Points 3 and 4: the disk has a write-back cache, these writes sit in it, dirty.
    [[0x9e, 3 * MiB, 256 * KiB]],
    [
      [0xaf, 7 * MiB, 64 * KiB],
      [0x9e, 3 * MiB + 64 * KiB, 4 * KiB],
    ],
  ];
  const contents: Buffer[] = [];
  writes.reduce((c, ws) => {
    const next = ws.reduce((b, [byte, at, len]) => overlay(b, at, fill(byte, len)), c);
    contents.push(next);
    return next;
  }, IMG);
  let started = 0;
  const pauses: number[] = [];
  const cachedPauses: number[] = [];
  const vmWrite = async (ws: Array<[number, number, number]>) => {
    for (const [byte, at, len] of ws) await hmp(tb, 'node1', `qemu-io d0 "write -P ${byte} ${at} ${len}"`);
  };
  /** qemu reads every write so far back through its open disk: what the guest sees never changed. */
  const vmReadsBack = async (upTo: number) => {
    for (const [byte, at, len] of writes.slice(0, upTo + 1).flat()) {
      const [a] = await hmp(tb, 'node1', `qemu-io d0 "read -P ${byte} ${at} ${len}"`);
      expect(String(a!.return), `qemu read of ${len} at ${at}`).not.toMatch(/fail|error/i);
    }
  };
  const suspended = async (dev: string) =>
    (await ssh('node1', ['dmsetup', 'info', '-c', '--noheadings', '-o', 'attr', dev])).trim()[2] === 's';
  const recoverDid = async (decision: string) => {
    const rec = await clusterCli(tb, 'node1', ['recover']);
    expect(rec.exitCode, rec.stderr).toBe(0);
    const actions = JSON.parse(rec.stdout).result.actions as Array<{ op: string; name: string; decision: string }>;
    const mine = actions.filter((a) => a.op === 'live-backup' && a.name === `one-${LVM}-0`);
    expect(mine).toEqual([expect.objectContaining({ decision })]);
  };
  /**
   * backup create --live killed (COWSTACK_FAULT_AFTER_STEP) with the VM's disk suspended: after
   * step 6 (suspend; the exception table not yet handed over) recover resumes it on its own table
   * and removes what was prepared; after step 7 (handed over) it loads the new top's table,
   * resumes, and finishes the point. qemu reads everything back after each.
   */
  const crashesRecovered = async (device: string) => {
    const args = ['backup', 'create', `one-${LVM}-0`, '--file', `${lcarried}/crash.qcow2`, '--increment', '1'];
    for (const [step, decision] of [
      [6, 'undone'],
      [7, 'finished'],
    ] as const) {
      const r = await clusterCli(tb, 'node1', [...args, '--live'], { COWSTACK_FAULT_AFTER_STEP: String(step) });
      expect(r.exitCode, `expected a kill: ${r.stdout}${r.stderr}`).not.toBe(0);
      expect(await suspended(device), `killed after step ${step}: the VM's disk is suspended`).toBe(true);
      await recoverDid(decision);
      if (step === 6) expect(await suspended(device)).toBe(false);
      else expect((await tb.ssh('node1', ['test', '-e', device])).exitCode, 'renamed: the old name is gone').toBe(1);
      await vmReadsBack(1);
    }
    const st = await clusterCli(tb, 'node1', ['status']);
    expect(JSON.parse(st.stdout).result.inFlight).toEqual([]);
  };
  const lvUuid = async (name: string) =>
    (await ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_uuid', `${REPO_VG}/${name}`])).trim();

  it('three live backup points (full, two increments) while qemu keeps the disk open and writes', async () => {
    started = Date.now();
    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, `node1:${lvDir}/disk.0`, String(LVM), String(IDS)]);
    await startQemu(tb, 'node1', ldisk, false);
    await qmp(tb, 'node1', { execute: 'cont' });
    const pid = await ssh('node1', ['cat', '/run/cowstack-mig.pid']);
    await ssh('node1', ['mkdir', '-p', lcarried]);
    for (const n of [0, 1, 2]) {
      await vmWrite(writes[n]!);
      const before = await ssh('node1', ['readlink', ldisk]);
      if (n === 1) await crashesRecovered(before);
      const r = await tm.ok('prebackup_live', largs, lxml(n - 1));
      // Point 1 was taken by the recover of the second crash: the TM finds it and only reads it.
      if (n !== 1) pauses.push(Number(/VM disk paused (\d+) ms/.exec(r.stderr)?.[1]));
      if (n !== 1) expect(pauses.at(-1), r.stderr).toBeGreaterThan(0);
      if (n === 1) expect(r.stderr).toMatch(/increment 1 \(2 changed range\(s\)\) of 131072 bytes/);
      await ssh('node1', ['cp', '--sparse=always', `${lvDir.replace('//', '/')}/backup/disk.0.${n}`, `${lcarried}/`]);
      await tm.ok('postbackup_live', largs, lxml(n - 1));
      // The same qemu process, the disk still open, linked to the device renamed after its new top.
      expect(await ssh('node1', ['cat', '/run/cowstack-mig.pid'])).toBe(pid);
      const after = await ssh('node1', ['readlink', ldisk]);
      expect(after).not.toBe(before);
      expect(after).toBe(`/dev/mapper/cowstack-rw-${(await lvUuid(`one-${LVM}-0`)).replace(/-/g, '')}`);
      expect(await ssh('node1', ['dmsetup', 'info', '-c', '--noheadings', '-o', 'open', after])).toBe('1');
      await vmReadsBack(n);
      // Backup point N, read through its own read-only device on node1: the disk at point N.
      const ro = `/dev/mapper/cowstack-ro-${(await lvUuid(`one-${LVM}-0-b${n}`)).replace(/-/g, '')}`;
      expect(await deviceSha(tb, 'node1', ro), `point ${n}`).toBe(sha256(contents[n]!));
      expect(
        await ssh('node1', [
          'lvs',
          '--nolocking',
          '--noheadings',
          '-o',
          'lv_tags,lv_attr',
          `${REPO_VG}/one-${LVM}-0-b${n}`,
        ]),
      ).toMatch(/cowstack_state:committed.*\s-ri-ao/);
      // Shared, as every committed layer: another node may stand on it (a migration's destination).
      const locks = await ssh('node1', ['lvmlockctl', '--info']);
      expect(locks).toContain(`LK LV sh ${await lvUuid(`one-${LVM}-0-b${n}`)}`);
    }
    // The running disk as a whole (qemu idle: nothing in flight) is the content after the last write.
    expect(await deviceSha(tb, 'node1', ldisk)).toBe(sha256(contents[2]!));
    // No device reported as a problem: the VM's device, renamed after its top, keeps the dm uuid
    // of point 0 (the kernel sets it once), and is not taken for a writable device over it.
    const st = JSON.parse((await clusterCli(tb, 'node1', ['status'])).stdout).result;
    expect(st.inFlight).toEqual([]);
    expect(st.devices.filter((d: { problem?: string }) => d.problem)).toEqual([]);
  });

  it("restored on node2 at each point, and a new VM's disk there from the last", async () => {
    await restoreEach(lcarried, 'bklrst', contents.slice(0, 3));
    const NEW = LVM + 1;
    const nd = `node2:${DS}/${SYS}/${NEW}/disk.0`;
    await tm.ok('clone', [`${FE}:${REPO_VG}/bklrst2-${run}`, nd, String(NEW), String(IDS)]);
    expect(await deviceSha(tb, 'node2', `${DS}/${SYS}/${NEW}/disk.0`)).toBe(sha256(contents[2]!));
    await tm.ok('delete', [`node2:${DS}/${SYS}/${NEW}/`, String(NEW), String(SYS)]);
  });

  /**
   * The same disk, now with a write-back cache on node1 (qemu closes it for the re-map, then runs
   * on). Point 3: the dirty blocks are drained into the COW, the point taken, the new top cached
   * afresh. Point 4: backup create --live killed after step 13 (the point's table live on the
   * drained COW, the VM's device still suspended on the old cache): recover finds the new top's
   * cache device from dmsetup alone, loads the VM's device on it, resumes, finishes.
   */
  it('a write-back cached disk: drained into each point, cached again on the new top', async () => {
    const t0 = Date.now();
    const top = `one-${LVM}-0`;
    const cli = async (args: string[], env?: Record<string, string>) => {
      const r = await clusterCli(tb, 'node1', args, env);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      return JSON.parse(r.stdout).result;
    };
    if (!(await cli(['cache', 'list'])).exists) await cli(['cache', 'init', '/dev/vda']);
    await stopQemu(tb, 'node1');
    await cli(['clone', 'unmap', top]);
    expect((await cli(['clone', 'map', top, '--cache', 'write'])).writeback).toMatch(/^cowstack-wb-/);
    await startQemu(tb, 'node1', ldisk, false);
    await qmp(tb, 'node1', { execute: 'cont' });
    const remapS = (Date.now() - t0) / 1000;
    let crashS = 0;
    const wbOf = async (name: string) => `cowstack-wb-${(await lvUuid(name)).replace(/-/g, '')}`;
    /** Blocks in use in a cache device (every one may be dirty in ssd mode), read from the kernel. */
    const used = async (dev: string) => {
      const f = (await ssh('node1', ['dmsetup', 'status', dev])).split(/\s+/);
      expect(f[2]).toBe('writecache');
      return Number(f[4]) - Number(f[5]);
    };
    const cacheLvs = async () =>
      (await ssh('node1', ['lvs', '--noheadings', '-o', 'lv_name', 'cowstack_cache'])).split(/\s+/).filter(Boolean);
    const tags = async (name: string) =>
      ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_tags', `${REPO_VG}/${name}`]);
    for (const n of [3, 4]) {
      await vmWrite(writes[n]!);
      const oldWb = await wbOf(top);
      expect(await used(oldWb), `point ${n}: dirty blocks in the cache before`).toBeGreaterThan(0);
      const before = await ssh('node1', ['readlink', ldisk]);
      if (n === 4) {
        const tc = Date.now();
        const args = ['backup', 'create', top, '--file', `${lcarried}/crash.qcow2`, '--increment', '4', '--live'];
        const r = await clusterCli(tb, 'node1', args, { COWSTACK_FAULT_AFTER_STEP: '13' });
        expect(r.exitCode, `expected a kill: ${r.stdout}${r.stderr}`).not.toBe(0);
        expect(await suspended(before), "killed after step 13: the VM's disk is suspended").toBe(true);
        await recoverDid('finished');
        crashS = (Date.now() - tc) / 1000;
      }
      const r = await tm.ok('prebackup_live', largs, lxml(n - 1));
      process.stderr.write(`[backup] write-back point ${n}: ${r.stderr.trim()}\n`);
      if (n === 3) {
        cachedPauses.push(Number(/VM disk paused (\d+) ms/.exec(r.stderr)?.[1]));
        expect(r.stderr).toMatch(/write-back cache drained \(\d+ block\(s\) before the pause\)/);
      }
      await ssh('node1', ['cp', '--sparse=always', `${lvDir.replace('//', '/')}/backup/disk.0.${n}`, `${lcarried}/`]);
      await tm.ok('postbackup_live', largs, lxml(n - 1));
      const after = await ssh('node1', ['readlink', ldisk]);
      expect(after).toBe(`/dev/mapper/cowstack-rw-${(await lvUuid(top)).replace(/-/g, '')}`);
      // The VM's device stands on the new top's own cache; the old cache device and LV are gone.
      const newWb = await wbOf(top);
      const [, , , , cow] = (await ssh('node1', ['dmsetup', 'table', after])).split(/\s+/);
      expect(cow).toBe(await ssh('node1', ['dmsetup', 'info', '-c', '--noheadings', '-o', 'major,minor', newWb]));
      expect((await tb.ssh('node1', ['dmsetup', 'info', oldWb])).exitCode).not.toBe(0);
      const lvs = await cacheLvs();
      expect(lvs).toContain(newWb.replace('cowstack-wb-', 'wb_'));
      expect(lvs).not.toContain(oldWb.replace('cowstack-wb-', 'wb_'));
      expect(await tags(top)).toContain('cowstack_wbhost:node1');
      expect(await tags(`${top}-b${n}`)).not.toContain('cowstack_wbhost');
      // What qemu reads back through its open disk (every write so far): after the recover.
      if (n === 4) await vmReadsBack(n);
      const ro = `/dev/mapper/cowstack-ro-${(await lvUuid(`${top}-b${n}`)).replace(/-/g, '')}`;
      expect(await deviceSha(tb, 'node1', ro), `point ${n}`).toBe(sha256(contents[n]!));
    }
    // Still cached: a new write is in the new top's cache.
    await hmp(tb, 'node1', `qemu-io d0 "write -P 0 ${3 * MiB} 4096"`);
    expect(await used(await wbOf(top))).toBeGreaterThan(0);
    await hmp(tb, 'node1', `qemu-io d0 "write -P 0x9e ${3 * MiB} 4096"`);
    const t1 = Date.now();
    await restoreEach(lcarried, 'bklwb', contents, [3, 4], 3);
    const restoreS = (Date.now() - t1) / 1000;
    console.log(
      `backup.test live write-back: ${((Date.now() - t0) / 1000).toFixed(1)} s (re-map ${remapS.toFixed(1)} s, ` +
        `crash and recover ${crashS.toFixed(1)} s, restores ${restoreS.toFixed(1)} s); ` +
        `VM disk pause with the cache (ms): ${cachedPauses.join(', ')}`,
    );
  });

  /**
   * The VM writes on while its cached disk is backed up live (point 5): 64 KiB blocks, one after
   * the other, each a new byte, until the backup returns. Each write finished before the next
   * began, so the point must hold exactly the first j of them, each whole (none torn by the
   * suspend), and the top all of them.
   */
  it('writes going on through a live switch land whole: the point holds a prefix of them', async () => {
    const top = `one-${LVM}-0`;
    const BLOCK = 64 * KiB;
    const at = (k: number) => 8 * MiB + k * BLOCK;
    const byte = (k: number) => 0x10 + k;
    const args = ['backup', 'create', top, '--file', `${lcarried}/p5.qcow2`, '--increment', '5', '--live'];
    let done = false;
    const backup = clusterCli(tb, 'node1', args).finally(() => {
      done = true;
    });
    let written = 0;
    while (!done && written < 64) {
      await hmp(tb, 'node1', `qemu-io d0 "write -P ${byte(written)} ${at(written)} ${BLOCK}"`);
      written++;
    }
    const r = await backup;
    expect(r.exitCode, r.stderr).toBe(0);
    const point = `/dev/mapper/cowstack-ro-${(await lvUuid(`${top}-b5`)).replace(/-/g, '')}`;
    const got = await deviceSha(tb, 'node1', point);
    const prefixes = [contents[4]!];
    for (let k = 0; k < written; k++) prefixes.push(overlay(prefixes[k]!, at(k), fill(byte(k), BLOCK)));
    const j = prefixes.findIndex((c) => sha256(c) === got);
    expect(j, `point 5 is the disk before the backup plus the first j of ${written} writes`).toBeGreaterThanOrEqual(0);
    // The VM's own device, named after the new top (no postbackup_live here re-links the disk
    // file to it); qemu writes O_DIRECT, so nothing of it waits in the page cache.
    const disk = `/dev/mapper/cowstack-rw-${(await lvUuid(top)).replace(/-/g, '')}`;
    expect(await deviceSha(tb, 'node1', disk), `the top holds all ${written} writes`).toBe(sha256(prefixes[written]!));
    console.log(`backup.test live switch under writes: point 5 holds ${j} of ${written} writes`);
  });

  it('the VM stops; terminate removes the disk and its live points', async () => {
    await stopQemu(tb, 'node1');
    await tm.ok('delete', [`node1:${lvDir}/`, String(LVM), String(SYS)]);
    const lvs = await ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]);
    expect(lvs.split(/\s+/).filter((n) => n.startsWith(`one-${LVM}-`))).toEqual([]);
    for (const n of [0, 1, 2])
      expect((await clusterCli(tb, 'node1', ['image', 'rm', `bklrst${n}-${run}`])).exitCode).toBe(0);
    for (const n of [3, 4])
      expect((await clusterCli(tb, 'node1', ['image', 'rm', `bklwb${n}-${run}`])).exitCode).toBe(0);
    expect((await clusterCli(tb, 'node1', ['image', 'rm', img])).exitCode).toBe(0);
    for (const node of ['node1', 'node2']) await ssh(node, ['rm', '-rf', lcarried]);
    console.log(
      `backup.test live: ${((Date.now() - started) / 1000).toFixed(1)} s; VM disk pauses (ms): ${pauses.join(', ')}`,
    );
  });
});
