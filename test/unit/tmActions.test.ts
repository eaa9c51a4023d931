/**
 * The TM actions end to end against the recording runner: for each action the commands of a
 * first run, of a re-run after success (oned re-runs an action whose answer it lost) against
 * the state the first run left, and of a re-run after a command failed in the middle.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the image is `img` (64 MiB), the
 * VM's disk 0 is `one-7-0`. `clone` and `delete` are tested with their rewrite. The script
 * language and the disk's fixtures are in tmFixtures.ts.
 */
import { describe, expect, it } from 'vitest';
import { CowstackError, EXIT } from '../../src/exec/errors.js';
import type { RunRequest, RunResult, Runner } from '../../src/exec/types.js';
import {
  MiB,
  U,
  VG,
  cloneRow,
  commitMarkArgv,
  createRw,
  DM_INFO,
  DM_STATUS,
  dmInfo,
  dmStatus,
  lvcreateArgv,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  rwDev,
} from './repoFixtures.js';
import { conflictStderr, lvsArgv, lvsJson, recorder, rejectionOf, vgsArgv, vgsJson } from './support.js';
import {
  createImageSteps,
  D,
  DIR,
  O,
  R,
  commitTop,
  createTop,
  heldBy,
  VGS_ROW,
  img,
  link,
  lv,
  mapOnImage,
  mapOnSnap,
  mapped,
  mark,
  on,
  rd,
  roName,
  rwName,
  script,
  snap3,
  tm,
  top,
  wr,
  type Step,
  type World,
} from './tmFixtures.js';

// ---- mkimage / mkswap -------------------------------------------------------------------------------

const vol = (o: Parameters<typeof imageRow>[2] = {}) =>
  imageRow('one-7-0', U.n1, { state: 'writable', size: 1024 * MiB, ...o });
const createVol = (o: { failDd?: boolean } = {}): Step[] => [
  rd(vgsArgv(VG), { stdout: VGS_ROW }),
  ...createImageSteps('one-7-0', 1024 * MiB, o),
];
const VOL_DEV = '/dev/mapper/vg-one--7--0';
const mkfs = (fmt: string) => wr(fmt === 'swap' ? ['mkswap', VOL_DEV] : ['mkfs', '-t', fmt, VOL_DEV]);
const volActive: World = { rows: [vol({ active: 'exclusive', minor: 5 })], devs: [lvDev('one-7-0', U.n1, 5, 0)] };

describe('tm mkimage / mkswap', () => {
  const firstRun = (fmt: string): Step[] => [
    O,
    ...createVol(),
    O,
    wr(['lvchange', '-aey', 'vg/one-7-0']),
    ...(fmt === 'raw' ? [] : [mkfs(fmt)]),
    ...link(VOL_DEV),
  ];

  it.each(['ext4', 'raw'])('creates a %s volatile disk, activates it exclusively, formats it, links D', async (fmt) => {
    const r = script(recorder('node1'), [{ rows: [] }, { rows: [vol()] }], firstRun(fmt));
    const { info } = await tm('mkimage', ['1024', fmt, D, '7', '0'], on(r));
    expect(info).toEqual([`volatile disk vg/one-7-0 (1024 MiB, ${fmt}) at ${DIR}/disk.0`]);
  });

  it('mkswap formats the new disk as swap', async () => {
    const r = script(recorder('node1'), [{ rows: [] }, { rows: [vol()] }], firstRun('swap'));
    await tm('mkswap', ['1024', D, '7', '0'], on(r));
    expect(r.calls.find((c) => c.argv[0] === 'mkswap')).toMatchObject({ root: true, timeout: 'data' });
  });

  // The guard the issue names: a re-run must never format a disk that exists (a VM may use it).
  it.each(['ext4', 'swap'])('a re-run after success (%s) only links D again: no create, no format', async (fmt) => {
    const r = script(recorder('node1'), [volActive], [O, O, ...link(VOL_DEV)]);
    const args = fmt === 'swap' ? ['1024', D, '7', '0'] : ['1024', fmt, D, '7', '0'];
    await tm(fmt === 'swap' ? 'mkswap' : 'mkimage', args, on(r));
  });

  it('a re-run after a reboot (disk inactive) activates it again but does not format it', async () => {
    const r = script(
      recorder('node1'),
      [{ rows: [vol()] }],
      [O, O, wr(['lvchange', '-aey', 'vg/one-7-0']), ...link(VOL_DEV)],
    );
    await tm('mkimage', ['1024', 'ext4', D, '7', '0'], on(r));
  });

  it('a failure while zeroing undoes the new LV; the re-run creates and formats it', async () => {
    const r1 = script(recorder('node1'), [{ rows: [] }], [O, ...createVol({ failDd: true })]);
    await rejectionOf(tm('mkimage', ['1024', 'ext4', D, '7', '0'], on(r1)), EXIT.FAILED);
    const r2 = script(recorder('node1'), [{ rows: [] }, { rows: [vol()] }], firstRun('ext4'));
    await tm('mkimage', ['1024', 'ext4', D, '7', '0'], on(r2));
  });

  it('refuses (6) a disk name held by something that is not a volatile disk', async () => {
    const r = script(recorder('node1'), [{ rows: [top()] }], [O]);
    await rejectionOf(tm('mkimage', ['1024', 'ext4', D, '7', '0'], on(r)), EXIT.REFUSED);
  });
});

