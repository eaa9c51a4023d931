/**
 * The live-migration hand-over (core/migrate.ts) with the recording runner: every step on the
 * depth-3 chain (image -> c1 -> c2 committed -> c3 live), each refusal, and what each undoes.
 * SYNTHETIC: LV rows and dm devices from repoFixtures; dmsetup table/status lines hand-written
 * in the kernel's format (snapshot status "ALLOCATED/TOTAL METADATA").
 */
import { describe, expect, it } from 'vitest';
import { abortMigration, acquireMigration, prepareMigration, releaseMigration } from '../../src/core/migrate.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  U,
  VG,
  chainDevs,
  chainRows,
  cloneRow,
  createRo,
  createRw,
  dmRemove,
  expectAncestorsReleased,
  expectObserve,
  expectObserveDevicesFirst,
  journalBegin,
  journalEnd,
  ro,
  rw,
  rwDev,
  snapTable,
  stillLive,
  W,
  R,
  ctxOf,
} from './repoFixtures.js';
import { conflictStderr, lvsArgv, lvsJson, recorder, rejectionOf } from './support.js';

const HANDOVER = 'cowstack_handover:2048:16';
const PLACEHOLDER = '0 131072 error';
const C3_TABLE = snapTable(`/dev/mapper/${ro(U.c2)}`, '/dev/mapper/vg-c3', 'PO', 128);
const SNAP_LINE = '0 131072 snapshot 253:7 253:8 PO 128\n';
const status = (allocated: number, meta: number) => `0 131072 snapshot ${allocated}/32768 ${meta}\n`;
// The read-only ancestors as prepare leaves them on the destination (nothing opens them yet).
const ANCESTOR_TABLES: Array<[string[], { kind: 'read'; stdout: string }]> = [
  [['dmsetup', 'table', ro(U.c1)], { kind: 'read', stdout: '0 131072 snapshot 253:3 253:4 P 8\n' }],
  [['dmsetup', 'table', ro(U.c2)], { kind: 'read', stdout: '0 131072 snapshot 253:5 253:6 P 16\n' }],
];
const tableOf = (name: string, stdout: string): [string[], { kind: 'read'; stdout: string }] => [
  ['dmsetup', 'table', name],
  { kind: 'read', stdout },
];

/** The chain on the destination after prepare: ancestors shared and mapped, c3 not held here. */
function destination(o: { handover?: boolean; placeholderOpen?: number } = {}) {
  const rows = chainRows({ mapped: true, c3: { active: undefined, open: false } });
  if (o.handover) rows[3] = { ...rows[3]!, lv_tags: [...(rows[3]!.lv_tags as string[]), HANDOVER] };
  // The placeholder (an error table) stands on nothing: the top ancestor is not held open by it.
  const ancestors = chainDevs()
    .slice(0, 5)
    .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
  const devs = [...ancestors, rwDev(U.c3, 9, o.placeholderOpen ?? 1)];
  return { rows, devs };
}

/** The re-read of c3 under its lock, with or without the source's record. */
const stillLiveWith = (handover: boolean): [string[], { kind: 'read'; stdout: string }] => {
  const [argv, res] = stillLive('c3', U.c3, U.c2);
  const row = { ...cloneRow('c3', U.c3, U.c2, { active: 'exclusive' }) };
  if (handover) row.lv_tags = [...(row.lv_tags as string[]), HANDOVER];
  return [argv, { ...res, stdout: lvsJson([row]) }];
};

