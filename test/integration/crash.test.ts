/**
 * Crash safety on a real kernel: the management process is killed (SIGKILL through
 * COWSTACK_FAULT_AFTER_STEP) in the middle of clone create, map and commit, and a guest is
 * powered off with a clone mapped, a TM-deployed VM and dirty blocks in a write-back cache.
 * After `cowstack recover` (or a re-run) the state is consistent, nothing is left that nothing
 * owns, and the data is intact.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CloneResult } from '../../src/core/clones.js';
import { backupPointName } from '../../src/core/vmDisks.js';
import type { DeviceStatus } from '../../src/core/report.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { clusterCli, cowstack } from './cli.js';
import { unreachableConfig } from './sshConfigVariant.js';
import { REPO_VG } from './cluster.js';
import { deviceSha, MiB, overlay, pattern, sha256, writeAt } from './data.js';
import { DS, FE, tmHarness } from './tm-harness.js';
import { hmp, installQmpClient, migrateVm, qmp, startQemu, stopQemu } from './qemuVm.js';

let tb: Testbed;
const run = Date.now().toString(36).slice(-5);
const n = (s: string) => `${s}-${run}`;
const IMG = pattern(16 * MiB, 7);
const img = n('cimg');

const ok = async (node: string, args: string[]) => {
  const r = await clusterCli(tb, node, args);
  expect(r.exitCode, `${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.json.result;
};
/** Runs a command that kills itself after `step` completed steps. */
const crashAfter = async (node: string, step: number, args: string[]) => {
  const r = await clusterCli(tb, node, args, { COWSTACK_FAULT_AFTER_STEP: String(step) });
  expect(r.exitCode, `expected a kill: ${r.stdout}${r.stderr}`).not.toBe(0);
  expect(r.stdout, 'killed before printing a result').toBe('');
};
const lvTags = async (node: string, name: string): Promise<string[] | undefined> => {
  const r = await tb.ssh(node, ['lvs', '--nolocking', '--noheadings', '-o', 'lv_tags', `${REPO_VG}/${name}`]);
  return r.exitCode === 0 ? r.stdout.trim().split(',') : undefined;
};
async function consistent(node: string): Promise<void> {
  const st = await ok(node, ['status']);
  expect(st.inFlight, 'nothing in flight').toEqual([]);
  expect(
    st.devices.filter((d: DeviceStatus) => d.problem),
    'no orphan devices',
  ).toEqual([]);
}

beforeAll(async () => {
  tb = await attachMine();
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-crash-'));
  await fsp.writeFile(path.join(dir, 'img.raw'), IMG);
  await ok('node1', ['image', 'import', img, path.join(dir, 'img.raw')]);
});