// ---- snapshots ------------------------------------------------------------------------------------

const SNAP = [D, '3', '7', '0'];
/** The disk after a snapshot 3 (or a revert to it), mapped here: img <- one-7-0-s3 <- one-7-0 (U.n1). */
const snapMapped = (snapUuid: string): World => ({
  rows: [
    img('shared'),
    cloneRow('one-7-0-s3', snapUuid, U.image, { state: 'committed', active: 'shared', open: true, minor: 4 }),
    top({ active: 'exclusive', open: true, minor: 6 }, snapUuid, U.n1),
  ],
  devs: [
    lvDev('img', U.image, 3, 1, true),
    lvDev('one-7-0-s3', snapUuid, 4, 1, true),
    { name: roName(snapUuid), uuid: `COWSTACK-ro-${snapUuid.replace(/-/g, '')}`, open: 1, minor: 5, readOnly: true },
    lvDev('one-7-0', U.n1, 6, 1),
    rwDev(U.n1, 7, 0),
  ],
});
/** mapClone finding that stack in place: it checks the kernel tables and changes nothing. */
const verifySnapMapped = (snapUuid: string): Step[] => [
  rd(['dmsetup', 'table', roName(snapUuid)], { stdout: '0 131072 snapshot 253:3 253:4 P 8\n' }),
  rd(['dmsetup', 'table', rwName(U.n1)], { stdout: '0 131072 snapshot 253:5 253:6 PO 8\n' }),
];

describe('tm snap_create', () => {
  const worlds: World[] = [
    { rows: [img(), top()] },
    { rows: [img(), top()] },
    { rows: [img(), top({ state: 'committed' })] },
    { rows: [img(), snap3()] },
    { rows: [img(), snap3(), top({}, U.c3, U.n1)] },
  ];
  const first: Step[] = [
    O,
    O,
    ...commitTop,
    O,
    wr(['lvrename', VG, 'one-7-0', 'one-7-0-s3']),
    R,
    ...createTop(U.c3),
    O,
    ...mapOnSnap(U.c3, U.n1),
    ...link(`/dev/mapper/${rwName(U.n1)}`),
  ];

  it('commits the top, renames it to the snapshot, starts a new top on it, maps it and links D', async () => {
    const r = script(recorder('node1'), worlds, first);
    expect((await tm('snap_create', SNAP, on(r))).info).toEqual(['snapshot 3 of disk 0: one-7-0-s3']);
  });

  it('a re-run after success finds the new top on the snapshot: it checks the mapping and links D', async () => {
    const w = snapMapped(U.c3);
    const r = script(recorder('node1'), [w], [O, O, ...verifySnapMapped(U.c3), ...link(`/dev/mapper/${rwName(U.n1)}`)]);
    await tm('snap_create', SNAP, on(r));
  });

  it('a failure after the rename (the new top not created) is finished by the re-run', async () => {
    const r1 = script(recorder('node1'), worlds.slice(0, 4), [
      ...first.slice(0, first.indexOf(R) + 1),
      ...createTop(U.c3, { failAt: 'lvcreate' }),
    ]);
    await rejectionOf(tm('snap_create', SNAP, on(r1)), EXIT.FAILED);
    const r2 = script(
      recorder('node1'),
      [worlds[3]!, ...worlds.slice(3)],
      [O, R, ...createTop(U.c3), O, ...mapOnSnap(U.c3, U.n1), ...link(`/dev/mapper/${rwName(U.n1)}`)],
    );
    await tm('snap_create', SNAP, on(r2));
  });

  it('snap_create_live is refused (6) before anything runs', async () => {
    await rejectionOf(tm('snap_create_live', SNAP, on(recorder('node1'))), EXIT.REFUSED);
  });
});

describe('tm snap_delete', () => {
  const w: World = { rows: [img(), snap3(U.c2), top()] };
  const discard = (o: { fail?: boolean } = {}): Step[] => [
    O,
    O,
    wr(journalBegin('one-7-0-s3', 'discard')),
    wr(['lvremove', '-y', 'vg/one-7-0-s3'], o.fail ? { exitCode: 5 } : {}),
    wr(journalEnd('one-7-0-s3', 'discard')),
  ];

  it('removes a snapshot nothing depends on', async () => {
    const r = script(recorder('node1'), [w], discard());
    expect((await tm('snap_delete', SNAP, on(r))).info).toEqual(['deleted snapshot one-7-0-s3']);
  });

  it('a re-run after success only observes: the snapshot is gone', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top()] }], [O]);
    expect((await tm('snap_delete', SNAP, on(r))).info).toEqual(['one-7-0-s3 does not exist: nothing to delete']);
  });

  it('a failed lvremove leaves the snapshot; the re-run removes it', async () => {
    await rejectionOf(
      tm('snap_delete', SNAP, on(script(recorder('node1'), [w], discard({ fail: true })))),
      EXIT.FAILED,
    );
    await tm('snap_delete', SNAP, on(script(recorder('node1'), [w], discard())));
  });

  it('refuses (6) a snapshot the current disk stands on, and writes nothing', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), snap3(U.c2), top({}, U.c2)] }], [O]);
    const e = await rejectionOf(tm('snap_delete', SNAP, on(r)), EXIT.REFUSED);
    expect(e.message).toContain('the current disk depend(s) on it');
  });
});

