/**
 * The TM backup actions end to end against the recording runner (tmFixtures' script
 * language): prebackup of a powered-off VM in FULL mode, and in INCREMENT mode (point 0
 * copied whole; increment 1 from the new point's exception table), prebackup_live on a host
 * without the disk (refused, nothing backed up; the live point itself: livePoint.test.ts),
 * postbackup, and `backup restore` into a new image. The exception-table arithmetic is in
 * backups.test.ts; the whole flow runs on the testbed too (integration/backup.test.ts).
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the VM is 7, its disk 0 `one-7-0`.
 */
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { restoreImage } from '../../src/core/backups.js';
import { nodeSession } from '../../src/core/node.js';
import { MiB, U, cloneRow, createRo, createRw, imageRow, journalBegin, journalEnd, lvDev } from './repoFixtures.js';
import { recorder, rejectionOf } from './support.js';
import {
  DIR,
  O,
  R,
  commitTop,
  createTop,
  img,
  link,
  lv,
  mapOnSnap,
  mapped,
  rd,
  restoreImageSteps,
  roName,
  rwName,
  script,
  tm,
  top,
  wr,
  type Step,
  type World,
} from './tmFixtures.js';

const ARGS = ['node1:/var/lib/one//datastores/0/7', '0', 'one-7', '-', '7', '0'];
const BK = `${DIR}/backup`;
const XML = '<VM><ID>7</ID><BACKUPS><BACKUP_CONFIG><MODE>FULL</MODE></BACKUP_CONFIG></BACKUPS></VM>';
const RW = `/dev/mapper/${rwName(U.c3)}`;
/** The backup directory emptied and made again, the VM XML written into it (base64, as OpenNebula's drivers do). */
const freshDir: Step[] = [
  wr(['rm', '-rf', '--', BK]),
  wr(['mkdir', '-p', '--', BK]),
  wr(['install', '-D', '-m', '0600', '/proc/self/fd/0', `${BK}/vm.xml`]),
];
/** A raw device or canvas copied into a qcow2 file of 64 KiB clusters. */
const toQcow2 = (from: string, file: string): Step =>
  wr(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', from, file]);
/** mapClone of the disk mapped here already: it checks the table and does nothing. */
const mapFound: Step[] = [
  O,
  rd(['dmsetup', 'table', rwName(U.c3)], { stdout: '0 131072 snapshot 253:3 253:8 PO 8\n' }),
];

describe('tm prebackup / postbackup', () => {
  it('FULL mode, VM powered off: the mapped disk copied into backup/disk.0.0 as qcow2', async () => {
    const r = script(
      recorder('node1'),
      [mapped(), mapped(), mapped()],
      [...freshDir, O, wr(['mkdir', '-p', '--', BK]), ...mapFound, O, toQcow2(RW, `${BK}/disk.0.0`)],
    );
    const { info } = await tm('prebackup', ARGS, { node1: r }, XML);
    expect(info).toEqual([`disk 0: full backup of ${64 * 1024 * 1024} bytes in ${BK}/disk.0.0`]);
    expect(r.calls[2]!.input).toBe(Buffer.from(XML).toString('base64'));
  });

  it('prebackup_live where the disk is not mapped: refused before anything is read or committed', async () => {
    const unmapped = { rows: [img(), top()] };
    const r = script(recorder('node1'), [unmapped], [...freshDir, O]);
    const e = await rejectionOf(tm('prebackup_live', ARGS, { node1: r }, XML), EXIT.REFUSED);
    expect(e.message).toMatch(/vg\/one-7-0 is not mapped on node1: there is no running disk to back up/);
    expect(e.hint).toMatch(/on the host that runs the VM/);
  });

  it('postbackup removes the backup directory, whatever the backup did', async () => {
    const r = script(recorder('node1'), [], [wr(['rm', '-rf', '--', BK])]);
    await tm('postbackup', ARGS, { node1: r }, XML.replace('</VM>', '<BACKUP_RESULT>FAILURE</BACKUP_RESULT></VM>'));
  });
});

describe('tm prebackup in INCREMENT mode: the backup point is a commit, the disk goes on a new top', () => {
  const INC0 = XML.replace('<MODE>FULL</MODE>', '<MODE>INCREMENT</MODE>');
  const fullAtB0 = (levels: number) =>
    `disk 0: full backup of ${64 * MiB} bytes in ${BK}/disk.0.0 at point one-7-0-b0; ` +
    `the disk now stands on ${levels} snapshot level(s)`;
  const b0 = (o: Parameters<typeof cloneRow>[3] = {}) =>
    cloneRow('one-7-0-b0', U.c3, U.image, { state: 'committed', ...o });
  /** The disk after point 0, mapped here: img <- one-7-0-b0 (ro) <- one-7-0 (U.n1, rw). */
  const onPoint: World = {
    rows: [
      img('shared'),
      b0({ active: 'shared', open: true, minor: 4 }),
      top({ active: 'exclusive', open: true, minor: 6 }, U.c3, U.n1),
    ],
    devs: [
      lvDev('img', U.image, 3, 1, true),
      lvDev('one-7-0-b0', U.c3, 4, 1, true),
      { name: roName(U.c3), uuid: `COWSTACK-ro-${U.c3.replace(/-/g, '')}`, open: 1, minor: 5, readOnly: true },
      lvDev('one-7-0', U.n1, 6, 1),
      { name: rwName(U.n1), uuid: `COWSTACK-rw-${U.n1.replace(/-/g, '')}`, open: 0, minor: 7 },
    ],
  };

  it('backup 0 of a disk not mapped: point b0 taken, copied whole, the disk left mapped on its new top', async () => {
    const worlds: World[] = [
      { rows: [img(), top()] },
      { rows: [img(), top()] },
      { rows: [img(), top({ state: 'committed' })] },
      { rows: [img(), b0()] },
      { rows: [img(), b0(), top({}, U.c3, U.n1)] },
      onPoint,
    ];
    const r = script(recorder('node1'), worlds, [
      ...freshDir,
      O,
      O,
      ...commitTop,
      O,
      wr(['lvrename', 'vg', 'one-7-0', 'one-7-0-b0']),
      R,
      ...createTop(U.c3),
      wr(['mkdir', '-p', '--', BK]),
      O,
      ...mapOnSnap(U.c3, U.n1, 'one-7-0-b0'),
      O,
      toQcow2(`/dev/mapper/${roName(U.c3)}`, `${BK}/disk.0.0`),
      // No unmap and map again: the new top stays mapped, and D follows it.
      ...link(`/dev/mapper/${rwName(U.n1)}`),
    ]);
    expect((await tm('prebackup', ARGS, { node1: r }, INC0)).info).toEqual([fullAtB0(2)]);
  });

  it("a new chain's backup 0 on the last chain's point 0 reads the disk as it is, not that point", async () => {
    // The last chain had only its full backup: img <- one-7-0-b0 (U.c3) <- one-7-0 (U.n1), written since.
    const OLD = 'one-7-0-b0.Zk8Lm2Pq';
    const old = cloneRow(OLD, U.c3, U.image, { state: 'committed' });
    const newB0 = cloneRow('one-7-0-b0', U.n1, U.c3, { state: 'committed' });
    const onOld = { rows: [img(), old, top({}, U.c3, U.n1)] };
    const worlds: World[] = [
      { rows: [img(), b0(), top({}, U.c3, U.n1)] },
      { rows: [img(), b0(), top({}, U.c3, U.n1)] },
      onOld,
      onOld,
      { rows: [img(), old, top({ state: 'committed' }, U.c3, U.n1)] },
      { rows: [img(), old, newB0] },
      { rows: [img(), old, newB0, top({}, U.n1, U.d1)] },
    ];
    const RO = `/dev/mapper/${roName(U.n1)}`;
    const r = script(recorder('node1'), worlds, [
      ...freshDir,
      O,
      // The old point 0 goes aside under its uuid's start; the point is planned on the names as they are then.
      O,
      wr(['lvrename', 'vg', 'one-7-0-b0', OLD]),
      O,
      O,
      ...commitTop,
      O,
      wr(['lvrename', 'vg', 'one-7-0', 'one-7-0-b0']),
      R,
      ...createTop(U.n1),
      wr(['mkdir', '-p', '--', BK]),
      O,
      wr(journalBegin('one-7-0', 'map')),
      wr(['lvchange', '-asy', 'vg/img']),
      wr(['lvchange', '-asy', `vg/${OLD}`]),
      wr(createRo(U.c3, `0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0--b0.Zk8Lm2Pq P 8`)),
      wr(['lvchange', '-asy', 'vg/one-7-0-b0']),
      wr(createRo(U.n1, `0 131072 snapshot /dev/mapper/${roName(U.c3)} /dev/mapper/vg-one--7--0--b0 P 8`)),
      wr(['lvchange', '-aey', 'vg/one-7-0']),
      lv('one-7-0'),
      wr(createRw(U.d1, `0 131072 snapshot ${RO} /dev/mapper/vg-one--7--0 PO 8`)),
      wr(journalEnd('one-7-0', 'map')),
      O,
      toQcow2(RO, `${BK}/disk.0.0`),
      ...link(`/dev/mapper/${rwName(U.d1)}`),
    ]);
    expect((await tm('prebackup', ARGS, { node1: r }, INC0)).info).toEqual([fullAtB0(3)]);
  });

  it('a new chain of a running disk on old points is refused before anything is renamed', async () => {
    const onOld = { rows: [img(), b0(), top({}, U.c3, U.n1)] };
    const r = script(recorder('node1'), [onOld], [...freshDir, O]);
    const e = await rejectionOf(tm('prebackup_live', ARGS, { node1: r }, INC0), EXIT.REFUSED);
    expect(e.message).toMatch(/stands on backup points of an earlier chain/);
    expect(e.hint).toMatch(/power the VM off for the first backup of the new chain/);
  });
});

describe("tm prebackup, increment 1: the changed chunks from the new point's exception table", () => {
  const INC1 = XML.replace('<MODE>FULL</MODE>', '<MODE>INCREMENT</MODE><LAST_INCREMENT_ID>0</LAST_INCREMENT_ID>');
  const point = (name: string, uuid: string, parent: string, o: Parameters<typeof cloneRow>[3] = {}) =>
    cloneRow(name, uuid, parent, { state: 'committed', ...o });
  const b0 = (o = {}) => point('one-7-0-b0', U.c3, U.image, o);
  const b1 = (o = {}) => point('one-7-0-b1', U.n1, U.c3, o);
  const dev = (kind: 'ro' | 'rw', uuid: string, minor: number, open = 1) => ({
    name: `cowstack-${kind}-${uuid.replace(/-/g, '')}`,
    uuid: `COWSTACK-${kind}-${uuid.replace(/-/g, '')}`,
    open,
    minor,
    ...(kind === 'ro' ? { readOnly: true } : {}),
  });
  /** img <- b0 <- b1 <- one-7-0 (U.d1), all mapped here. */
  const onPoint1: World = {
    rows: [
      img('shared'),
      b0({ active: 'shared', open: true, minor: 4 }),
      b1({ active: 'shared', open: true, minor: 6 }),
      top({ active: 'exclusive', open: true, minor: 8 }, U.n1, U.d1),
    ],
    devs: [
      lvDev('img', U.image, 3, 1, true),
      lvDev('one-7-0-b0', U.c3, 4, 1, true),
      dev('ro', U.c3, 5),
      lvDev('one-7-0-b1', U.n1, 6, 1, true),
      dev('ro', U.n1, 7),
      lvDev('one-7-0', U.d1, 8, 1),
      dev('rw', U.d1, 9, 0),
    ],
  };
  const B1 = '/dev/mapper/vg-one--7--0--b1';
  const RO1 = `/dev/mapper/${roName(U.n1)}`;
  const FILE = `${BK}/disk.0.1`;
  const CANVAS = `${FILE}.canvas`;
  const copy = (from: string, to: string, cluster: number, clusters: number) =>
    ['dd', `if=${from}`, `of=${to}`, 'bs=65536', `skip=${cluster}`, `seek=${cluster}`, `count=${clusters}`].concat([
      'conv=notrunc',
      'status=none',
    ]);
  const od = (offset: number, bytes: number, width: 4 | 8) =>
    ['od', '-An', '-v', `-tu${width}`, `-w${width * 2}`, '-j', String(offset), '-N', String(bytes), B1] as const;

  /** All after the top's commit: renamed to point 1, a new top on it, mapped, the increment written, D linked. */
  const afterCommit: Step[] = [
    O,
    wr(['lvrename', 'vg', 'one-7-0', 'one-7-0-b1']),
    R,
    ...createTop(U.n1),
    wr(['mkdir', '-p', '--', BK]),
    O,
    wr(journalBegin('one-7-0', 'map')),
    wr(['lvchange', '-asy', 'vg/img']),
    wr(['lvchange', '-asy', 'vg/one-7-0-b0']),
    wr(createRo(U.c3, '0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0--b0 P 8')),
    wr(['lvchange', '-asy', 'vg/one-7-0-b1']),
    wr(createRo(U.n1, `0 131072 snapshot /dev/mapper/${roName(U.c3)} ${B1} P 8`)),
    wr(['lvchange', '-aey', 'vg/one-7-0']),
    lv('one-7-0'),
    wr(createRw(U.d1, `0 131072 snapshot ${RO1} /dev/mapper/vg-one--7--0 PO 8`)),
    wr(journalEnd('one-7-0', 'map')),
    O,
    // Only point b1's COW holds what changed since point 0: its page cache dropped, its header
    // (magic "SnAp", valid, version 1, 8 sectors a chunk), then its first area's exceptions:
    // origin chunks 16 and 17 (64 KiB cluster 1) and 256 (1 MiB: cluster 16); COW chunk 0 ends it.
    wr(['blockdev', '--flushbufs', B1]),
    rd(od(0, 16, 4), { stdout: ' 1883336275 1\n 1 8\n' }),
    rd(od(4096, 4096, 8), { stdout: ' 16 2\n 17 3\n 256 4\n 0 0\n 0 0\n' }),
    wr(['rm', '-f', '--', CANVAS]),
    wr(['truncate', '-s', String(64 * MiB), '--', CANVAS]),
    wr(copy(RO1, CANVAS, 1, 1)),
    wr(copy(RO1, CANVAS, 16, 1)),
    toQcow2(CANVAS, FILE),
    // The VM zeroed cluster 16: the written file holds no data there, so it is marked zero.
    rd(['qemu-img', 'map', '--output=json', '-f', 'qcow2', FILE], {
      stdout: JSON.stringify([
        { start: 0, length: 65536, depth: 0, present: false, zero: true, data: false },
        { start: 65536, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 327680 },
        { start: 131072, length: 64 * MiB - 131072, depth: 0, present: false, zero: true, data: false },
      ]),
    }),
    wr(['qemu-io', '-f', 'qcow2', '-c', `write -z ${16 * 65536} 65536`, FILE]),
    wr(['rm', '-f', '--', CANVAS]),
    ...link(`/dev/mapper/${rwName(U.d1)}`),
  ];
  const onB0 = { rows: [img(), b0(), top({}, U.c3, U.n1)] };
  const committed = { rows: [img(), b0(), top({ state: 'committed' }, U.c3, U.n1)] };
  const worlds: World[] = [
    onB0,
    onB0,
    committed,
    { rows: [img(), b0(), b1()] },
    { rows: [img(), b0(), b1(), top({}, U.n1, U.d1)] },
    onPoint1,
  ];
  const INFO1 =
    `disk 0: increment 1 (2 changed range(s)) of ${2 * 65536} bytes in ${FILE} at point one-7-0-b1; ` +
    'the disk now stands on 3 snapshot level(s)';

  it('commits the top as point b1, maps the new top, copies the clusters b1 holds, marks the zeroed ones', async () => {
    const r = script(recorder('node1'), worlds, [...freshDir, O, O, ...commitTop, ...afterCommit]);
    expect((await tm('prebackup', ARGS, { node1: r }, INC1)).info).toEqual([INFO1]);
  });

  it('a run cut after the commit (the rename failed) is finished by the re-run: no second commit', async () => {
    const r1 = script(recorder('node1'), worlds.slice(0, 3), [
      ...freshDir,
      O,
      O,
      ...commitTop,
      O,
      wr(['lvrename', 'vg', 'one-7-0', 'one-7-0-b1'], { exitCode: 5 }),
    ]);
    await rejectionOf(tm('prebackup', ARGS, { node1: r1 }, INC1), EXIT.FAILED);
    const r2 = script(recorder('node1'), [committed, ...worlds.slice(2)], [...freshDir, O, ...afterCommit]);
    expect((await tm('prebackup', ARGS, { node1: r2 }, INC1)).info).toEqual([INFO1]);
  });

  it('a run cut after the rename (no new top yet) is finished by the re-run', async () => {
    const renamed = { rows: [img(), b0(), b1()] };
    const cut = afterCommit.indexOf(R);
    const r = script(recorder('node1'), [renamed, ...worlds.slice(3)], [...freshDir, O, ...afterCommit.slice(cut)]);
    expect((await tm('prebackup', ARGS, { node1: r }, INC1)).info).toEqual([INFO1]);
  });
});

describe('backup restore: a full backup and its increments into a new sealed image', () => {
  const FILES = ['/var/tmp/bk/disk.0.0', '/var/tmp/bk/disk.0.1', '/var/tmp/bk/disk.0.2'];
  const SHA = 'b'.repeat(64);
  const MARK = `cowstack_restored_from:${FILES[2]}`;
  const info = (bytes: number) => `{"virtual-size": ${bytes}, "filename": "x", "format": "qcow2"}`;
  const restoredRow = () => {
    const row = imageRow('restored', U.img2, { sha: SHA });
    return { ...row, lv_tags: [...(row.lv_tags as string[]), MARK] };
  };

  it('writes the chain (qemu opens the files as one, untouched) into a new image, sealed with its sha256', async () => {
    const r = script(
      recorder('node2'),
      [{ rows: [img()] }, { rows: [img(), restoredRow()] }],
      [O, ...restoreImageSteps('restored', FILES, { sha: SHA, mark: MARK })],
    );
    const res = await restoreImage(nodeSession({ runner: r, vg: 'vg' }), 'restored', FILES);
    r.verify();
    expect(res).toMatchObject({ image: 'restored', sha256: SHA, sizeBytes: 64 * MiB, action: 'restored' });
    // A re-run finds the image by its marker and writes nothing.
    const again = script(recorder('node2'), [{ rows: [img(), restoredRow()] }], [O]);
    expect((await restoreImage(nodeSession({ runner: again, vg: 'vg' }), 'restored', FILES)).action).toBe('none');
    again.verify();
  });

  it('refuses files of different disks, and hostile names, before creating anything', async () => {
    const r = script(
      recorder('node2'),
      [{ rows: [img()] }],
      [
        O,
        rd(['qemu-img', 'info', '--output=json', '-f', 'qcow2', FILES[0]!], { stdout: info(64 * MiB) }),
        rd(['qemu-img', 'info', '--output=json', '-f', 'qcow2', FILES[1]!], { stdout: info(32 * MiB) }),
      ],
    );
    const e = await rejectionOf(restoreImage(nodeSession({ runner: r, vg: 'vg' }), 'x', FILES.slice(0, 2)), EXIT.USAGE);
    expect(e.message).toMatch(/different disk sizes/);
    r.verify();
    const none = recorder('node2');
    for (const [name, files] of [
      ['-rf', FILES],
      ['ok', ['/var/tmp/bk/disk.0.0,file.filename=/etc/shadow']],
      ['ok', []],
    ] as Array<[string, string[]]>)
      await rejectionOf(restoreImage(nodeSession({ runner: none, vg: 'vg' }), name, files), EXIT.USAGE);
    none.verify();
  });
});
