/**
 * More than one repository on the real stack (README "Growing a site: several repositories"):
 * a second LUN on the testbed's iSCSI target (a sparse file, `--lun 2`), the nodes rescan
 * their sessions, `cluster init`/`join` make the shared VG repo2 on it, `image copy` puts a
 * verified, sealed copy of a repo image there, and the TM driver, with datastore 101 mapped
 * to repo2, deploys a VM disk in repo2 and refuses an image of repo; repo's status and recover
 * leave that disk alone, doctor and metrics cover both VGs. Checksums are computed
 * on the host from the data written and compared with `sha256sum` read on the nodes.
 * Everything it adds (VG, SCSI disks, LUN, file) is removed again, so later files on this
 * cluster see the testbed as it was.
 */
import { execa } from 'execa';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Testbed } from '../testbed/index.js';
import { clusterCli, cowstack } from './cli.js';
import { MiB, deviceSha, pattern, sha256 } from './data.js';
import { DS, FE, tmHarness, type TmHarness } from './tm-harness.js';
import { attachMine } from './testbeds.js';

const VG2 = 'repo2';
const CONTENT = pattern(16 * MiB, 1201);
const SHA = sha256(CONTENT);
let tb: Testbed;
let tm: TmHarness;
let lunFile: string;
let controlPort: number;

const lun2 = () => `/dev/disk/by-path/ip-${tb.portal}-iscsi-${tb.targetIqn}-lun-2`;
const nodes = () => tb.nodes.map((n) => n.name);
const tgtLun2 = (op: string, more: string[] = []) =>
  execa(
    'tgtadm',
    ['-C', String(controlPort), '--lld', 'iscsi', '--op', op, '--mode', 'logicalunit'].concat([
      '--tid',
      '1',
      '--lun',
      '2',
      ...more,
    ]),
    { reject: false },
  );