describe('tm snap_revert', () => {
  const worlds: World[] = [
    { rows: [img(), snap3(U.c2), top({}, U.c2)] },
    { rows: [img(), snap3(U.c2), top({}, U.c2)] },
    { rows: [img(), snap3(U.c2)] },
    { rows: [img(), snap3(U.c2), top({}, U.c2, U.n1)] },
  ];
  const discardTop: Step[] = [
    wr(journalBegin('one-7-0', 'discard')),
    wr(['lvremove', '-y', 'vg/one-7-0']),
    wr(journalEnd('one-7-0', 'discard')),
  ];
  const after: Step[] = [R, ...createTop(U.c2), O, ...mapOnSnap(U.c2, U.n1), ...link(`/dev/mapper/${rwName(U.n1)}`)];

  it('discards the top, starts a new one on the snapshot, maps it and links D', async () => {
    const r = script(recorder('node1'), worlds, [O, O, ...discardTop, ...after]);
    expect((await tm('snap_revert', SNAP, on(r))).info).toEqual(['disk 0 reverted to snapshot 3']);
  });

  it('a failure creating the new top is finished by the re-run (no top: nothing to discard)', async () => {
    const r1 = script(recorder('node1'), worlds.slice(0, 3), [
      O,
      O,
      ...discardTop,
      R,
      ...createTop(U.c2, { failAt: 'lvcreate' }),
    ]);
    await rejectionOf(tm('snap_revert', SNAP, on(r1)), EXIT.FAILED);
    const r2 = script(recorder('node1'), [worlds[2]!, ...worlds.slice(2)], [O, ...after]);
    await tm('snap_revert', SNAP, on(r2));
  });

  // A revert discards whatever the top holds: repeated, the disk still reads as snapshot 3 (the
  // top it discards was started empty by the first run and the VM is powered off meanwhile).
  it('a re-run after success reverts again: a new empty top on the snapshot, mapped and linked', async () => {
    const r = script(
      recorder('node1'),
      [
        snapMapped(U.c2),
        snapMapped(U.c2),
        { rows: [img(), snap3(U.c2)] },
        { rows: [img(), snap3(U.c2), top({}, U.c2, U.c3)] },
      ],
      [
        O,
        O,
        wr(journalBegin('one-7-0', 'discard')),
        wr(['dmsetup', 'remove', '--retry', rwName(U.n1)]),
        wr(['lvchange', '-an', 'vg/one-7-0']),
        wr(['lvremove', '-y', 'vg/one-7-0']),
        wr(['dmsetup', 'remove', '--retry', roName(U.c2)]),
        wr(['lvchange', '-an', 'vg/one-7-0-s3', 'vg/img']),
        wr(journalEnd('one-7-0', 'discard')),
        R,
        ...createTop(U.c2),
        O,
        ...mapOnSnap(U.c2, U.c3),
        ...link(`/dev/mapper/${rwName(U.c3)}`),
      ],
    );
    expect((await tm('snap_revert', SNAP, on(r))).info).toEqual(['disk 0 reverted to snapshot 3']);
  });

  it('refuses (7) a snapshot that does not exist, and writes nothing', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top()] }], [O]);
    await rejectionOf(tm('snap_revert', SNAP, on(r)), EXIT.NOT_FOUND);
  });
});

/** A re-run over the disk mapped here: the rw device's table is checked in place, then D linked again. */
const relinkMapped = (): Step[] => [
  rd(['dmsetup', 'table', rwName(U.c3)], { stdout: '0 131072 snapshot 253:3 253:8 PO 8\n' }),
  ...link(`/dev/mapper/${rwName(U.c3)}`),
];

// ---- clone / delete ------------------------------------------------------------------------------

const CLONE = ['fe:vg/img', D, '7', '1'];
/** lvcreate of the VM disk's COW on the image, created, held exclusively and zeroed at once. */
const lvcreateTop = (o: { exitCode?: number } = {}) => wr(lvcreateArgv('one-7-0', U.image, 16 * MiB, 8), o);
const rwOnImage = (o: { exitCode?: number } = {}) =>
  wr(
    [
      'dmsetup',
      'create',
      rwName(U.c3),
      '--uuid',
      `COWSTACK-rw-${U.c3.replace(/-/g, '')}`,
      '--table',
      '0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0 PO 8',
    ],
    o,
  );

