/**
 * Repository sizing on a real LVM: the VG `cluster init` made (global setup, default
 * --max-lvs 2000) has a metadata area that holds what 2000 tagged LVs need, doctor and status
 * report capacity, and the metadata area fills exactly where the report says it will, with
 * doctor warning before it does.
 *
 * How the fill stays fast: LVM keeps every LV's tags in the VG metadata, so one LV given
 * about 256 KiB of tags per lvchange uses as much metadata as about 500 clones would, in one
 * locked metadata write instead of 500 lvcreates (each several seconds under TCG).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Check } from '../../src/core/doctor.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine, repoDevice } from './testbeds.js';
import { cowstack } from './cli.js';
import { REPO_VG } from './cluster.js';

let tb: Testbed;
beforeAll(async () => {
  tb = await attachMine();
});

/** Measured on this testbed: a clone LV with cowstack's tags takes about 490 bytes of VG metadata. */
const CLONE_METADATA_BYTES = 490;
/** What LVM's default 1 MiB area leaves free in a new VG (measured: vg_mda_free 520192). */
const DEFAULT_MDA_FREE = 520192;
const PAD = 'sizing_pad';

async function mda(): Promise<{ size: number; free: number }> {
  const r = await tb.ssh('node1', [
    'vgs',
    '--nolocking',
    '--noheadings',
    '--units',
    'b',
    '--nosuffix',
    '-o',
    'vg_mda_size,vg_mda_free',
    REPO_VG,
  ]);
  expect(r.exitCode, r.stderr).toBe(0);
  const [size, free] = r.stdout.trim().split(/\s+/).map(Number);
  return { size: size!, free: free! };
}

/** The physical sector size the repository LUN reports on node1, as lvmlockd saw it at vgcreate. */
async function lunSectorBytes(): Promise<number> {
  const r = await tb.ssh('node1', ['blockdev', '--getpbsz', repoDevice(tb)]);
  expect(r.exitCode, r.stderr).toBe(0);
  return Number(r.stdout.trim());
}

async function doctorChecks(): Promise<Record<string, Check>> {
  const r = await cowstack(tb, ['--host', 'node1', '--json', 'doctor', '--vg', REPO_VG]);
  return Object.fromEntries(r.json.result.checks.map((c: Check) => [c.id, c]));
}

afterAll(async () => {
  await tb?.ssh('node1', ['lvremove', '-y', `${REPO_VG}/${PAD}`]);
});