describe('prepareMigration (destination)', () => {
  it('maps the ancestors read-only and creates the disk as an error placeholder, journalled', async () => {
    const r = expectObserve(recorder(), chainRows())
      .expect(journalBegin('c3', 'migrate-prepare'), W)
      .expect(['lvchange', '-asy', 'vg/image'], W)
      .expect(['lvchange', '-asy', 'vg/c1'], W)
      .expect(createRo(U.c1, snapTable('/dev/mapper/vg-image', '/dev/mapper/vg-c1', 'P', 8)), W)
      .expect(['lvchange', '-asy', 'vg/c2'], W)
      .expect(createRo(U.c2, snapTable(`/dev/mapper/${ro(U.c1)}`, '/dev/mapper/vg-c2', 'P', 16)), W)
      .expect(createRw(U.c3, PLACEHOLDER), W)
      .expect(journalEnd('c3', 'migrate-prepare'), W);
    expect(await prepareMigration(ctxOf(r), 'c3')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      step: 'prepare',
      device: `/dev/mapper/${rw(U.c3)}`,
      action: 'prepared',
    });
    r.verify();
  });

  it('is idempotent: a prepared host only has its tables read', async () => {
    const { rows, devs } = destination();
    const r = expectObserve(recorder(), rows, devs)
      .expect(...tableOf(rw(U.c3), `${PLACEHOLDER}\n`))
      .expect(...ANCESTOR_TABLES[0]!)
      .expect(...ANCESTOR_TABLES[1]!);
    expect(await prepareMigration(ctxOf(r), 'c3')).toMatchObject({ action: 'none' });
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('refuses (6) on the host that runs the VM (its disk is the real snapshot), writing nothing', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1)).expect(
      ...tableOf(rw(U.c3), SNAP_LINE),
    );
    const e = await rejectionOf(prepareMigration(ctxOf(r), 'c3'), EXIT.REFUSED);
    expect(e.message).toContain('its VM runs here');
    r.verify();
  });

  it('refuses (6) a committed clone: only a live disk migrates', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect((await rejectionOf(prepareMigration(ctxOf(r), 'c2'), EXIT.REFUSED)).hint).toBe(
      'a committed clone is mapped read-only on any host: cowstack clone map c2',
    );
    r.verify();
  });
});

describe('releaseMigration (source)', () => {
  const mapped = () => expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(0));

  it('records the snapshot status, unmaps the disk and releases the COW with the record in one lvchange', async () => {
    const r = mapped()
      .expect(...tableOf(rw(U.c3), SNAP_LINE))
      .expect(['dmsetup', 'status', rw(U.c3)], { kind: 'read', stdout: status(2048, 16) })
      .expect(journalBegin('c3', 'migrate-release'), W)
      .expect(dmRemove(rw(U.c3)), W)
      .expect(['lvchange', '-an', '--addtag', HANDOVER, 'vg/c3'], W)
      .expect(journalEnd('c3', 'migrate-release'), W);
    expect(await releaseMigration(ctxOf(r), 'c3')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      step: 'release',
      action: 'released',
      handover: { allocatedSectors: 2048, metadataSectors: 16 },
    });
    // The journal entry keeps the record: recover finishes the release with it.
    expect(JSON.parse(String(r.calls.find((c) => c.argv[0] === 'install')!.input))).toMatchObject({
      op: 'migrate-release',
      uuid: U.c3,
      handover: HANDOVER,
    });
    r.verify();
  });

  it('refuses (6) while the source qemu still has the disk open, naming it, and changes nothing', async () => {
    const settle = ['udevadm', 'settle', '--timeout=10'];
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1)).expect(
      ...tableOf(rw(U.c3), SNAP_LINE),
    );
    for (let i = 0; i < 3; i++) expectObserve(r.expect(settle, R), chainRows({ mapped: true }), chainDevs(1));
    r.expect(['realpath', '-e', '--', `/dev/mapper/${rw(U.c3)}`], { kind: 'read', stdout: '/dev/dm-9\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-9/holders'], R)
      .expect(['fuser', `/dev/mapper/${rw(U.c3)}`], { kind: 'read', stdout: ' 4242' })
      .expect(['ps', '-o', 'pid=,user=,comm=', '-p', '4242'], { kind: 'read', stdout: ' 4242 root qemu-system-x86\n' });
    const e = await rejectionOf(releaseMigration(ctxOf(r), 'c3'), EXIT.REFUSED);
    expect(e.message).toContain('process qemu-system-x86 (pid 4242, user root)');
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('refuses (6) on the destination, where only the placeholder is', async () => {
    const { rows, devs } = destination();
    const r = expectObserve(recorder(), rows, devs).expect(...tableOf(rw(U.c3), `${PLACEHOLDER}\n`));
    expect((await rejectionOf(releaseMigration(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toContain(
      'this is the destination',
    );
    r.verify();
  });

  it('after the release, releases the ancestors nothing uses any more (postmigrate)', async () => {
    const rows = chainRows({ mapped: true, c3: { active: undefined, open: false } });
    const devs = chainDevs()
      .slice(0, 5)
      .map((d) => (d.name === ro(U.c2) ? { ...d, open: 0 } : d));
    const r = expectObserve(recorder(), rows, devs);
    expectAncestorsReleased(expectObserve(r, rows, devs));
    expect(await releaseMigration(ctxOf(r), 'c3')).toMatchObject({ action: 'none' });
    r.verify();
  });

  it('finishes a release cut after the unmap from the record its journal kept (recover)', async () => {
    const rows = chainRows({ mapped: true });
    const r = expectObserve(recorder(), rows, chainDevs().slice(0, 6))
      .expect(journalBegin('c3', 'migrate-release'), W)
      .expect(['lvchange', '-an', '--addtag', HANDOVER, 'vg/c3'], W)
      .expect(journalEnd('c3', 'migrate-release'), W);
    expect(await releaseMigration(ctxOf(r), 'c3', { record: HANDOVER })).toMatchObject({ action: 'released' });
    r.verify();
  });

  it('refuses (6) a COW held with no snapshot over it when no record is known', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs().slice(0, 6));
    expect((await rejectionOf(releaseMigration(ctxOf(r), 'c3'), EXIT.REFUSED)).hint).toContain('cowstack recover');
    r.verify();
  });
});