describe('tm clone', () => {
  // One observation for create and map; the image is activated while the COW is created (the
  // recording runner sees the two in the order they start), the COW stays held from its lvcreate on.
  // A new clone of a sealed image on a node without a cache VG: the repository alone (no dmsetup info).
  const first: Step[] = [
    R,
    wr(['lvchange', '-asy', 'vg/img']),
    wr(journalBegin('one-7-0', 'create-clone')),
    lvcreateTop(),
    mark('one-7-0', false),
    wr(journalEnd('one-7-0', 'create-clone')),
    wr(journalBegin('one-7-0', 'map')),
    rwOnImage(),
    wr(journalEnd('one-7-0', 'map')),
    ...link(`/dev/mapper/${rwName(U.c3)}`),
  ];
  const worlds: World[] = [{ rows: [img()] }, { rows: [img(), top({ active: 'exclusive' })] }];

  it('creates the COW held exclusively, maps it from the same observation and links D', async () => {
    const r = script(recorder('node1'), worlds, first);
    expect((await tm('clone', CLONE, on(r))).info).toEqual([
      'created COW clone vg/one-7-0 of img',
      `${DIR}/disk.0 -> /dev/mapper/${rwName(U.c3)} on node1`,
    ]);
    // Under the node lock the four journal records cost nothing: 7 commands, plus the lock itself.
    expect(r.calls.filter((c) => !c.argv.includes('/proc/self/fd/0') && c.argv[0] !== 'rm')).toHaveLength(7);
  });

  it('refuses (6) an image that is not sealed before anything runs: not even the image activation', async () => {
    const writable = imageRow('img', U.image, { state: 'writable' });
    const r = script(recorder('node1'), [{ rows: [writable] }], [O]);
    await rejectionOf(tm('clone', CLONE, on(r)), EXIT.REFUSED);
  });

  it('a re-run after success finds the disk mapped: it checks the mapping and links D again', async () => {
    const r = script(recorder('node1'), [mapped()], [O, ...relinkMapped()]);
    await tm('clone', CLONE, on(r));
  });

  it('a failed map releases the new COW; the re-run maps it (refresh and re-read: it was let go)', async () => {
    const failing = [
      ...first.slice(0, 7), // up to the map's journal entry
      rwOnImage({ exitCode: 1 }),
      wr(journalEnd('one-7-0', 'map')),
      wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']), // the COW goes, and the image it activated
    ];
    const r1 = script(recorder('node1'), worlds, failing);
    await rejectionOf(tm('clone', CLONE, on(r1)), EXIT.FAILED);
    const after: World = { rows: [img(), top()] };
    const r2 = script(
      recorder('node1'),
      [after, { rows: [img(), top({ active: 'exclusive' })] }],
      [
        O,
        wr(journalBegin('one-7-0', 'map')),
        wr(['lvchange', '-asy', 'vg/img']),
        wr(['lvchange', '-aey', 'vg/one-7-0']),
        lv('one-7-0'),
        rwOnImage(),
        wr(journalEnd('one-7-0', 'map')),
        ...link(`/dev/mapper/${rwName(U.c3)}`),
      ],
    );
    await tm('clone', CLONE, on(r2));
  });
});

