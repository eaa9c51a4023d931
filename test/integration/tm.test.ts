/**
 * The OpenNebula TM driver on the real-kernel testbed: the sequences oned runs for a VM's
 * life, played through tm/cowstack/<action> with real argument strings. After every step:
 * the symlink at D, the device behind it, the LV tags and the data (sha256); after
 * terminate, that nothing of the VM is left on either node or in the repository. The image
 * itself goes through the datastore driver (datastore/cowstack/<action>) as oned would send it:
 * stat and cp bring it in, mkfs names the save-as, export streams it out, rm refuses while a
 * disk depends on it and removes it (with its persistent lineage) at the end.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { clusterCli } from './cli.js';
import { chainLevels, REPO_VG } from './cluster.js';
import { deviceSha, MiB, overlay, pattern, sha256, writeAt } from './data.js';
import { DS, FE, tmHarness, type TmHarness } from './tm-harness.js';

let tb: Testbed;
let tm: TmHarness;
const run = Date.now().toString(36).slice(-5);
const IMG = pattern(16 * MiB, 61);
// VM and image ids unique per run, so a kept testbed can run this file again. The image comes in
// through the datastore driver (ds cp) as OpenNebula image IMGID, the save-as (ds mkfs + cpds)
// makes image SAVEDID: in the repository VG they are one-img-<id>.
const IMGID = 5000 + (parseInt(run, 36) % 5000);
const SAVEDID = IMGID + 1;
const img = `one-img-${IMGID}`;
const saved = `one-img-${SAVEDID}`;
const VM = 700 + (parseInt(run, 36) % 200);
const PVM = VM + 1000;
const SYS = 0; // system datastore
const IDS = 1; // image datastore
const vmDir = (vm: number) => `/var/lib/one/datastores/${SYS}/${vm}`;
const D = (host: string, vm: number, disk: number) => `${host}:${DS}/${SYS}/${vm}/disk.${disk}`;
/** The datastore driver action oned sends: base64 DS_DRIVER_ACTION_DATA, the datastore reaching the VG via node1. */
const dsAction = (image: Record<string, string | number>) =>
  Buffer.from(
    '<DS_DRIVER_ACTION_DATA><IMAGE>' +
      Object.entries(image)
        .map(([k, v]) => `<${k}><![CDATA[${v}]]></${k}>`)
        .join('') +
      `</IMAGE><DATASTORE><ID>${IDS}</ID><TEMPLATE><BRIDGE_LIST><![CDATA[node1]]></BRIDGE_LIST></TEMPLATE>` +
      '</DATASTORE></DS_DRIVER_ACTION_DATA>',
  ).toString('base64');
/** What the datastore driver printed when the image came in (beforeAll), checked by the first test. */
const imported = { stat: '', cp: '', seconds: 0 };
const IMG_GZ = gzipSync(IMG, { level: 1 });

const ssh = async (node: string, argv: string[]) => {
  const r = await tb.ssh(node, argv);
  return { ...r, out: r.stdout.trim() };
};
const readlink = async (node: string, p: string) => (await ssh(node, ['readlink', '--', p])).out;
const lvTags = async (node: string, name: string): Promise<string[] | undefined> => {
  const r = await ssh(node, ['lvs', '--nolocking', '--noheadings', '-o', 'lv_tags', `${REPO_VG}/${name}`]);
  return r.exitCode === 0 ? r.out.split(',') : undefined;
};
const lvUuid = async (node: string, name: string) =>
  (await ssh(node, ['lvs', '--nolocking', '--noheadings', '-o', 'lv_uuid', `${REPO_VG}/${name}`])).out;
const lvNames = async (node: string) =>
  (await ssh(node, ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG])).out.split(/\s+/).filter(Boolean);
const cowstackDevices = async (node: string) =>
  (await ssh(node, ['dmsetup', 'ls'])).out
    .split('\n')
    .map((l) => l.split(/\s+/)[0]!)
    .filter((n) => n.startsWith('cowstack-'));