describe('acquireMigration (destination)', () => {
  const upToLock = (o: { handover?: boolean } = {}) => {
    const { rows, devs } = destination(o);
    return expectObserve(recorder(), rows, devs)
      .expect(...tableOf(rw(U.c3), `${PLACEHOLDER}\n`))
      .expect(...ANCESTOR_TABLES[0]!)
      .expect(...ANCESTOR_TABLES[1]!)
      .expect(journalBegin('c3', 'migrate-acquire'), W);
  };
  const loaded = (r: RecordingRunner, o: { handover: boolean; found: string }) =>
    r
      .expect(['lvchange', '-aey', 'vg/c3'], W)
      .expect(...stillLiveWith(o.handover))
      .expect(['dmsetup', 'reload', rw(U.c3), '--table', C3_TABLE], W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W)
      .expect(['dmsetup', 'status', rw(U.c3)], { kind: 'read', stdout: o.found });

  it('takes the COW, loads its snapshot into the open placeholder, checks the record and clears it', async () => {
    const r = loaded(upToLock({ handover: true }), { handover: true, found: status(2048, 16) })
      .expect(['lvchange', '--deltag', HANDOVER, 'vg/c3'], W)
      .expect(journalEnd('c3', 'migrate-acquire'), W);
    expect(await acquireMigration(ctxOf(r), 'c3', { waitSeconds: 0 })).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      step: 'acquire',
      device: `/dev/mapper/${rw(U.c3)}`,
      action: 'acquired',
      handover: { allocatedSectors: 2048, metadataSectors: 16 },
      attempts: 1,
    });
    r.verify();
  });

  it('refuses (6) a status that differs from the record: placeholder back, COW released', async () => {
    const r = loaded(upToLock({ handover: true }), { handover: true, found: status(2056, 16) })
      .expect(['dmsetup', 'reload', rw(U.c3), '--table', PLACEHOLDER], W)
      .expect(['dmsetup', 'resume', rw(U.c3)], W)
      .expect(['dmsetup', 'clear', rw(U.c3)], W)
      .expect(['lvchange', '-an', 'vg/c3'], W)
      .expect(journalEnd('c3', 'migrate-acquire'), W);
    const e = await rejectionOf(acquireMigration(ctxOf(r), 'c3', { waitSeconds: 0 }), EXIT.REFUSED);
    expect(e.message).toContain('2056:16 allocated:metadata sectors, but the source recorded 2048:16');
    r.verify();
  });

  it('exits 4 while the source holds the COW and leaves the placeholder as it was', async () => {
    const r = upToLock({ handover: false })
      .expect(['lvchange', '-aey', 'vg/c3'], {
        kind: 'write',
        exitCode: 5,
        stderr: conflictStderr().replace(/repo\/probe/g, 'vg/c3'),
      })
      .expect(journalEnd('c3', 'migrate-acquire'), W)
      .expect(lvsArgv('vg/c3'), { kind: 'read', stdout: lvsJson([destination().rows[3]!]) })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/vg-lvmlock:78643200:1048576'], { kind: 'read', stdout: '' });
    const e = await rejectionOf(acquireMigration(ctxOf(r), 'c3', { waitSeconds: 0 }), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('vg/c3 is locked by another host');
    expect(e.data).toMatchObject({ attempts: 1 });
    // Only the lock request and the journal changed anything; no dmsetup write ran.
    expect(r.calls.filter((c) => c.kind === 'write' && c.argv[0] === 'dmsetup')).toEqual([]);
    r.verify();
  });

  it('without a record (the source died after the migration) acquires with a warning', async () => {
    const r = loaded(upToLock(), { handover: false, found: status(2048, 16) }).expect(
      journalEnd('c3', 'migrate-acquire'),
      W,
    );
    const res = await acquireMigration(ctxOf(r), 'c3', { waitSeconds: 0 });
    expect(res.action).toBe('acquired');
    expect(res.handover).toBeUndefined();
    expect(res.warnings?.[0]).toContain('the source left no hand-over record');
    r.verify();
  });

  it('is idempotent: a disk already acquired here is reported as is', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1)).expect(
      ...tableOf(rw(U.c3), SNAP_LINE),
    );
    expect(await acquireMigration(ctxOf(r), 'c3')).toMatchObject({ action: 'none', attempts: 1 });
    r.verify();
  });

  it('refuses (7) without a placeholder: prepare first', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect((await rejectionOf(acquireMigration(ctxOf(r), 'c3'), EXIT.NOT_FOUND)).hint).toBe(
      'prepare the destination first: cowstack clone migrate prepare c3',
    );
    r.verify();
  });

  it('refuses (6) while another host has the write-back marker', async () => {
    const { rows, devs } = destination();
    rows[3] = { ...rows[3]!, lv_tags: [...(rows[3]!.lv_tags as string[]), 'cowstack_wbhost:node1'] };
    const r = expectObserve(recorder(), rows, devs).expect(['uname', '-n'], { kind: 'read', stdout: 'node2\n' });
    expect((await rejectionOf(acquireMigration(ctxOf(r), 'c3'), EXIT.REFUSED)).message).toContain(
      'write-back cache of node1',
    );
    r.verify();
  });

  it('rejects (2) a negative wait before running anything', async () => {
    const r = recorder();
    await rejectionOf(acquireMigration(ctxOf(r), 'c3', { waitSeconds: -1 }), EXIT.USAGE);
    r.verify();
  });
});

