import { nodeSession } from '../../src/core/node.js';
import { describe, expect, it } from 'vitest';
import { nodeStatus, tree, usageOf } from '../../src/core/report.js';
import { parseDmLines } from '../../src/tools/dmsetup.js';
import { MiB, U, VG, chainDevs, chainRows, cloneRow, expectAllLvUuids, expectObserve, ro, rw } from './repoFixtures.js';
import { capture, deltaDumpArgv, leaseDump, recorder, vgsArgv, vgsJson } from './support.js';

// SYNTHETIC unless marked REAL: LV rows and dm devices come from repoFixtures, dmsetup outputs are hand-written.

const line = (text: string) => parseDmLines(text)[0];

describe('usageOf', () => {
  it('reports an active snapshot: percent and bytes, no warning below the threshold', () => {
    expect(usageOf(line('0 131072 snapshot 8192/32768 16'), 80)).toEqual({
      state: 'active',
      usedPercent: 25,
      allocatedBytes: 8192 * 512,
      totalBytes: 16 * MiB,
      warning: undefined,
    });
    expect(usageOf(line('0 131072 snapshot 26208/32768 112'), 80)?.usedPercent).toBe(79.98);
    expect(usageOf(line('0 131072 snapshot 26208/32768 112'), 80)?.warning).toBeUndefined();
  });

  it('warns from the threshold on', () => {
    expect(usageOf(line('0 131072 snapshot 26215/32768 112'), 80)).toMatchObject({
      usedPercent: 80,
      warning: 'COW 80% full (warning at 80%): grow it with cowstack clone grow',
    });
    expect(usageOf(line('0 131072 snapshot 32768/32768 128'), 95)?.warning).toBe(
      'COW 100% full (warning at 95%): grow it with cowstack clone grow',
    );
    expect(usageOf(line('0 131072 snapshot 27853/32768 112'), 90)?.warning).toBeUndefined();
  });

  it('counts a fresh COW (header only) as almost empty', () => {
    expect(usageOf(line('0 131072 snapshot 16/32768 16'), 80)).toMatchObject({
      state: 'active',
      usedPercent: 0.05,
      warning: undefined,
    });
  });

  it('warns about an overflowed snapshot (reads still work)', () => {
    expect(usageOf(line('0 131072 snapshot Overflow'), 80)).toEqual({
      state: 'overflow',
      warning: 'COW full: writes fail, reads still work; grow or discard it',
    });
  });

  it.each([
    ['Invalid', 'invalid'],
    ['Merge failed', 'merge-failed'],
    ['Unknown', 'unknown'],
  ])('warns that a %s snapshot cannot be trusted', (status, state) => {
    expect(usageOf(line(`0 131072 snapshot ${status}`), 80)).toEqual({
      state,
      warning: `snapshot is ${state}: its data cannot be trusted`,
    });
  });

  it('is undefined for no status and for other targets', () => {
    expect(usageOf(undefined, 80)).toBeUndefined();
    expect(usageOf(line('0 32768 linear 8:16 198656'), 80)).toBeUndefined();
  });
});

// SYNTHETIC: `dmsetup status` of the mapped chain plus an orphan device.
const STATUS = [
  'vg-image: 0 131072 linear 8:16 2048',
  `${ro(U.c1)}: 0 131072 snapshot 96/32768 16`,
  `${ro(U.c2)}: 0 131072 snapshot 1040/32768 16`,
  `${rw(U.c3)}: 0 131072 snapshot Overflow`,
  `cowstack-ro-${U.s2.replace(/-/g, '')}: 0 131072 snapshot 48/32768 16`,
  '',
].join('\n');

describe('nodeStatus', () => {
  it('lists cowstack devices with table and usage, flags orphans, lists active LVs', async () => {
    const orphan = {
      name: `cowstack-ro-${U.s2.replace(/-/g, '')}`,
      uuid: `COWSTACK-ro-${U.s2.replace(/-/g, '')}`,
      open: 0,
      minor: 20,
      readOnly: true,
    };
    // Another repository's clone arriving by migration: its placeholder (an `error` table) stands
    // on no LV's device, and its LV is in that other VG (lvs of every VG lists it): not an orphan.
    const elsewhere = U.d1.replace(/-/g, '');
    const placeholder = { name: `cowstack-rw-${elsewhere}`, uuid: `COWSTACK-rw-${elsewhere}`, open: 0, minor: 21 };
    const devs = [...chainDevs(1), orphan, { ...placeholder, readOnly: false }];
    const r = expectObserve(recorder(), chainRows({ mapped: true }), devs).expect(['dmsetup', 'status'], {
      kind: 'read',
      stdout: STATUS,
    });
    const tables: Record<string, string> = {
      [ro(U.c1)]: '0 131072 snapshot 253:3 253:4 P 8',
      [ro(U.c2)]: '0 131072 snapshot 253:5 253:6 P 16',
      [rw(U.c3)]: '0 131072 snapshot 253:7 253:8 PO 128',
      [orphan.name]: '0 131072 snapshot 253:3 253:19 P 16',
      [placeholder.name]: '0 131072 error',
    };
    r.expect(['dmsetup', 'table'], {
      kind: 'read',
      stdout: Object.entries(tables)
        .map(([n, t]) => `${n}: ${t}\n`)
        .join(''),
    });
    expectAllLvUuids(r, [U.image, U.d1]);
    r.expect(['ls', '-1', '-A', '--', '/var/lib/cowstack/journal'], { kind: 'read', stdout: '' });
    const s = await nodeStatus(nodeSession({ runner: r, vg: VG }));
    expect(
      s.devices.map((d) => [d.name, d.role, d.clone, d.open, d.readOnly, d.table, d.usage?.state, d.problem]),
    ).toEqual([
      [ro(U.c1), 'ro', 'c1', 1, true, tables[ro(U.c1)], 'active', undefined],
      [ro(U.c2), 'ro', 'c2', 1, true, tables[ro(U.c2)], 'active', undefined],
      [rw(U.c3), 'rw', 'c3', 1, false, tables[rw(U.c3)], 'overflow', undefined],
      [
        orphan.name,
        'ro',
        undefined,
        0,
        true,
        tables[orphan.name],
        'active',
        'no LV in the repository has this uuid (orphan: cowstack recover)',
      ],
    ]);
    expect(s.activeLvs).toEqual([
      { name: 'image', kind: 'image', state: 'sealed', exclusive: false, open: true },
      { name: 'c1', kind: 'clone', state: 'committed', exclusive: false, open: true },
      { name: 'c2', kind: 'clone', state: 'committed', exclusive: false, open: true },
      { name: 'c3', kind: 'clone', state: 'live', exclusive: true, open: true },
    ]);
    expect(s.warnings).toEqual([
      'c3: COW full: writes fail, reads still work; grow or discard it',
      `${orphan.name}: no LV in the repository has this uuid (orphan: cowstack recover)`,
    ]);
    expect(s.inFlight).toEqual([]);
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });
});