describe('tm delete', () => {
  const DEL = [`node1:${DIR}`, '7', '0'];
  // Host failure: oned deletes the VM of a dead node1. Its LVs go through node2 once sanlock lets
  // them go; its directory and links go with the dead host.
  it('node1 unreachable: removes the LVs through node2 once the lease expired, and no directory', async () => {
    const remove = (o: { conflict?: boolean } = {}): Step[] => [
      O,
      wr(journalBegin('one-7-0', 'discard')),
      wr(['lvremove', '-y', 'vg/one-7-0'], o.conflict ? { exitCode: 5, stderr: conflictStderr() } : {}),
      wr(journalEnd('one-7-0', 'discard')),
      ...(o.conflict ? heldBy('one-7-0', U.c3, 1) : []), // who holds it, for the error
    ];
    const w: World[] = [{ rows: [img(), top()] }];
    const held = tm('delete', DEL, {
      node1: unreachable,
      node2: script(recorder('node2'), w, remove({ conflict: true })),
    });
    const e = await rejectionOf(held, EXIT.LOCK_CONFLICT);
    expect(e.message).toBe(
      'vg/one-7-0 is locked by another host (held by node1, sanlock host_id 1) ' +
        '(node1 is unreachable and still holds the lease)',
    );
    expect(e.hint).toContain('retry the delete then, or fence node1 first');
    const { info } = await tm('delete', DEL, { node1: unreachable, node2: script(recorder('node2'), w, remove()) });
    expect(info).toEqual([
      'host node1 is unreachable',
      'node1 is unreachable: removing 1 LV(s) of VM 7 through node2',
      'removed one-7-0',
    ]);
    // The re-run after success finds nothing of VM 7 left.
    const again = await tm('delete', DEL, {
      node1: unreachable,
      node2: script(recorder('node2'), [{ rows: [img()] }], [O]),
    });
    expect(again.info).toEqual([
      'host node1 is unreachable',
      'node1 is unreachable: removing 0 LV(s) of VM 7 through node2',
    ]);
  });

  it('removes the disk from one observation: unmap, one lvchange for COW and image, lvremove, rm -rf', async () => {
    const r = script(
      recorder('node1'),
      [mapped()],
      [
        O,
        wr(journalBegin('one-7-0', 'discard')),
        wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
        wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']),
        wr(['lvremove', '-y', 'vg/one-7-0']),
        wr(journalEnd('one-7-0', 'discard')),
        wr(['rm', '-rf', '--', DIR]),
      ],
    );
    await tm('delete', DEL, on(r));
  });

  it("one disk: removes it and its snapshots, not the VM's other disk, and only D", async () => {
    const other = cloneRow('one-7-1', U.d1, U.image);
    const worlds: World[] = [
      { rows: [img(), snap3(U.c2), top({}, U.c2), other] },
      { rows: [img(), snap3(U.c2), other] },
    ];
    const r = script(recorder('node1'), worlds, [
      O,
      wr(journalBegin('one-7-0', 'discard')),
      wr(['lvremove', '-y', 'vg/one-7-0']),
      wr(journalEnd('one-7-0', 'discard')),
      O, // the top first, then what it stood on
      wr(journalBegin('one-7-0-s3', 'discard')),
      wr(['lvremove', '-y', 'vg/one-7-0-s3']),
      wr(journalEnd('one-7-0-s3', 'discard')),
      wr(['rm', '-f', '--', `${DIR}/disk.0`]),
    ]);
    expect((await tm('delete', [D, '7', '0'], on(r))).info).toEqual(['removed one-7-0, one-7-0-s3']);
  });

  it('an undeployed VM (on the front-end): its LVs go through the first node, its dir on the front-end', async () => {
    const node = script(
      recorder('node1'),
      [{ rows: [img(), top()] }],
      [
        O,
        wr(journalBegin('one-7-0', 'discard')),
        wr(['lvremove', '-y', 'vg/one-7-0']),
        wr(journalEnd('one-7-0', 'discard')),
      ],
    );
    const fe = script(recorder('localhost'), [], [wr(['rm', '-rf', '--', DIR])]);
    const { info } = await tm('delete', ['fe:/var/lib/one//datastores/0/7/', '7', '0'], { node1: node, localhost: fe });
    expect(info).toEqual(['removed one-7-0']);
  });

  it('a re-run after success finds nothing left: it removes the directory again', async () => {
    const r = script(recorder('node1'), [{ rows: [img()] }], [O, wr(['rm', '-rf', '--', DIR])]);
    await tm('delete', DEL, on(r));
  });

  it('a failed lvremove leaves the COW released; the re-run removes it', async () => {
    const r1 = script(
      recorder('node1'),
      [mapped()],
      [
        O,
        wr(journalBegin('one-7-0', 'discard')),
        wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
        wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']),
        wr(['lvremove', '-y', 'vg/one-7-0'], { exitCode: 5 }),
        wr(journalEnd('one-7-0', 'discard')),
      ],
    );
    await rejectionOf(tm('delete', DEL, on(r1)), EXIT.FAILED);
    const r2 = script(
      recorder('node1'),
      [{ rows: [img(), top()] }],
      [
        O,
        wr(journalBegin('one-7-0', 'discard')),
        wr(['lvremove', '-y', 'vg/one-7-0']),
        wr(journalEnd('one-7-0', 'discard')),
        wr(['rm', '-rf', '--', DIR]),
      ],
    );
    await tm('delete', DEL, on(r2));
  });
});

// ---- ln / mvds --------------------------------------------------------------------------------------

const LN = ['fe:vg/img', D, '7', '0'];

describe('tm ln', () => {
  it('starts an exclusive COW on the persistent image (never the image itself), maps it and links D', async () => {
    const worlds: World[] = [{ rows: [img()] }, { rows: [img()] }, { rows: [img(), top()] }];
    const r = script(recorder('node1'), worlds, [
      O,
      R,
      ...createTop(U.image),
      O,
      ...mapOnImage(U.c3),
      ...link(`/dev/mapper/${rwName(U.c3)}`),
    ]);
    expect((await tm('ln', LN, on(r))).info).toEqual(['persistent img: COW one-7-0 on img']);
  });

  it('a re-run after success checks the mapping in place and links D again', async () => {
    const r = script(recorder('node1'), [mapped()], [O, O, ...relinkMapped()]);
    await tm('ln', LN, on(r));
  });

  it('a failed map keeps the new COW; the re-run maps that one and creates no second COW', async () => {
    const worlds: World[] = [{ rows: [img()] }, { rows: [img()] }, { rows: [img(), top()] }];
    const failing = mapOnImage(U.c3).slice(0, 4); // up to the re-read of the COW after its activation
    const r1 = script(recorder('node1'), worlds, [
      O,
      R,
      ...createTop(U.image),
      O,
      ...failing,
      rwOnImage({ exitCode: 1 }),
      wr(['lvchange', '-an', 'vg/one-7-0']),
      wr(['lvchange', '-an', 'vg/img']),
      wr(journalEnd('one-7-0', 'map')),
    ]);
    await rejectionOf(tm('ln', LN, on(r1)), EXIT.FAILED);
    // The COW is live and released: the re-run skips its creation (no lvcreate) and maps it.
    const after: World = { rows: [img(), top()] };
    const r2 = script(recorder('node1'), [after], [O, O, ...mapOnImage(U.c3), ...link(`/dev/mapper/${rwName(U.c3)}`)]);
    expect((await tm('ln', LN, on(r2))).info).toEqual([]);
  });
});