const exists = async (node: string, p: string) => (await ssh(node, ['test', '-e', p])).exitCode === 0;

/** D is a symlink to this VM disk's writable cowstack device, and reads back `content`. */
async function checkDisk(
  node: string,
  vm: number,
  disk: number,
  content: Buffer,
  lv = `one-${vm}-${disk}`,
): Promise<string> {
  const target = await readlink(node, `${vmDir(vm)}/disk.${disk}`);
  const uuid = (await lvUuid(node, lv)).replace(/-/g, '');
  expect(target).toBe(`/dev/mapper/cowstack-rw-${uuid}`);
  expect(await lvTags(node, lv)).toContain('cowstack_state:live');
  expect(await deviceSha(tb, node, `${vmDir(vm)}/disk.${disk}`)).toBe(sha256(content));
  return target;
}

beforeAll(async () => {
  tb = await attachMine();
  tm = await tmHarness(tb);
  // As oned registers an image: stat (its size), then cp from the front-end (here: gzip).
  const file = path.join(tm.dir, 'img.raw.gz');
  await fsp.writeFile(file, IMG_GZ);
  imported.stat = (await tm.ds.ok('stat', ['1'], dsAction({ PATH: file }))).stdout;
  const cp = await tm.ds.ok('cp', [String(IMGID)], dsAction({ ID: IMGID, PATH: file, SIZE: 16 }));
  Object.assign(imported, { cp: cp.stdout, seconds: cp.seconds });
  await fsp.writeFile(path.join(tm.dir, 'context.sh'), `ETH0_IP='10.0.0.${VM % 250}'\nHOSTNAME='vm${VM}'\n`);
});