describe('repository sizing', () => {
  it('cluster init sized the metadata area for 2000 LVs; doctor and status report capacity', async () => {
    const m = await mda();
    expect(m.free).toBeGreaterThan(2000 * CLONE_METADATA_BYTES);
    expect(m.free).toBeGreaterThan(4 * DEFAULT_MDA_FREE);
    const checks = await doctorChecks();
    for (const id of ['capacity:metadata', 'capacity:leases', 'capacity:extents'])
      expect(checks[id]?.status, `${id}: ${checks[id]?.message}`).toBe('ok');
    // 4096-byte sectors make 8 MiB leases, 512-byte ones 1 MiB leases (bench lockio measured what
    // each costs). The suite's LUNs report 512 (global-setup.ts; COWSTACK_TESTBED_LUN_PBS=4096
    // runs it on 4K); repositories.test proves the 4K layout on its second LUN.
    const sector = await lunSectorBytes();
    const leaseMiB = sector === 4096 ? 8 : 1;
    expect(checks['capacity:leases']!.message).toContain(`lvmlock (${leaseMiB} MiB each`);
    expect(checks['repository:lock-io']!.message).toMatch(
      new RegExp(`^sanlock leases on ${sector}-byte sectors: .* about ${leaseMiB} MiB `),
    );
    const s = await cowstack(tb, ['--host', 'node1', '--json', 'status', '--vg', REPO_VG], { check: true });
    const c = s.json.result.capacity;
    expect(c.metadata.freeBytes).toBe(m.free);
    expect(c.metadata.areaBytes).toBe(m.size);
    expect(c.leases.alignBytes).toBe(leaseMiB * 2 ** 20);
    expect(c.extents.free).toBeGreaterThan(0);
    // cowstack metrics publishes the same capacity (the file node_exporter's textfile collector reads).
    const dir = await mkdtemp(path.join(tmpdir(), 'cowstack-metrics-'));
    try {
      const file = path.join(dir, 'cowstack.prom');
      const mt = await cowstack(tb, ['--host', 'node1', '--json', 'metrics', '--vg', REPO_VG, '--output', file], {
        check: true,
      });
      const prom = await readFile(file, 'utf8');
      const sample = (name: string) => Number(new RegExp(`^${name}\\{vg="${REPO_VG}"\\} (\\S+)$`, 'm').exec(prom)?.[1]);
      expect(sample('cowstack_vg_free_extents')).toBe(c.extents.free);
      expect(mt.json.result.capacity.extents.free).toBe(c.extents.free);
      expect(sample('cowstack_vg_metadata_free_bytes')).toBe(m.free);
      expect(sample('cowstack_vg_lease_slots')).toBe(c.leases.slots);
      expect(sample('cowstack_interrupted_operations')).toBe(0);
      expect(prom).toMatch(/^# TYPE cowstack_vg_free_extents gauge$/m);
      expect(await readdir(dir)).toEqual(['cowstack.prom']);
      process.stderr.write(
        `[sizing] metrics: ${prom
          .split('\n')
          .filter((l) => l.startsWith('cowstack_vg'))
          .join(' | ')}\n`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses (6) a clone whose COW the VG cannot hold before writing anything, and says what to do', async () => {
    const img = `szimg${Date.now().toString(36).slice(-4)}`;
    const cli = (args: string[]) => cowstack(tb, ['--host', 'node1', '--json', ...args, '--vg', REPO_VG]);
    expect((await cli(['image', 'create', img, '--size', '8M'])).exitCode).toBe(0);
    expect((await cli(['image', 'seal', img])).exitCode).toBe(0);
    const r = await cli(['clone', 'create', `${img}c`, '--from', img, '--cow-size', '64G']);
    expect(r.exitCode, r.stderr).toBe(6);
    expect(r.json.message).toMatch(new RegExp(`^${REPO_VG} has .* free, the COW of ${img}c needs 64 GiB$`));
    expect(r.json.hint).toMatch(/grow the LUN/);
    // Nothing was begun: no LV, nothing in flight.
    expect((await tb.ssh('node1', ['lvs', '--nolocking', `${REPO_VG}/${img}c`])).exitCode).not.toBe(0);
    const st = await cli(['status']);
    expect(st.json.result.inFlight).toEqual([]);
    expect((await cli(['image', 'rm', img])).exitCode).toBe(0);
  });

  it('fills the metadata area where capacity said, and doctor warns before it is full', async () => {
    const start = await mda();
    const mk = await tb.ssh('node1', [
      'lvcreate',
      '-an',
      '-Zn',
      '-Wn',
      '--setautoactivation',
      'n',
      '-l',
      '1',
      '-n',
      PAD,
      REPO_VG,
    ]);
    expect(mk.exitCode, mk.stderr).toBe(0);
    let warned = false;
    let biggest = 0;
    for (let round = 1; round <= 40; round++) {
      const before = await mda();
      // 128 tags of about 2000 characters, made on the guest (ssh passes one command string).
      const r = await tb.sh(
        'node1',
        `set -e; a=(); p=$(printf '%2000s' '' | tr ' ' p); ` +
          `for k in $(seq 1 128); do a+=(--addtag "r${round}k$k$p"); done; lvchange "\${a[@]}" ${REPO_VG}/${PAD}`,
      );
      if (r.exitCode !== 0) {
        // Refused because the next copy did not fit in what vg_mda_free said was left.
        expect(r.stderr).toMatch(/Failed to write VG|metadata too large|Failed to update metadata/i);
        expect(before.free).toBeLessThan(biggest * 1.05);
        expect(warned, 'doctor warned before the area was full').toBe(true);
        // Everything the VG took before refusing: far more than the default area could.
        expect(start.free - before.free).toBeGreaterThan(4 * DEFAULT_MDA_FREE);
        return;
      }
      const after = await mda();
      biggest = Math.max(biggest, before.free - after.free);
      if (!warned && (start.size / 2 - after.free) / (start.size / 2) >= 0.8) {
        const m = (await doctorChecks())['capacity:metadata']!;
        expect(m.status, m.message).toBe('warning');
        expect(m.fix).toMatch(/--max-lvs/);
        warned = true;
      }
    }
    throw new Error('the metadata area never filled');
  }, 300_000);
});