describe('tm mvds', () => {
  const MVDS = [D, 'fe:vg/img', '7', '0'];
  const committed: World = { rows: [img(), top({ state: 'committed' })] };
  const unmapCommit: Step[] = [
    wr(journalBegin('one-7-0', 'commit')),
    wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
    wr(commitMarkArgv('vg/one-7-0')),
    wr(['lvchange', '-an', 'vg/img']),
    wr(journalEnd('one-7-0', 'commit')),
  ];
  const rm = wr(['rm', '-f', '--', `${DIR}/disk.0`]);

  it('commits the mapped COW and renames it into the lineage as img-p1, then removes D', async () => {
    const r = script(
      recorder('node1'),
      [mapped(), mapped(), committed],
      [O, O, ...unmapCommit, O, O, wr(['lvrename', VG, 'one-7-0', 'img-p1']), rm],
    );
    expect((await tm('mvds', MVDS, on(r))).info).toEqual(["synced one-7-0 back into img's lineage as img-p1"]);
  });

  it('a re-run after success finds the disk gone and only removes D again', async () => {
    const r = script(
      recorder('node1'),
      [{ rows: [img(), cloneRow('img-p1', U.c3, U.image, { state: 'committed' })] }],
      [O, rm],
    );
    expect((await tm('mvds', MVDS, on(r))).info).toEqual(['one-7-0 is not in vg: already synced back']);
  });

  it('a failed rename leaves the committed disk; the re-run renames it without committing again', async () => {
    const r1 = script(
      recorder('node1'),
      [mapped(), mapped(), committed],
      [O, O, ...unmapCommit, O, O, wr(['lvrename', VG, 'one-7-0', 'img-p1'], { exitCode: 5 })],
    );
    await rejectionOf(tm('mvds', MVDS, on(r1)), EXIT.FAILED);
    const r2 = script(recorder('node1'), [committed], [O, O, O, wr(['lvrename', VG, 'one-7-0', 'img-p1']), rm]);
    await tm('mvds', MVDS, on(r2));
  });
});

// ---- resize, monitor, migration hooks ------------------------------------------------------------------

describe('tm resize', () => {
  const RS = [D, '64', '7', '0'];
  const grow = (o: { exitCode?: number } = {}) => wr(['lvextend', '-L', `${72 * MiB}b`, 'vg/one-7-0'], o);

  it('grows the COW of an image-backed disk so it can hold a rewrite of the whole disk', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top()] }], [O, O, grow()]);
    expect((await tm('resize', RS, on(r))).info).toEqual(['vg/one-7-0: COW grown 72 MiB']);
  });

  it('a re-run after success changes nothing', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top({ size: 72 * MiB })] }], [O, O]);
    expect((await tm('resize', RS, on(r))).info).toEqual(['vg/one-7-0: COW already 72 MiB']);
  });

  it('a failed lvextend is retried by the re-run', async () => {
    const w = { rows: [img(), top()] };
    await rejectionOf(tm('resize', RS, on(script(recorder('node1'), [w], [O, O, grow({ exitCode: 5 })]))), EXIT.FAILED);
    await tm('resize', RS, on(script(recorder('node1'), [w], [O, O, grow()])));
  });

  it('grows a volatile disk in place; a re-run changes nothing', async () => {
    const big = [D, '2048', '7', '0'];
    const r1 = script(
      recorder('node1'),
      [{ rows: [vol()] }],
      [O, wr(['lvextend', '-L', `${2048 * MiB}b`, 'vg/one-7-0'])],
    );
    expect((await tm('resize', big, on(r1))).info).toEqual(['vg/one-7-0 grown to 2048 MiB']);
    await tm('resize', big, on(script(recorder('node1'), [{ rows: [vol({ size: 2048 * MiB })] }], [O])));
  });

  it('refuses (6) to grow a COW disk beyond its image, and writes nothing', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top()] }], [O]);
    await rejectionOf(tm('resize', [D, '128', '7', '0'], on(r)), EXIT.REFUSED);
  });
});