describe.sequential('killed in the middle', () => {
  it('clone create: recover removes the half-made clone; a re-run completes one', async () => {
    const c = n('k1');
    await crashAfter('node1', 2, ['clone', 'create', c, '--from', img]); // journal, lvcreate
    expect(await lvTags('node1', c)).toContain('cowstack_state:initializing');
    const r = await ok('node1', ['recover']);
    expect(r.actions).toContainEqual(expect.objectContaining({ op: 'create-clone', name: c, decision: 'undone' }));
    expect(await lvTags('node1', c)).toBeUndefined();

    // Killed again right after the lvcreate (created, held, zeroed, still initializing): a
    // plain re-run, without recover, finishes it.
    await crashAfter('node1', 2, ['clone', 'create', c, '--from', img]); // journal, lvcreate
    const again = await ok('node1', ['clone', 'create', c, '--from', img]);
    expect(again.action).toBe('completed');
    expect(await lvTags('node1', c)).toContain('cowstack_state:live');
    await consistent('node1');
    await ok('node1', ['clone', 'rm', c]);
  });

  it('clone map: recover tears the partial stack down and releases the COW', async () => {
    const c = n('k2');
    await ok('node1', ['clone', 'create', c, '--from', img]);
    await crashAfter('node1', 3, ['clone', 'map', c]); // journal, image -asy, COW -aey
    const r = await ok('node1', ['recover']);
    expect(r.actions).toContainEqual(expect.objectContaining({ op: 'map', name: c, decision: 'undone' }));
    const st = await ok('node1', ['status']);
    expect(st.devices).toEqual([]);
    expect(st.activeLvs).toEqual([]);
    // Released: the other node can take it.
    const m = await ok('node2', ['clone', 'map', c]);
    expect(await deviceSha(tb, 'node2', m.device)).toBe(sha256(IMG));
    await ok('node2', ['clone', 'discard', c]);
    await consistent('node1');
  });

  it('clone create --map: killed right after the live mark, recover releases the held COW', async () => {
    const c = n('k4');
    const sib = n('k4s');
    // A sibling mapped here keeps the image active, so the image activation (which would run
    // alongside the lvcreate) is not a step and the kill point is exact.
    await ok('node1', ['clone', 'create', sib, '--from', img]);
    await ok('node1', ['clone', 'map', sib]);
    await crashAfter('node1', 3, ['clone', 'create', c, '--from', img, '--map']); // journal, lvcreate, mark
    expect(await lvTags('node1', c)).toContain('cowstack_state:live');
    await ok('node1', ['recover']);
    const active = await tb.ssh('node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_active', `${REPO_VG}/${c}`]);
    expect(active.stdout.trim(), 'the COW released').toBe('');
    // Released, and an empty COW: the other node maps the image's bytes.
    const m = await ok('node2', ['clone', 'map', c]);
    expect(await deviceSha(tb, 'node2', m.device)).toBe(sha256(IMG));
    await ok('node2', ['clone', 'discard', c]);
    await ok('node1', ['clone', 'discard', sib]);
    await consistent('node1');
  });

  it('clone unmap (planned from the devices alone): killed after the snapshot went, recover releases', async () => {
    const c = n('k5');
    await ok('node1', ['clone', 'create', c, '--from', img]);
    const m = await ok('node1', ['clone', 'map', c]);
    const p = pattern(1 * MiB, 51);
    await writeAt(tb, 'node1', m.device, 2, p);
    await crashAfter('node1', 2, ['clone', 'unmap', c]); // journal, dmsetup remove
    const r = await ok('node1', ['recover']);
    expect(r.actions).toContainEqual(expect.objectContaining({ op: 'unmap', name: c, decision: 'finished' }));
    const st = await ok('node1', ['status']);
    expect(st.devices).toEqual([]);
    expect(st.activeLvs).toEqual([]);
    const again = await ok('node2', ['clone', 'map', c]);
    expect(await deviceSha(tb, 'node2', again.device)).toBe(sha256(overlay(IMG, 2 * MiB, p)));
    await ok('node2', ['clone', 'discard', c]);
    await consistent('node1');
  });

  it('clone commit: recover finishes it and the data is complete', async () => {
    const c = n('k3');
    await ok('node1', ['clone', 'create', c, '--from', img]);
    const m = await ok('node1', ['clone', 'map', c]);
    const p = pattern(3 * MiB, 41);
    await writeAt(tb, 'node1', m.device, 5, p);
    await crashAfter('node1', 2, ['clone', 'commit', c]); // journal, unmap
    expect(await lvTags('node1', c)).toContain('cowstack_state:live');
    const r = await ok('node1', ['recover']);
    expect(r.actions).toContainEqual(expect.objectContaining({ op: 'commit', name: c, decision: 'finished' }));
    expect(await lvTags('node1', c)).toContain('cowstack_state:committed');
    const ro = await ok('node2', ['clone', 'map', c]);
    expect(await deviceSha(tb, 'node2', ro.device)).toBe(sha256(overlay(IMG, 5 * MiB, p)));
    await ok('node2', ['clone', 'unmap', c]);
    await consistent('node1');
    await ok('node2', ['clone', 'rm', c]);
  });

  it('clone migrate release: killed after the snapshot went, the COW stays held; recover hands it over', async () => {
    const c = n('k6');
    const m = await ok('node1', ['clone', 'create', c, '--from', img, '--map']);
    const p = pattern(2 * MiB, 61);
    await writeAt(tb, 'node1', m.device, 3, p);
    await ok('node2', ['clone', 'migrate', 'prepare', c]);
    await crashAfter('node1', 2, ['clone', 'migrate', 'release', c]); // journal (with the record), unmap
    // The writable snapshot is gone but node1 still holds the COW: the destination must wait.
    const early = await clusterCli(tb, 'node2', ['clone', 'migrate', 'acquire', c, '--wait', '0']);
    expect(early.exitCode, early.stdout + early.stderr).toBe(4);
    const r = await ok('node1', ['recover']);
    expect(r.actions).toContainEqual(expect.objectContaining({ op: 'migrate-release', name: c, decision: 'finished' }));
    await consistent('node1');
    // The record the killed release journalled matches the COW: the acquire's check passes.
    const got = await ok('node2', ['clone', 'migrate', 'acquire', c, '--wait', '0']);
    expect(got).toMatchObject({ action: 'acquired' });
    expect(await deviceSha(tb, 'node2', m.device)).toBe(sha256(overlay(IMG, 3 * MiB, p)));
    await ok('node2', ['clone', 'discard', c]);
  });
});