describe.sequential('a non-persistent VM: deploy, snapshots, cold migration, save-as, terminate', () => {
  const A = pattern(1 * MiB, 62);
  const B = pattern(1 * MiB, 63);
  const withA = overlay(IMG, 2 * MiB, A);
  const withAB = overlay(withA, 5 * MiB, B);
  const times: Record<string, number> = {};

  it('ds stat and cp imported the gzip file as a sealed image and printed SOURCE and FORMAT', async () => {
    // execa drops the final newline.
    expect(imported).toMatchObject({ stat: '16', cp: `${REPO_VG}/${img} raw` });
    expect(await lvTags('node1', img)).toEqual(
      expect.arrayContaining([
        'cowstack_role:image',
        'cowstack_state:sealed',
        `cowstack_sha256:${sha256(IMG)}`,
        `cowstack_srcsha256:${sha256(IMG_GZ)}`,
      ]),
    );
    times.ds_cp = imported.seconds;
  });

  it('deploy: clone + context on node1', async () => {
    times.clone = (
      await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, D('node1', VM, 0), String(VM), String(IDS)])
    ).seconds;
    times.context = (
      await tm.ok('context', [path.join(tm.dir, 'context.sh'), D('node1', VM, 1), String(VM), String(SYS)])
    ).seconds;
    await checkDisk('node1', VM, 0, IMG);
    const imgUuid = await lvUuid('node1', img);
    expect(await lvTags('node1', `one-${VM}-0`)).toContain(`cowstack_parent:${imgUuid}`);
    // The context disk is an ISO 9660 file labelled CONTEXT holding context.sh.
    expect((await ssh('node1', ['blkid', '-o', 'value', '-s', 'LABEL', `${vmDir(VM)}/disk.1`])).out).toBe('CONTEXT');
    expect((await ssh('node1', ['isoinfo', '-R', '-i', `${vmDir(VM)}/disk.1`, '-x', '/context.sh'])).out).toContain(
      `HOSTNAME='vm${VM}'`,
    );
  });

  it('the guest writes; poweroff/resume (no TM action) keeps device and data', async () => {
    await writeAt(tb, 'node1', `${vmDir(VM)}/disk.0`, 2, A);
    await checkDisk('node1', VM, 0, withA);
  });

  it('disk snapshots: create, revert, delete (refused while something depends on it)', async () => {
    times.snap_create = (await tm.ok('snap_create', [D('node1', VM, 0), '0', String(VM), String(SYS)])).seconds;
    const s0 = await lvTags('node1', `one-${VM}-0-s0`);
    expect(s0).toContain('cowstack_state:committed');
    expect(await lvTags('node1', `one-${VM}-0`)).toContain(
      `cowstack_parent:${await lvUuid('node1', `one-${VM}-0-s0`)}`,
    );
    await checkDisk('node1', VM, 0, withA);

    await writeAt(tb, 'node1', `${vmDir(VM)}/disk.0`, 5, B);
    await tm.ok('snap_create', [D('node1', VM, 0), '1', String(VM), String(SYS)]);
    await checkDisk('node1', VM, 0, withAB);

    times.snap_revert = (await tm.ok('snap_revert', [D('node1', VM, 0), '0', String(VM), String(SYS)])).seconds;
    await checkDisk('node1', VM, 0, withA);
    expect(await lvTags('node1', `one-${VM}-0`)).toContain(
      `cowstack_parent:${await lvUuid('node1', `one-${VM}-0-s0`)}`,
    );

    const refused = await tm.run('snap_delete', [D('node1', VM, 0), '0', String(VM), String(SYS)]);
    expect(refused.exitCode).toBe(6);
    expect(refused.stderr).toMatch(
      /^ERROR: snap_delete: snapshot 0 of disk 0 .* cannot be deleted: the current disk, one-\d+-0-s1 depend/m,
    );
    expect(await lvTags('node1', `one-${VM}-0-s0`)).toContain('cowstack_state:committed');

    times.snap_delete = (await tm.ok('snap_delete', [D('node1', VM, 0), '1', String(VM), String(SYS)])).seconds;
    expect(await lvTags('node1', `one-${VM}-0-s1`)).toBeUndefined();
    await checkDisk('node1', VM, 0, withA);

    const live = await tm.run('snap_create_live', [D('node1', VM, 0), '2', String(VM), String(SYS)]);
    expect(live.exitCode).toBe(6);
    expect(live.stderr).toMatch(/^ERROR: snap_create_live: live disk snapshots are not supported/m);
  });

  it('premigrate prepares node2, failmigrate undoes it; cold migration (mv) moves disks and files', async () => {
    // A live migration that failed in the VMM step: oned runs premigrate, then failmigrate.
    // The hand-over itself (qemu, release, acquire) is migrate.test.ts.
    const xml = Buffer.from(`<VM><ID>${VM}</ID></VM>`).toString('base64');
    const migArgs = ['node1', 'node2', `${DS}/${SYS}/${VM}`, String(VM), String(SYS)];
    const pre = await tm.run('premigrate', migArgs, xml);
    expect(pre.exitCode, pre.stderr).toBe(0);
    expect(pre.stderr).toMatch(new RegExp(`node2: one-${VM}-0 prepared`));
    // The placeholder under the disk's final name, an error table until acquire loads the real one.
    const placeholder = (await cowstackDevices('node2')).filter((d) => d.startsWith('cowstack-rw-'));
    expect(placeholder).toHaveLength(1);
    expect((await ssh('node2', ['dmsetup', 'table', placeholder[0]!])).out).toMatch(/^0 \d+ error$/);
    const fail = await tm.run('failmigrate', migArgs, xml);
    expect(fail.exitCode, fail.stderr).toBe(0);
    expect(await cowstackDevices('node2')).toEqual([]);
    // The VM kept running on node1, its disk untouched.
    await checkDisk('node1', VM, 0, withA);

    times.mv = (
      await tm.ok('mv', [`node1:${DS}/${SYS}/${VM}`, `node2:${DS}/${SYS}/${VM}/`, String(VM), String(SYS)])
    ).seconds;
    await checkDisk('node2', VM, 0, withA);
    expect((await ssh('node2', ['isoinfo', '-R', '-i', `${vmDir(VM)}/disk.1`, '-x', '/context.sh'])).out).toContain(
      `HOSTNAME='vm${VM}'`,
    );
    expect(await exists('node1', vmDir(VM))).toBe(false);
    expect(await cowstackDevices('node1')).toEqual([]);
  });

  it('save-as (ds mkfs save_as, then cpds) of the current state', async () => {
    // oned asks the datastore for the new image's SOURCE first: nothing is created yet.
    const mk = await tm.ds.ok('mkfs', [String(SAVEDID)], dsAction({ ID: SAVEDID, SIZE: 16, FORMAT: 'save_as' }));
    expect(mk.stdout).toBe(`${REPO_VG}/${saved}`);
    expect(await lvTags('node2', saved)).toBeUndefined();
    times.cpds = (
      await tm.ok('cpds', [D('node2', VM, 0), `${FE}:${REPO_VG}/${saved}`, '-1', String(VM), String(SYS)])
    ).seconds;
    expect(await lvTags('node2', saved)).toEqual(
      expect.arrayContaining(['cowstack_role:image', 'cowstack_state:sealed', `cowstack_sha256:${sha256(withA)}`]),
    );
    // The VM's disk is still mapped and intact.
    await checkDisk('node2', VM, 0, withA);
  });

  it('ds rm refuses the image while the VM disk depends on it; nothing changes', async () => {
    const rm = await tm.ds.run('rm', [String(IMGID)], dsAction({ ID: IMGID, SOURCE: `${REPO_VG}/${img}` }));
    times.ds_rm_refused = rm.seconds;
    expect(rm.exitCode).toBe(6);
    expect(rm.stderr).toMatch(
      new RegExp(
        `^ERROR: rm: image ${REPO_VG}/${img} cannot be removed: 1 clone\\(s\\) depend on it: one-${VM}-0-s0`,
        'm',
      ),
    );
    expect(await lvTags('node1', img)).toContain('cowstack_state:sealed');
  });

  it('ds export: the marketplace stream (ssh HOST cat DEVICE) has the saved image sha256 and MD5', async () => {
    const ex = await tm.ds.ok('export', ['42'], dsAction({ ID: SAVEDID, SOURCE: `${REPO_VG}/${saved}`, SIZE: 16 }));
    times.ds_export = ex.seconds;
    const field = (name: string) => new RegExp(`<${name}><!\\[CDATA\\[([^\\]]*)\\]\\]></${name}>`).exec(ex.stdout)?.[1];
    expect([field('SIZE'), field('FORMAT'), field('SHA256')]).toEqual(['16', 'raw', sha256(withA)]);
    expect(field('MD5')).toBe(createHash('md5').update(withA).digest('hex'));
    expect(ex.stdout).toMatch(/^<IMPORT_INFO>.*<DISPOSE>NO<\/DISPOSE><\/IMPORT_INFO>$/);
    const m = /^ssh:\/\/([^:]+):(.+)$/.exec(field('IMPORT_SOURCE') ?? '');
    expect(m, ex.stdout).not.toBeNull();
    // As OpenNebula's downloader.sh reads an ssh:// source; hashed here, on the host.
    const hash = createHash('sha256');
    let bytes = 0;
    const cat = execa('ssh', ['-F', tb.sshConfig, m![1]!, `cat '${m![2]}'`], { buffer: false });
    for await (const c of cat.stdout!) {
      hash.update(c as Buffer);
      bytes += (c as Buffer).length;
    }
    await cat;
    expect([bytes, hash.digest('hex')]).toEqual([withA.length, sha256(withA)]);
  });

  it("monitor reports the repository VG and the VM disk's allocated COW; metrics the same COW", async () => {
    // The VM now runs on node2, its disk on snapshot 0; the guest writes 3 MiB more. monitor
    // asks node1 first (BRIDGE_LIST), so the figures have to come from node2, which maps the disk.
    await writeAt(tb, 'node2', `${vmDir(VM)}/disk.0`, 10, pattern(3 * MiB, 66));
    const rwDev = path.basename(await readlink('node2', `${vmDir(VM)}/disk.0`));
    const s0Dev = `cowstack-ro-${(await lvUuid('node2', `one-${VM}-0-s0`)).replace(/-/g, '')}`;
    const xml = Buffer.from(
      '<DS_DRIVER_ACTION_DATA><DATASTORE><ID>0</ID><TEMPLATE><BRIDGE_LIST><![CDATA[node1]]></BRIDGE_LIST>' +
        '</TEMPLATE></DATASTORE><MONITOR_VM_DISKS>1</MONITOR_VM_DISKS></DS_DRIVER_ACTION_DATA>',
    ).toString('base64');
    const r = await tm.ok('monitor', [String(SYS)], xml);
    const lines = r.stdout.trim().split('\n');
    const v = Object.fromEntries(lines.slice(0, 3).map((l) => l.split('=')));
    const vgs = (
      await ssh('node1', ['vgs', '--noheadings', '--units', 'm', '--nosuffix', '-o', 'vg_size,vg_free', REPO_VG])
    ).out
      .split(/\s+/)
      .map(Number);
    expect(Number(v.TOTAL_MB)).toBe(Math.floor(vgs[0]!));
    expect(Number(v.FREE_MB)).toBe(Math.floor(vgs[1]!));
    expect(Number(v.USED_MB)).toBe(Number(v.TOTAL_MB) - Number(v.FREE_MB));

    // The kernel's counts on node2, read after monitor: allocated sectors (data chunks + metadata).
    const allocatedOf = async (dev: string) =>
      Number(/ snapshot (\d+)\/\d+ \d+$/.exec((await ssh('node2', ['dmsetup', 'status', dev])).out)![1]) * 512;
    const allocated = await allocatedOf(rwDev);
    const s0 = await allocatedOf(s0Dev);
    const vmLine = lines.find((l) => l.startsWith(`VM=[ID=${VM},`));
    expect(vmLine, r.stdout).toMatch(/^VM=\[ID=\d+,MONITOR="[A-Za-z0-9+/=]+( [A-Za-z0-9+/=]+)*"\]$/);
    const entries = /MONITOR="([^"]+)"/
      .exec(vmLine!)![1]!
      .split(' ')
      .map((b) => Buffer.from(b, 'base64').toString());
    expect(entries).toEqual([
      `DISK_SIZE=[ID=0,SIZE=${Math.ceil(allocated / MiB)}]`,
      `SNAPSHOT_SIZE=[ID=0,DISK_ID=0,SIZE=${Math.ceil(s0 / MiB)}]`,
    ]);
    // What was written since snapshot 0 (only these 3 MiB), not the COW LV's size (8 MiB: two extents).
    expect(allocated).toBeGreaterThanOrEqual(3 * MiB);
    expect(allocated).toBeLessThan(3 * MiB + 64 * 1024);
    process.stderr.write(`[tm] monitor: ${entries.join(' ')} (${allocated} and ${s0} bytes allocated)\n`);

    // cowstack metrics on node2 publishes the same COW, in the file node_exporter would read.
    const file = path.join(tm.dir, 'cowstack.prom');
    const m = await clusterCli(tb, 'node2', ['metrics', '--output', file]);
    expect(m.exitCode, m.stderr).toBe(0);
    const cow = m.json.result.cows.find((c: { clone: string }) => c.clone === `one-${VM}-0`);
    expect(cow).toMatchObject({ mode: 'rw', state: 'active', allocatedBytes: allocated });
    const prom = await fsp.readFile(file, 'utf8');
    expect(prom).toContain(
      `cowstack_cow_allocated_bytes{vg="${REPO_VG}",clone="one-${VM}-0",mode="rw"} ${allocated}\n`,
    );
    expect(prom).toContain(`cowstack_cow_allocated_bytes{vg="${REPO_VG}",clone="one-${VM}-0-s0",mode="ro"} ${s0}\n`);
    // The COWs under each device down to the image, counted by the test from the parent tags.
    const chains = [
      [`one-${VM}-0`, 'rw', await chainLevels(tb, 'node2', `one-${VM}-0`)],
      [`one-${VM}-0-s0`, 'ro', await chainLevels(tb, 'node2', `one-${VM}-0-s0`)],
    ] as const;
    expect(chains[0][2]).toBe(2);
    for (const [clone, mode, levels] of chains)
      expect(prom).toContain(`cowstack_cow_chain_levels{vg="${REPO_VG}",clone="${clone}",mode="${mode}"} ${levels}\n`);
    expect(prom).toMatch(
      new RegExp(
        `^cowstack_lv_lock_held\\{vg="${REPO_VG}",lv="one-${VM}-0",kind="clone",state="live",mode="ex"\\} 1$`,
        'm',
      ),
    );
    process.stderr.write(
      `[tm] metrics: ${prom
        .split('\n')
        .filter((l) => l.includes(`one-${VM}-0`))
        .join(' | ')}\n`,
    );
  });

  it('terminate (delete of the VM directory) leaves nothing; a second delete is a no-op', async () => {
    times.delete = (await tm.ok('delete', [`node2:${DS}/${SYS}/${VM}/`, String(VM), String(SYS)])).seconds;
    await tm.ok('delete', [`node2:${DS}/${SYS}/${VM}/`, String(VM), String(SYS)]);
    for (const node of ['node1', 'node2']) {
      expect(await exists(node, vmDir(VM))).toBe(false);
      expect(await cowstackDevices(node)).toEqual([]);
    }
    expect((await lvNames('node1')).filter((n) => n.startsWith(`one-${VM}-`))).toEqual([]);
    process.stderr.write(`[tm] seconds per action: ${JSON.stringify(times)}\n`);
  });
});