/** A host that does not answer (ssh fails to connect). */
const unreachable: Runner = {
  target: 'node1',
  run: async (_req: RunRequest): Promise<RunResult> => {
    throw new CowstackError(EXIT.UNREACHABLE, 'cannot reach host node1 over ssh');
  },
  close: async () => {},
};

describe('tm monitor', () => {
  const XML = Buffer.from('<DATASTORE><TEMPLATE><BRIDGE_LIST>node1</BRIDGE_LIST></TEMPLATE></DATASTORE>').toString(
    'base64',
  );
  const asks = (name: string) => script(recorder(name), [{ rows: [img()] }], [O, rd(vgsArgv(VG), { stdout: VGS_ROW })]);
  const TOTALS = `USED_MB=${50 * 1024}\nFREE_MB=${50 * 1024}\nTOTAL_MB=${100 * 1024}\n`;

  it('prints the VG totals as seen from the first bridge host; a re-run prints the same', async () => {
    for (let i = 0; i < 2; i++)
      expect((await tm('monitor', ['0'], { node1: asks('node1') }, XML)).out).toEqual([TOTALS]);
  });

  it('an unreachable host is skipped for the next one', async () => {
    const { out } = await tm('monitor', ['0'], { node1: unreachable, node2: asks('node2') }, XML);
    expect(out).toEqual([TOTALS]);
  });

  it('every host unreachable: the action fails unreachable after trying each one', async () => {
    const down = { ...unreachable, target: 'node2' };
    const info: string[] = [];
    await rejectionOf(tm('monitor', ['0'], { node1: unreachable, node2: down }, XML, info), EXIT.UNREACHABLE);
    expect(info).toEqual(['host node1 is unreachable', 'host node2 is unreachable']);
  });

  // The VMs' disks: 7 runs on node1 (disk 0 live on snapshot 3), 8 has a volatile disk, 9's COW
  // overflowed on node2, 10's disk is mapped nowhere (no figure: oned keeps its last one).
  const vmRows = [
    img('shared'),
    top({ active: 'exclusive', open: true, minor: 8 }, U.c2),
    snap3(U.c2),
    imageRow('one-8-1', U.n1, { state: 'writable', size: 1024 * MiB }),
    cloneRow('one-9-0', U.d1, U.image),
    cloneRow('one-10-0', U.c1, U.image),
  ];
  const vmXml = (flag?: string) =>
    Buffer.from(
      `<DS_DRIVER_ACTION_DATA><DATASTORE><TEMPLATE><BRIDGE_LIST>node1</BRIDGE_LIST></TEMPLATE></DATASTORE>` +
        `${flag === undefined ? '' : `<MONITOR_VM_DISKS>${flag}</MONITOR_VM_DISKS>`}</DS_DRIVER_ACTION_DATA>`,
    ).toString('base64');
  const node1 = (...then: Step[]) =>
    script(
      recorder('node1'),
      [{ rows: vmRows, devs: mapped().devs }],
      [O, rd(vgsArgv(VG), { stdout: VGS_ROW }), ...then],
    );
  // 6160 sectors allocated = 3 MiB of chunks + 16 metadata sectors; 2064 = 1 MiB + 16.
  const statusNode1 = rd(DM_STATUS, {
    stdout: dmStatus({
      [rwName(U.c3)]: '0 131072 snapshot 6160/32768 16',
      [roName(U.c2)]: '0 131072 snapshot 2064/32768 16',
    }),
  });
  const statusNode2 = rd(DM_STATUS, { stdout: dmStatus({ [rwName(U.d1)]: '0 131072 snapshot Overflow' }) });
  const decode = (line: string) => {
    const m = /^VM=\[ID=(\d+),MONITOR="([A-Za-z0-9+/= ]*)"\]$/.exec(line);
    expect(m, line).not.toBeNull();
    return [Number(m![1]), m![2]!.split(' ').map((b) => Buffer.from(b, 'base64').toString())];
  };

  it("prints each VM's disk use: a COW's allocated sectors rounded up to MiB, a volatile LV whole", async () => {
    const r2 = script(recorder('node2'), [], [statusNode2]);
    const { out } = await tm('monitor', ['0'], { node1: node1(statusNode1), node2: r2 }, vmXml('1'));
    const lines = out.join('').split('\n').filter(Boolean);
    expect(lines.slice(0, 3)).toEqual(TOTALS.trim().split('\n'));
    expect(lines.slice(3).map(decode)).toEqual([
      [7, ['DISK_SIZE=[ID=0,SIZE=4]', 'SNAPSHOT_SIZE=[ID=3,DISK_ID=0,SIZE=2]']],
      [8, ['DISK_SIZE=[ID=1,SIZE=1024]']],
      // overflowed: the whole 16 MiB COW is used
      [9, ['DISK_SIZE=[ID=0,SIZE=16]']],
    ]);
    // each entry is base64-encoded on its own, as the fs_lvm and lvm drivers do
    expect(lines[3]).toBe(
      `VM=[ID=7,MONITOR="${Buffer.from('DISK_SIZE=[ID=0,SIZE=4]').toString('base64')} ` +
        `${Buffer.from('SNAPSHOT_SIZE=[ID=3,DISK_ID=0,SIZE=2]').toString('base64')}"]`,
    );
  });

  it('MONITOR_VM_DISKS=0 (oned between its VM disk cycles): the totals only, no host is asked', async () => {
    const { out } = await tm('monitor', ['0'], { node1: node1(), node2: recorder('node2') }, vmXml('0'));
    expect(out).toEqual([TOTALS]);
  });

  it('a host that cannot be reached to measure its disks is named; the others are still reported', async () => {
    const info: string[] = [];
    const down = { ...unreachable, target: 'node2' };
    const { out } = await tm('monitor', ['0'], { node1: node1(statusNode1), node2: down }, vmXml('1'), info);
    expect(info).toEqual(['host node2 is unreachable: its VM disks are not measured']);
    expect(
      out
        .join('')
        .split('\n')
        .filter((l) => l.startsWith('VM='))
        .map(decode)
        .map(([vm]) => vm),
    ).toEqual([7, 8]);
  });

  it('a host that does not see the VG: not found (7), naming the host', async () => {
    const r = script(recorder('node1'), [{ rows: [] }], [O, rd(vgsArgv(VG), { stdout: vgsJson([]) })]);
    const e = await rejectionOf(tm('monitor', ['0'], { node1: r }, XML), EXIT.NOT_FOUND);
    expect(e.message).toBe('repository VG vg is not visible on node1');
  });
});