async function sh(node: string, script: string, timeoutMs = 300_000): Promise<string> {
  const r = await tb.sh(node, script, { timeoutMs });
  expect(r.exitCode, `${node}: ${script}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The names of the LVs of `vg`, read on node1 without locks. */
async function lvNames(vg: string): Promise<string[]> {
  return (await sh('node1', `lvs --nolocking --noheadings -o lv_name ${vg}`)).split(/\s+/).filter(Boolean);
}

beforeAll(async () => {
  tb = await attachMine();
  const state = JSON.parse(await fsp.readFile(path.join(tb.stateDir, 'state.json'), 'utf8'));
  controlPort = state.tgtd.controlPort;
  // 3 GiB sparse: on 4K sectors lvmlock starts at 1 GiB (README "Sizing").
  lunFile = path.join(tb.stateDir, 'lun2.img');
  await fsp.writeFile(lunFile, '');
  await fsp.truncate(lunFile, 3 * 2 ** 30);
  const made = await tgtLun2('new', ['-b', lunFile]);
  expect(made.exitCode, made.stderr).toBe(0);
  for (const n of nodes())
    await sh(
      n,
      `iscsiadm -m session --rescan >/dev/null; udevadm settle; for i in $(seq 60); do \
      [ -e '${lun2()}' ] && exit 0; sleep 0.5; done; echo 'no LUN 2' >&2; exit 1`,
    );
  await cowstack(tb, ['--host', 'node1', '--json', 'cluster', 'init', lun2(), '--vg', VG2, '--host-id', '1'], {
    check: true,
    timeoutMs: 900_000,
  });
  for (const n of tb.nodes.filter((x) => x.hostId !== 1))
    await cowstack(tb, ['--host', n.name, '--json', 'cluster', 'join', '--vg', VG2, '--host-id', String(n.hostId)], {
      check: true,
      timeoutMs: 900_000,
    });
  const file = path.join(tb.stateDir, 'repos-img.raw');
  await fsp.writeFile(file, CONTENT);
  const imported = await clusterCli(tb, 'node1', ['image', 'import', 'rimg', file]);
  expect(imported.exitCode, imported.stderr).toBe(0);
  await fsp.rm(file);
  tm = await tmHarness(tb);
  await fsp.appendFile(path.join(tm.dir, 'cowstack.yaml'), `repositories:\n  "100": ${VG2}\n  "101": ${VG2}\n`);
}, 1_800_000);

afterAll(async () => {
  if (!tb) return;
  // Best effort, each step on its own: what one could not undo must not keep the rest.
  await tb.ssh('node1', ['lvremove', '-y', 'repo/rimg']);
  for (const n of nodes()) await tb.ssh(n, ['vgchange', '-an', VG2]);
  await tb.ssh('node1', ['lvremove', '-y', VG2]);
  for (const n of nodes().filter((x) => x !== 'node1')) await tb.ssh(n, ['vgchange', '--lockstop', VG2]);
  await tb.ssh('node1', ['vgremove', '-y', VG2]);
  for (const n of nodes())
    await tb.sh(n, `d=$(readlink -f '${lun2()}') && echo 1 > /sys/block/$(basename "$d")/device/delete`);
  await tgtLun2('delete');
  if (lunFile) await fsp.rm(lunFile, { force: true });
  if (tm) await fsp.rm(tm.dir, { recursive: true, force: true });
}, 600_000);

describe('several repositories on one target', () => {
  it('image copy puts a verified, sealed copy into repo2; again it finds it and does nothing', async () => {
    const args = ['--host', 'node2', '--json', 'image', 'copy', 'rimg', '--vg', 'repo', '--to-vg', VG2];
    const first = await cowstack(tb, args, { check: true });
    expect(first.json.result).toMatchObject({ action: 'copied', vg: VG2, fromVg: 'repo', sha256: SHA });
    // Read back independently on the other node: the data, read-only, sealed, not active.
    const attrs = await sh('node1', `lvs --nolocking --noheadings -o lv_attr,lv_tags ${VG2}/rimg`);
    expect(attrs.trim()).toMatch(/^-r.-.*cowstack_state:sealed/);
    await sh('node1', `lvchange -asy ${VG2}/rimg`);
    expect(await deviceSha(tb, 'node1', `/dev/mapper/${VG2}-rimg`)).toBe(SHA);
    await sh('node1', `lvchange -an ${VG2}/rimg`);
    const again = await cowstack(tb, args, { check: true });
    expect(again.json.result).toMatchObject({ action: 'none', sha256: SHA });
    expect(await lvNames(VG2)).toEqual(['rimg']);
  });

  it("the TM deploys datastore 101's disk in repo2 from its image there, refuses repo's image", async () => {
    const d = `node2:${DS}/101/7/disk.0`;
    const refused = await tm.run('clone', [`${FE}:repo/rimg`, d, '7', '1']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain(
      'image SOURCE repo/rimg is not in VG repo2, the repository of system datastore 101',
    );
    expect(await lvNames(VG2)).toEqual(['rimg']);
    await tm.ok('clone', [`${FE}:${VG2}/rimg`, d, '7', '100']);
    expect(await deviceSha(tb, 'node2', '/var/lib/one/datastores/101/7/disk.0')).toBe(SHA);
    expect((await lvNames(VG2)).sort()).toEqual(['one-7-0', 'rimg']);
    expect(await lvNames('repo')).not.toContain('one-7-0');

    // repo's view of node2 leaves repo2's disk alone: its status lists no device of repo2 (no
    // orphan), its recover changes nothing, and the disk reads the same after both.
    const uuid = (await sh('node1', `lvs --nolocking --noheadings -o lv_uuid ${VG2}/one-7-0`)).trim();
    const disk = `cowstack-rw-${uuid.replace(/-/g, '')}`;
    const status = await clusterCli(tb, 'node2', ['status']);
    expect(status.exitCode, status.stderr).toBe(0);
    expect(status.json.result.devices.map((d: { name: string }) => d.name)).not.toContain(disk);
    expect(status.json.result.warnings.join('\n')).not.toContain(disk);
    const rec = await clusterCli(tb, 'node2', ['recover']);
    expect(rec.exitCode, rec.stderr).toBe(0);
    expect(JSON.stringify(rec.json.result.actions)).not.toContain(disk);
    await sh('node2', `dmsetup info ${disk} >/dev/null`);
    expect(await deviceSha(tb, 'node2', '/var/lib/one/datastores/101/7/disk.0')).toBe(SHA);
    // A hand-over of that disk to node1 under way: its placeholder there (an `error` table on
    // none of repo2's LVs, the COW still node2's) is repo2's too, not an orphan in repo's status.
    const inVg2 = (args: string[]) => cowstack(tb, ['--host', 'node1', '--json', ...args, '--vg', VG2]);
    const prepared = await inVg2(['clone', 'migrate', 'prepare', 'one-7-0']);
    expect(prepared.exitCode, prepared.stdout + prepared.stderr).toBe(0);
    expect((await sh('node1', `dmsetup table ${disk}`)).trim()).toMatch(/ error$/);
    const during = await clusterCli(tb, 'node1', ['status']);
    expect(during.exitCode, during.stderr).toBe(0);
    expect(during.json.result.devices.map((d: { name: string }) => d.name)).not.toContain(disk);
    expect(during.json.result.warnings.join('\n')).not.toContain(disk);
    const aborted = await inVg2(['clone', 'migrate', 'abort', 'one-7-0']);
    expect(aborted.exitCode, aborted.stdout + aborted.stderr).toBe(0);
    expect((await tb.ssh('node1', ['dmsetup', 'info', disk])).exitCode).not.toBe(0);
    // With both repositories configured, doctor checks each VG and metrics labels each VG's samples.
    const both = { COWSTACK_CONFIG: path.join(tm.dir, 'cowstack.yaml') };
    const doc = await cowstack(tb, ['--host', 'node2', '--json', 'doctor'], { env: both });
    expect(doc.json.result.vgs).toEqual(['repo', VG2]);
    const ofVg = (vg: string) =>
      (doc.json.result.checks as Array<{ id: string; vg?: string; status: string; message: string }>).filter(
        (c) => c.vg === vg,
      );
    for (const vg of ['repo', VG2]) {
      expect(ofVg(vg).find((c) => c.id === 'repository:lockspace')?.status, vg).toBe('ok');
      expect(ofVg(vg).find((c) => c.id === 'capacity:leases')?.status, vg).toBe('ok');
    }
    // LUN 2 keeps tgt's 4096-byte physical sectors (the suite's LUNs report 512): every run
    // proves the 4K lease layout here. lvmlockd spaces the leases 8 MiB apart after 67 slots.
    expect((await sh('node1', `blockdev --getpbsz ${lun2()}`)).trim()).toBe('4096');
    expect(ofVg(VG2).find((c) => c.id === 'capacity:leases')?.message).toContain('(8 MiB each');
    const offsets = (await sh('node1', `lvs --nolocking --noheadings -o lv_lock_args ${VG2}`))
      .split(/\s+/)
      .filter(Boolean)
      .map((a) => Number(a.split(':')[1]));
    expect(offsets).toHaveLength(2);
    for (const o of offsets) expect(o % (8 * MiB) === 0 && o >= 67 * 8 * MiB, String(o)).toBe(true);
    const met = await cowstack(tb, ['--host', 'node2', '--json', 'metrics'], { env: both });
    expect(met.exitCode, met.stderr).toBe(0);
    const byVg = new Map(
      (met.json.result.repositories as Array<{ vg: string; cows: unknown[]; capacity: { lvCount: number } }>).map(
        (m) => [m.vg, m],
      ),
    );
    expect([...byVg.keys()]).toEqual(['repo', VG2]);
    expect(byVg.get(VG2)!.cows).toHaveLength(1);
    expect(byVg.get('repo')!.cows).toEqual([]);
    expect(byVg.get(VG2)!.capacity.lvCount).toBe(2);
    await tm.ok('delete', [`node2:${DS}/101/7`, '7', '101']);
    expect(await lvNames(VG2)).toEqual(['rimg']);
  });
});