describe.sequential('volatile disks: mkimage, mkswap, resize', () => {
  const V = VM + 2000;
  const mkimageMkswapResize =
    'mkimage raw is zeroed, mkswap formats, resize grows a volatile disk and refuses to outgrow a COW clone';
  it(mkimageMkswapResize, async () => {
    await tm.ok('mkimage', ['8', 'raw', D('node1', V, 0), String(V), String(SYS)]);
    await tm.ok('mkswap', ['8', D('node1', V, 1), String(V), String(SYS)]);
    expect(await readlink('node1', `${vmDir(V)}/disk.0`)).toBe(`/dev/mapper/${REPO_VG}-one--${V}--0`);
    // A new LV can hold a deleted LV's data: a volatile disk must read back as zeros.
    expect(await deviceSha(tb, 'node1', `${vmDir(V)}/disk.0`)).toBe(sha256(Buffer.alloc(8 * MiB)));
    expect((await ssh('node1', ['blkid', '-o', 'value', '-s', 'TYPE', `${vmDir(V)}/disk.1`])).out).toBe('swap');
    await tm.ok('resize', [D('node1', V, 0), '12', String(V), String(SYS)]);
    expect((await ssh('node1', ['blockdev', '--getsize64', `${vmDir(V)}/disk.0`])).out).toBe(String(12 * MiB));

    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, D('node1', V, 2), String(V), String(IDS)]);
    const big = await tm.run('resize', [D('node1', V, 2), '64', String(V), String(SYS)]);
    expect(big.exitCode).toBe(6);
    expect(big.stderr).toMatch(
      /^ERROR: resize: disk 2 of VM \d+ is a COW clone of a 16 MiB image and cannot grow to 64 MiB/m,
    );

    await tm.ok('delete', [`node1:${DS}/${SYS}/${V}/`, String(V), String(SYS)]);
    expect((await lvNames('node1')).filter((n) => n.startsWith(`one-${V}-`))).toEqual([]);
    expect(await cowstackDevices('node1')).toEqual([]);
    expect(await exists('node1', vmDir(V))).toBe(false);
  });
});