describe.sequential('a node loses power with a clone mapped', () => {
  it("the other node takes the clone over once the dead node's lease expires, with every synced write", async () => {
    const c = n('pw');
    const inFlight = n('pj');
    await ok('node1', ['clone', 'create', c, '--from', img]);
    const m = await ok('node1', ['clone', 'map', c]);
    const p = pattern(4 * MiB, 51);
    await writeAt(tb, 'node1', m.device, 1, p); // O_DIRECT + fsync: acknowledged = on the LUN
    // And a VM deployed through the OpenNebula TM driver on the same node.
    const tm = await tmHarness(tb);
    const vm = 900 + (parseInt(run, 36) % 90);
    const vmDir = `${DS}/0/${vm}`;
    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, `node1:${vmDir}/disk.0`, String(vm), '1']);
    await writeAt(tb, 'node1', `${vmDir}/disk.0`, 3, pattern(1 * MiB, 52));
    // And a clone whose writes sit, dirty, in node1's write-back cache (its local disk).
    await ok('node1', ['cache', 'init', '/dev/vda']);
    const k = n('wb');
    await ok('node1', ['clone', 'create', k, '--from', img, '--cow-size', '8M']);
    const mk = await ok('node1', ['clone', 'map', k, '--cache', 'write']);
    const kd = pattern(2 * MiB, 53);
    await writeAt(tb, 'node1', mk.device, 1, kd); // O_DIRECT + fsync: committed in the cache
    const dirty = (await ok('node1', ['status'])).devices.find((d: DeviceStatus) => d.name === mk.writeback);
    expect(dirty.writeback.dirtyBlocks).toBeGreaterThan(0);
    // And a VM live-migrated to node2 (qemu's migration completed, node2 paused) whose disk
    // node1 had not released yet: the hand-over must wait for node1's lease, not for node1.
    const mv = n('mv');
    const md = (await ok('node1', ['clone', 'create', mv, '--from', img, '--map'])).device;
    await installQmpClient(tb);
    await startQemu(tb, 'node1', md, false);
    await hmp(tb, 'node1', 'qemu-io d0 "write -P 0x6e 2M 64k"');
    const mvData = overlay(IMG, 2 * MiB, Buffer.alloc(64 * 1024, 0x6e));
    await ok('node2', ['clone', 'migrate', 'prepare', mv]);
    await startQemu(tb, 'node2', md, true);
    expect((await migrateVm(tb, 'node1', 'node2')).status).toBe('completed');
    // And a live backup point killed right after its switch (the disk on its new top, resumed),
    // then written to there: after the cut no device is left, and only the new top's COW (the
    // snapshot header the switch's load wrote) tells recover that the switch was made.
    const lp = n('lp');
    const lm = await ok('node1', ['clone', 'create', lp, '--from', img, '--map']);
    const atSwitch = pattern(1 * MiB, 54);
    await writeAt(tb, 'node1', lm.device, 2, atSwitch);
    // Steps: journal, new COW, point device, its table, journal naming the COW, suspend,
    // hand-over, new table, resume.
    await crashAfter('node1', 9, ['backup', 'create', lp, '--file', `/var/tmp/${lp}.qcow2`, '--live']);
    const afterSwitch = pattern(1 * MiB, 55);
    await writeAt(tb, 'node1', lm.device, 4, afterSwitch);
    // An operation in flight when the power goes, cut the moment it died: its journal entry
    // must be on the node's own disk (/var/lib/cowstack, the testbed's state disk) for recover
    // to act on. Nothing syncs it: the journal directory is synchronous (chattr +S), so the
    // record was on disk before the lvcreate it precedes ran, well inside the kernel's 30 s
    // writeback delay.
    await crashAfter('node1', 2, ['clone', 'create', inFlight, '--from', img]); // journal, lvcreate
    await tb.powerOff('node1');
    const early2 = await clusterCli(tb, 'node2', ['clone', 'migrate', 'acquire', mv, '--wait', '0']);
    expect(early2.exitCode, 'acquire while the dead source still holds the lease').toBe(4);

    // Its blocks may sit only in node1's cache: node2 refuses it even after the lease expires.
    const wbRefused = await clusterCli(tb, 'node2', ['clone', 'map', k]);
    expect(wbRefused.exitCode, wbRefused.stdout).toBe(6);
    expect(wbRefused.json.message).toContain('write-back cache of node1');

    // oned's delete of the dead host's VM: node1 is unreachable, so the LVs are removed
    // through node2, which lvmlockd refuses while node1's lease is still valid.
    const early = await tm.run('delete', [`node1:${vmDir}/`, String(vm), '0']);
    expect(early.exitCode, early.stderr).toBe(4);
    expect(early.stderr).toMatch(/^INFO: delete: node1 is unreachable: removing 1 LV\(s\) of VM \d+ through node2/m);
    expect(early.stderr).toMatch(/node1 is unreachable and still holds the lease/);

    // node1 powers on and rejoins at once, with the project's own commands. Its lockstart waits
    // as long as node2 does (sanlock acquires a host_id that was not released only after
    // host_dead_seconds), so the two waits overlap; node2's takeover below must not depend on it.
    const rejoined = (async () => {
      await tb.boot('node1');
      const journal = await tb.sh('node1', 'cat /var/lib/cowstack/journal/*');
      const login = await cowstack(tb, ['--host', 'node1', '--json', 'initiator', 'login', tb.portal, tb.targetIqn]);
      const join = await cowstack(
        tb,
        ['--host', 'node1', '--json', 'cluster', 'join', '--vg', REPO_VG, '--host-id', '1'],
        { timeoutMs: 900_000 },
      );
      return { journal, login, join };
    })();

    const started = Date.now();
    let took: CloneResult;
    for (;;) {
      const r = await clusterCli(tb, 'node2', ['clone', 'map', c]);
      if (r.exitCode === 0) {
        took = r.json.result;
        break;
      }
      expect(r.exitCode, r.stdout + r.stderr).toBe(4); // only the lock may stand in the way
      expect(Date.now() - started, 'lease of the dead node never expired').toBeLessThan(420_000);
      await new Promise((res) => setTimeout(res, 15_000));
    }
    process.stderr.write(
      `[crash] node2 took over ${c} ${((Date.now() - started) / 1000).toFixed(0)}s after node1 died\n`,
    );
    expect(await deviceSha(tb, 'node2', took.device!)).toBe(sha256(overlay(IMG, 1 * MiB, p)));
    await ok('node2', ['clone', 'commit', c]);
    // The lease is gone: the migrated VM's disk is acquired with no hand-over record (a warning
    // says so) and its data is what node1's qemu wrote; the VM, paused until now, runs.
    const [paused] = await qmp(tb, 'node2', { execute: 'query-status' });
    expect((paused!.return as { running: boolean }).running, 'paused until the disk is handed over').toBe(false);
    const acquired = await clusterCli(tb, 'node2', ['clone', 'migrate', 'acquire', mv, '--wait', '0']);
    expect(acquired.exitCode, acquired.stdout + acquired.stderr).toBe(0);
    expect(acquired.json.result.warnings.join(' ')).toContain('no hand-over record');
    expect(await deviceSha(tb, 'node2', md)).toBe(sha256(mvData));
    await qmp(tb, 'node2', { execute: 'cont' });
    await stopQemu(tb, 'node2');
    await ok('node2', ['clone', 'discard', mv]);

    // The lease has expired: the retried delete succeeds through node2 and the VM is deployed
    // again there. node1 is up again by now, so the front-end's view of it is cut (its ssh
    // goes to a closed port, as while it rebooted or behind a partition).
    const cut = await tmHarness({ sshConfig: await unreachableConfig(tb, 'node1') });
    const late = await cut.run('delete', [`node1:${vmDir}/`, String(vm), '0']);
    expect(late.exitCode, late.stderr).toBe(0);
    expect(late.stderr).toMatch(/node1 is unreachable: removing 1 LV\(s\) of VM \d+ through node2/);
    expect(
      (await tb.ssh('node2', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', `${REPO_VG}/one-${vm}-0`]))
        .exitCode,
    ).not.toBe(0);
    await tm.ok('clone', [`${FE}:${REPO_VG}/${img}`, `node2:${vmDir}/disk.0`, String(vm), '1']);
    expect(await deviceSha(tb, 'node2', `${vmDir}/disk.0`)).toBe(sha256(IMG));
    await tm.ok('delete', [`node2:${vmDir}/`, String(vm), '0']);

    const { journal, login, join } = await rejoined;
    expect(journal.stdout, 'the journal entry written before the power-off is still there').toContain(`"${inFlight}"`);
    expect(login.exitCode, login.stderr).toBe(0);
    expect(join.exitCode, join.stdout + join.stderr).toBe(0);
    // recover re-attaches the cache LV over the COW and writes it back before anything else.
    const r = await ok('node1', ['recover']);
    // Every record is on disk before the step after it runs, `end` records too: the operations
    // that finished in the last seconds before the cut are not taken for interrupted ones (k's
    // map, say, which recover would otherwise settle by unmapping it).
    expect(r.actions.filter((a: { decision: string }) => a.decision === 'failed')).toEqual([]);
    const inFlightOps = r.actions.filter((a: { op: string }) => a.op !== 'write-back');
    expect(inFlightOps).toHaveLength(2);
    expect(inFlightOps).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ op: 'create-clone', name: inFlight, decision: 'undone' }),
        expect.objectContaining({ op: 'live-backup', name: lp, decision: 'finished' }),
      ]),
    );
    const wb = r.actions.filter((a: { op: string; name: string }) => a.name === k && a.op === 'write-back');
    expect(wb, 'k written back by the write-back pass').toHaveLength(1);
    process.stderr.write(
      `[crash] recover after power-off: ${r.actions.map((a: { detail?: string }) => a.detail).join('; ')}\n`,
    );
    expect(await lvTags('node1', inFlight), 'the half-made clone is gone').toBeUndefined();
    await consistent('node1');
    const k2 = await ok('node2', ['clone', 'map', k]);
    expect(await deviceSha(tb, 'node2', k2.device), 'every write acknowledged by the cache survived').toBe(
      sha256(overlay(IMG, 1 * MiB, kd)),
    );
    await ok('node2', ['clone', 'discard', k]);
    const ro = await ok('node1', ['clone', 'map', c]);
    expect(await deviceSha(tb, 'node1', ro.device)).toBe(sha256(overlay(IMG, 1 * MiB, p)));
    await ok('node1', ['clone', 'unmap', c]);
    // The live point: the disk as it was at the switch; the top holds the write made after it.
    const point = backupPointName(lp, 0);
    expect(await lvTags('node1', point)).toContain('cowstack_state:committed');
    const pm = await ok('node1', ['clone', 'map', point]);
    expect(await deviceSha(tb, 'node1', pm.device), 'the point: the disk at the switch').toBe(
      sha256(overlay(IMG, 2 * MiB, atSwitch)),
    );
    await ok('node1', ['clone', 'unmap', point]);
    const top = await ok('node1', ['clone', 'map', lp]);
    expect(await deviceSha(tb, 'node1', top.device), 'the top: the write after the switch too').toBe(
      sha256(overlay(overlay(IMG, 2 * MiB, atSwitch), 4 * MiB, afterSwitch)),
    );
    await ok('node1', ['clone', 'unmap', lp]);
  }, 900_000); // the lease expiry (~150 s), a reboot and a cluster join under TCG
});