describe('tm premigrate / postmigrate / failmigrate', () => {
  const args = ['node1', 'node2', DIR, '7', '0'];
  const PLACEHOLDER = ['dmsetup', 'table', rwName(U.c3)];
  const placeholderTable = rd(PLACEHOLDER, { stdout: '0 131072 error\n' });
  const noFiles = rd(['find', DIR, '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n']);
  // node2 after premigrate: the image shared, the placeholder open by the incoming qemu.
  const prepared = (open = 1): World => ({
    rows: [img('shared'), top()],
    devs: [lvDev('img', U.image, 3, 0, true), rwDev(U.c3, 9, open)],
  });

  it('premigrate prepares each clone disk on the destination and links it there', async () => {
    const src = script(recorder('node1'), [], [noFiles]);
    const dst = script(
      recorder('node2'),
      [{ rows: [img(), top()] }],
      [
        O,
        O,
        wr(journalBegin('one-7-0', 'migrate-prepare')),
        wr(['lvchange', '-asy', 'vg/img']),
        wr(createRw(U.c3, '0 131072 error')),
        wr(journalEnd('one-7-0', 'migrate-prepare')),
        ...link(`/dev/mapper/${rwName(U.c3)}`),
      ],
    );
    const { info } = await tm('premigrate', args, { node1: src, node2: dst });
    expect(info).toEqual([`node2: one-7-0 prepared (prepared), ${DIR}/disk.0 -> /dev/mapper/${rwName(U.c3)}`]);
  });

  it('premigrate refuses (6) a VM with a volatile disk before anything is written', async () => {
    const dst = script(recorder('node2'), [{ rows: [img(), imageRow('one-7-1', U.n1, { state: 'writable' })] }], [O]);
    const e = await rejectionOf(tm('premigrate', args, { node1: recorder('node1'), node2: dst }), EXIT.REFUSED);
    expect(e.message).toContain('volatile disk(s) one-7-1');
  });

  it('failmigrate removes the closed placeholder and its link on the destination', async () => {
    const dst = script(
      recorder('node2'),
      [prepared(0)],
      [
        O,
        O,
        placeholderTable,
        rd(DM_INFO, { stdout: dmInfo(prepared(0).devs!) }),
        rd(lvsArgv(VG), { stdout: lvsJson(prepared(0).rows) }),
        wr(journalBegin('one-7-0', 'unmap')),
        wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
        wr(['lvchange', '-an', 'vg/img']),
        wr(journalEnd('one-7-0', 'unmap')),
        wr(['rm', '-f', '--', `${DIR}/disk.0`]),
      ],
    );
    const { info } = await tm('failmigrate', args, { node1: recorder('node1'), node2: dst });
    expect(info).toEqual(['node2: one-7-0 aborted']);
  });

  it('postmigrate after the hand-over: nothing left to release or acquire; the source link goes', async () => {
    const src = script(
      recorder('node1'),
      [{ rows: [img(), top()] }],
      [O, O, O, wr(['rm', '-f', '--', `${DIR}/disk.0`])],
    );
    const dst = script(
      recorder('node2'),
      [mapped(1)],
      [O, rd(PLACEHOLDER, { stdout: '0 131072 snapshot 253:3 253:8 PO 8\n' })],
    );
    const { info } = await tm('postmigrate', args, { node1: src, node2: dst });
    expect(info).toEqual(['one-7-0: node1 none, node2 none']);
  });
});