describe.sequential('a persistent disk: undeploy and redeploy through ln/mvds', () => {
  const C = pattern(2 * MiB, 64);
  const E = pattern(1 * MiB, 65);
  const withC = overlay(IMG, 8 * MiB, C);
  const withCE = overlay(withC, 1 * MiB, E);

  it('ln on node2, writes, undeploy (mvds + delete) syncs back into the image lineage', async () => {
    await tm.ok('ln', [`${FE}:${REPO_VG}/${img}`, D('node2', PVM, 0), String(PVM), String(IDS)]);
    await checkDisk('node2', PVM, 0, IMG);
    await writeAt(tb, 'node2', `${vmDir(PVM)}/disk.0`, 8, C);
    await tm.ok('mvds', [D('node2', PVM, 0), `${FE}:${REPO_VG}/${img}`, String(PVM), String(IDS)]);
    await tm.ok('delete', [`node2:${DS}/${SYS}/${PVM}`, String(PVM), String(SYS)]);
    expect(await lvTags('node2', `${img}-p1`)).toEqual(
      expect.arrayContaining(['cowstack_state:committed', `cowstack_parent:${await lvUuid('node2', img)}`]),
    );
    expect(await lvTags('node2', `one-${PVM}-0`)).toBeUndefined();
    expect(await exists('node2', vmDir(PVM))).toBe(false);
    expect(await cowstackDevices('node2')).toEqual([]);
    // The image itself was never written.
    expect(await lvTags('node2', img)).toContain(`cowstack_sha256:${sha256(IMG)}`);
  });

  it('redeploy on node1 sees the synced-back data; a second undeploy makes the next sync-back', async () => {
    await tm.ok('ln', [`${FE}:${REPO_VG}/${img}`, D('node1', PVM, 0), String(PVM), String(IDS)]);
    await checkDisk('node1', PVM, 0, withC);
    await writeAt(tb, 'node1', `${vmDir(PVM)}/disk.0`, 1, E);
    await tm.ok('mvds', [D('node1', PVM, 0), `${FE}:${REPO_VG}/${img}`, String(PVM), String(IDS)]);
    await tm.ok('delete', [`node1:${DS}/${SYS}/${PVM}/`, String(PVM), String(SYS)]);
    expect(await lvTags('node1', `${img}-p2`)).toEqual(
      expect.arrayContaining(['cowstack_state:committed', `cowstack_parent:${await lvUuid('node1', `${img}-p1`)}`]),
    );
    // What a third deploy would read: map the head read-only and check it.
    const m = await clusterCli(tb, 'node1', ['clone', 'map', `${img}-p2`]);
    expect(m.exitCode, m.stderr).toBe(0);
    expect(await deviceSha(tb, 'node1', m.json.result.device)).toBe(sha256(withCE));
    expect((await clusterCli(tb, 'node1', ['clone', 'unmap', `${img}-p2`])).exitCode).toBe(0);
  });

  it('ds rm, once no VM uses them: the saved image, then the image with its persistent lineage', async () => {
    for (const [id, name] of [
      [SAVEDID, saved],
      [IMGID, img],
    ] as const) {
      const r = await tm.ds.ok('rm', [String(id)], dsAction({ ID: id, SOURCE: `${REPO_VG}/${name}` }));
      process.stderr.write(`[tm] ds rm ${name}: ${r.seconds} s\n`);
    }
    const left = (await lvNames('node1')).filter((n) => n === saved || n === img || n.startsWith(`${img}-`));
    expect(left).toEqual([]);
    for (const node of ['node1', 'node2']) expect(await cowstackDevices(node)).toEqual([]);
  });
});