describe('tree', () => {
  // Live clones only: c3 (minor 8, lease at 70254592 + 8 MiB) held by host 1, d1 (lease at 70254592) by host 2.
  // SYNTHETIC leases in the real layout; REAL delta leases of hosts 1 (node1) and 2 (node2), lockspace renamed.
  const rows = [...chainRows({ mapped: true }), cloneRow('d1', U.d1, U.image, { size: 8 * MiB })];
  const C3_HELD = leaseDump({ offset: 78643200, vg: VG, uuid: U.c3, owner: 1, timestamp: 10398, lver: 3 });
  const D1_HELD = leaseDump({ offset: 70254592, vg: VG, uuid: U.d1, owner: 2, timestamp: 10377 });
  const DELTA = capture('sanlock-dump-delta.txt').replace(/lvm_repo/g, '  lvm_vg');
  const ONLY_NODE1 = vgsJson([{ vg_name: 'vg', vg_tags: ['cowstack_host:1:node1'] }]);

  const expectTreeReads = (delta: { stdout?: string; exitCode?: number; stderr?: string }) =>
    expectObserve(recorder(), rows, chainDevs(1))
      .expect(['dmsetup', 'status'], { kind: 'read', stdout: STATUS.replace('Overflow', '27853/32768 112') })
      .expect(vgsArgv('vg'), { kind: 'read', stdout: ONLY_NODE1 })
      .expect(deltaDumpArgv('vg'), { kind: 'read', ...delta })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:78643200:1048576'], {
        kind: 'read',
        stdout: C3_HELD,
      })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:70254592:1048576'], {
        kind: 'read',
        stdout: D1_HELD,
      });

  it('shows the lineage with where each clone is mapped, its COW usage and who holds it', async () => {
    const r = expectTreeReads({ stdout: DELTA });
    const t = await tree(nodeSession({ runner: r, vg: VG }), { warnPercent: 80 });
    expect(t).toHaveLength(1);
    const [image] = t;
    expect(image).toMatchObject({ name: 'image', kind: 'image', state: 'sealed', sizeBytes: 64 * MiB });
    expect(image!.children.map((c) => c.name)).toEqual(['c1', 'd1']);
    const c1 = image!.children[0]!;
    expect(c1).toMatchObject({
      name: 'c1',
      state: 'committed',
      mappedHere: 'ro',
      chunkSectors: 8,
      usage: { state: 'active', usedPercent: 0.29 },
    });
    expect(c1.activeOn).toBeUndefined(); // committed: its lease is not read
    const c3 = c1.children[0]!.children[0]!;
    expect(c3).toMatchObject({
      name: 'c3',
      state: 'live',
      mappedHere: 'rw',
      activeOn: 'node1',
      chunkSectors: 128,
      usage: { usedPercent: 85, warning: expect.stringContaining('85% full') },
    });
    // host 2 has no cowstack_host tag: its delta lease names it
    expect(image!.children[1]).toMatchObject({ name: 'd1', activeOn: 'node2', children: [] });
    expect(image!.children[1]!.mappedHere).toBeUndefined();
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('shows only the host id of a holder nothing names', async () => {
    const r = expectTreeReads({ exitCode: 1, stderr: 'open error -2 /dev/mapper/vg-lvmlock\n' });
    const [image] = await tree(nodeSession({ runner: r, vg: VG }), { warnPercent: 80 });
    expect(image!.children[0]!.children[0]!.children[0]).toMatchObject({ name: 'c3', activeOn: 'node1' });
    expect(image!.children[1]).toMatchObject({ name: 'd1', activeOn: 'host_id 2' });
    r.verify();
  });
});
