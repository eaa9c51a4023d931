/**
 * npm run bench -- migrate: what cowstack's disk hand-over adds to a live migration. A small
 * qemu VM (test/integration/qemuVm.ts) whose disk is a clone migrates between node1 and node2
 * MIGRATIONS times; for each: qemu's own migration time and downtime, the destination's prepare
 * (before the migration, VM still running), and the pause the hand-over adds (release on the
 * source + acquire on the destination + cont: from "source paused" to "destination resumed").
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pattern } from '../test/integration/data.js';
import { installQmpClient, migrateVm, qmp, startQemu, stopQemu } from '../test/integration/qemuVm.js';
import type { Testbed } from '../test/testbed/index.js';
import { table, timedCli, withCluster } from './harness.js';

const MIGRATIONS = Number(process.env.COWSTACK_BENCH_MIGRATIONS ?? 4);
const tag = Date.now().toString(36).slice(-4);

export async function benchMigrate(): Promise<void> {
  await withCluster(async (tb: Testbed) => {
    const img = `bmig-${tag}`;
    const clone = `bmigvm-${tag}`;
    const work = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-bench-'));
    await fsp.writeFile(path.join(work, 'img.raw'), pattern(16 * 2 ** 20, 7));
    await timedCli(tb, 'node1', ['image', 'import', img, path.join(work, 'img.raw'), '--vg', 'repo']);
    const made = await timedCli<{ device: string }>(tb, 'node1', [
      'clone',
      'create',
      clone,
      '--from',
      img,
      '--map',
      '--vg',
      'repo',
    ]);
    const device = made.json.device;
    await installQmpClient(tb);
    await startQemu(tb, 'node1', device, false);
    const rows: Array<Record<string, string | number>> = [];
    let from = 'node1';
    try {
      for (let i = 0; i < MIGRATIONS; i++) {
        const to = from === 'node1' ? 'node2' : 'node1';
        const prepare = await timedCli(tb, to, ['clone', 'migrate', 'prepare', clone, '--vg', 'repo']);
        await startQemu(tb, to, device, true);
        const m = await migrateVm(tb, from, to);
        if (m.status !== 'completed') throw new Error(`migration ${from} -> ${to}: ${m.status}`);
        const paused = process.hrtime.bigint();
        await stopQemu(tb, from);
        const release = await timedCli(tb, from, ['clone', 'migrate', 'release', clone, '--vg', 'repo']);
        const acquire = await timedCli(tb, to, ['clone', 'migrate', 'acquire', clone, '--vg', 'repo']);
        await qmp(tb, to, { execute: 'cont' });
        const pauseS = Number(process.hrtime.bigint() - paused) / 1e9;
        rows.push({
          migration: `${from} -> ${to}`,
          'qemu total ms': m.totalMs,
          'qemu downtime ms': m.downtimeMs,
          'prepare s': prepare.seconds.toFixed(1),
          'release s': release.seconds.toFixed(1),
          'acquire s': acquire.seconds.toFixed(1),
          'hand-over pause s': pauseS.toFixed(1),
          commands: `${release.commands}+${acquire.commands}`,
        });
        await timedCli(tb, from, ['clone', 'migrate', 'release', clone, '--vg', 'repo']); // ancestors go
        from = to;
      }
    } finally {
      await stopQemu(tb, from);
      await timedCli(tb, from, ['clone', 'discard', clone, '--force', '--vg', 'repo']).catch(() => undefined);
      await timedCli(tb, 'node1', ['image', 'rm', img, '--vg', 'repo']).catch(() => undefined);
      await fsp.rm(work, { recursive: true, force: true });
    }
    console.log(table(rows));
  });
}