describe('abortMigration', () => {
  it('on the destination removes the closed placeholder and the ancestors (an unmap)', async () => {
    const { rows, devs } = destination({ placeholderOpen: 0 });
    const r = expectObserve(recorder(), rows, devs).expect(...tableOf(rw(U.c3), `${PLACEHOLDER}\n`));
    const unmap = expectObserveDevicesFirst(r, rows, devs)
      .expect(journalBegin('c3', 'unmap'), W)
      .expect(dmRemove(rw(U.c3)), W);
    expectAncestorsReleased(unmap).expect(journalEnd('c3', 'unmap'), W);
    expect(await abortMigration(ctxOf(r), 'c3')).toEqual({
      name: 'c3',
      vg: VG,
      uuid: U.c3,
      step: 'abort',
      action: 'aborted',
    });
    // The COW was never held here: no lvchange names it.
    expect(r.calls.some((c) => c.argv.includes('vg/c3'))).toBe(false);
    r.verify();
  });

  it('refuses (6) while the destination qemu still has the placeholder open', async () => {
    const { rows, devs } = destination({ placeholderOpen: 1 });
    const r = expectObserve(recorder(), rows, devs).expect(...tableOf(rw(U.c3), `${PLACEHOLDER}\n`));
    expect((await rejectionOf(abortMigration(ctxOf(r), 'c3'), EXIT.REFUSED)).hint).toBe(
      'stop the destination qemu first (its migration failed), or pass --force',
    );
    r.verify();
  });

  it('leaves the host that holds the disk alone', async () => {
    const r = expectObserve(recorder(), chainRows({ mapped: true }), chainDevs(1)).expect(
      ...tableOf(rw(U.c3), SNAP_LINE),
    );
    const res = await abortMigration(ctxOf(r), 'c3');
    expect(res.action).toBe('none');
    expect(res.warnings?.[0]).toContain('this host holds the disk');
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('is idempotent for a clone that is gone', async () => {
    const r = expectObserve(recorder(), chainRows().slice(0, 3));
    expect(await abortMigration(ctxOf(r), 'c3')).toEqual({ name: 'c3', vg: VG, step: 'abort', action: 'none' });
    r.verify();
  });
});
