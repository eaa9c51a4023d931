/**
 * The TM actions tmActions.test.ts does not cover (mv, cpds, context, activate), end to end
 * against the recording runner: a first run, a re-run after success against the state the
 * first run left (oned re-runs an action whose answer it lost), and a run that fails in the
 * middle followed by the re-run that finishes it.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the image is `img` (64 MiB), the
 * VM's disk 0 is `one-7-0`, its context ISO the file disk.1.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import {
  DM_INFO,
  MiB,
  U,
  cloneRow,
  dmInfo,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  roDev,
  rwDev,
} from './repoFixtures.js';
import { conflictStderr, lvsArgv, lvsJson, recorder, rejectionOf } from './support.js';
import {
  DIR,
  SAVED,
  SHA,
  copyInto,
  savedRow,
  O,
  heldBy,
  roName,
  snap3,
  img,
  link,
  lv,
  mapped,
  rd,
  rwName,
  script,
  tm,
  top,
  withFiles,
  wr,
  type Step,
  type World,
} from './tmFixtures.js';

// ---- mv -------------------------------------------------------------------------------------------

/** The VM directory as `find -type f` lists it on the source: the context ISO (D itself is a symlink). */
const FIND = ['find', DIR, '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n'];
const ISO = 'CD001 context of VM 7';
/** The context ISO copied from node1 to node2 through the front-end. */
const copyIso: { a: Step[]; b: Step[] } = {
  a: [rd(FIND, { stdout: 'disk.1\n' }), rd(['cat', '--', `${DIR}/disk.1`], { stdout: ISO })],
  b: [wr(['mkdir', '-p', '--', DIR]), wr(['dd', `of=${DIR}/disk.1`, 'bs=1M', 'status=none'])],
};

const RW = `/dev/mapper/${rwName(U.c3)}`;
/** The VM directory removed on the host the VM left. */
const rm = wr(['rm', '-rf', '--', DIR]);

/** The disk mapped on a node for its VM, as dmsetup lists it (devs_used: the rw device stands on img and the COW). */
const mappedOn = (open = 0): World => ({
  rows: mapped().rows,
  devs: [
    lvDev('img', U.image, 3, 1, true),
    lvDev('one-7-0', U.c3, 8, 1),
    { ...rwDev(U.c3, 9, open), uses: ['vg-img', 'vg-one--7--0'] },
  ],
});
/** The disk with nothing of it active on the node looking. */
const released: World = { rows: [img(), top()] };
/** unmapClone of the plain mapping (COW right on the image, not open): from the devices alone. */
const unmapPlain: Step[] = [
  rd(DM_INFO, { stdout: dmInfo(mappedOn().devs!) }),
  wr(journalBegin('one-7-0', 'unmap')),
  wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
  wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']),
  wr(journalEnd('one-7-0', 'unmap')),
];
/** unmapClone of a disk not mapped on this node: it looks and changes nothing. */
const unmapNothing: Step[] = [
  rd(DM_INFO, { stdout: dmInfo([]) }),
  rd(lvsArgv('vg'), { stdout: lvsJson(released.rows) }),
];
/** mapClone of the live COW on a node where nothing of it is active. */
const mapHere = (o: { failAt?: 'cow'; stderr?: string } = {}): Step[] => [
  O,
  wr(journalBegin('one-7-0', 'map')),
  wr(['lvchange', '-asy', 'vg/img']),
  ...(o.failAt === 'cow'
    ? [
        wr(['lvchange', '-aey', 'vg/one-7-0'], { exitCode: 5, stderr: o.stderr }),
        wr(['lvchange', '-an', 'vg/img']), // undone: the image this map activated
        wr(journalEnd('one-7-0', 'map')),
      ]
    : [
        wr(['lvchange', '-aey', 'vg/one-7-0']),
        lv('one-7-0'),
        wr([
          'dmsetup',
          'create',
          rwName(U.c3),
          '--uuid',
          `COWSTACK-rw-${U.c3.replace(/-/g, '')}`,
          '--table',
          '0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0 PO 8',
        ]),
        wr(journalEnd('one-7-0', 'map')),
      ]),
];
/** mapClone finding the disk mapped: it checks the rw device's table in place. */
const mapFound: Step[] = [
  O,
  rd(['dmsetup', 'table', rwName(U.c3)], { stdout: '0 131072 snapshot 253:3 253:8 PO 8\n' }),
];

describe('tm mv', () => {
  const MV = ['node1:/var/lib/one//datastores/0/7', 'node2:/var/lib/one//datastores/0/7/', '7', '0'];
  const nodeA = (extra: Step[] = [rm]) =>
    withFiles(script(recorder('node1'), [mappedOn()], [O, ...unmapPlain, ...copyIso.a, ...extra]));

  it('cold migration: releases the disk on node1, copies the ISO, maps it on node2, removes the dir', async () => {
    const a = nodeA();
    const b = withFiles(script(recorder('node2'), [released], [...copyIso.b, O, ...mapHere(), ...link(RW)]));
    const { info } = await tm('mv', MV, { node1: a, node2: b });
    expect(info).toEqual(['copied 1 file(s) from node1 to node2', 'moved one-7-0 from node1 to node2']);
    expect(b.sent.get(`dd of=${DIR}/disk.1 bs=1M status=none`)).toBe(ISO);
  });

  it('a re-run after success finds the dir gone on node1, the disk mapped on node2: it only links D', async () => {
    const a = withFiles(script(recorder('node1'), [released], [O, ...unmapNothing, rd(FIND, { exitCode: 1 }), rm]));
    const b = withFiles(script(recorder('node2'), [mappedOn()], [O, ...mapFound, ...link(RW)]));
    const { info } = await tm('mv', MV, { node1: a, node2: b });
    expect(info).toEqual(['moved one-7-0 from node1 to node2']);
  });

  it("a failed activation on node2 keeps node1's directory; the re-run copies again and maps the disk", async () => {
    const a1 = nodeA([]);
    const b1 = withFiles(script(recorder('node2'), [released], [...copyIso.b, O, ...mapHere({ failAt: 'cow' })]));
    await rejectionOf(tm('mv', MV, { node1: a1, node2: b1 }), EXIT.FAILED);
    // Nothing was removed on node1 (its script ends before rm -rf): the ISO is still there to copy.
    const a2 = withFiles(script(recorder('node1'), [released], [O, ...unmapNothing, ...copyIso.a, rm]));
    const b2 = withFiles(script(recorder('node2'), [released], [...copyIso.b, O, ...mapHere(), ...link(RW)]));
    const { info } = await tm('mv', MV, { node1: a2, node2: b2 });
    expect(info).toEqual(['copied 1 file(s) from node1 to node2', 'moved one-7-0 from node1 to node2']);
  });

  it('one disk: only that disk moves, and only its link is removed on node1', async () => {
    const args = [`node1:${DIR}/disk.0`, 'node2:/var/lib/one//datastores/0/7/disk.0', '7', '0'];
    // disk.0 is a symlink: find lists no regular file of that name, nothing is copied.
    const a = withFiles(
      script(
        recorder('node1'),
        [mappedOn()],
        [O, ...unmapPlain, rd(FIND, { stdout: 'disk.1\n' }), wr(['rm', '-f', '--', `${DIR}/disk.0`])],
      ),
    );
    const b = withFiles(script(recorder('node2'), [released], [O, ...mapHere(), ...link(RW)]));
    expect((await tm('mv', args, { node1: a, node2: b })).info).toEqual(['moved one-7-0 from node1 to node2']);
  });

  it('refuses (6) a disk still open on node1 (the VM running) before copying anything', async () => {
    const a = script(
      recorder('node1'),
      [mappedOn(1)],
      [
        O,
        rd(DM_INFO, { stdout: dmInfo(mappedOn(1).devs!) }),
        rd(lvsArgv('vg'), { stdout: lvsJson(mappedOn(1).rows) }),
        // An open count can be udev's probe: settle and look again, three times.
        ...[1, 2, 3].flatMap(() => [rd(['udevadm', 'settle', '--timeout=10']), O]),
        // Who holds it, for the message: no device on it, one process.
        rd(['realpath', '-e', '--', RW], { stdout: '/dev/dm-9\n' }),
        rd(['ls', '-1', '-A', '--', '/sys/class/block/dm-9/holders']),
        rd(['fuser', RW], { stdout: ' 4242' }),
        rd(['ps', '-o', 'pid=,user=,comm=', '-p', '4242'], { stdout: ' 4242 oneadmin qemu-system-x86\n' }),
      ],
    );
    const e = await rejectionOf(tm('mv', MV, { node1: a, node2: recorder('node2') }), EXIT.REFUSED);
    expect(e.message).toContain('vg/one-7-0 is in use on this node');
    expect(e.message).toContain('process qemu-system-x86 (pid 4242, user oneadmin)');
  });
});

describe('tm mv through the front-end (undeploy, then resume on another node)', () => {
  const FE_DIR = 'fe:/var/lib/one//datastores/0/7/';

  it('undeploy releases the disk on node1 and keeps only the VM files on the front-end', async () => {
    const a = withFiles(script(recorder('node1'), [mappedOn()], [O, ...unmapPlain, ...copyIso.a, rm]));
    const fe = withFiles(script(recorder('localhost'), [], copyIso.b));
    const { info } = await tm('mv', ['node1:/var/lib/one//datastores/0/7', FE_DIR, '7', '0'], {
      node1: a,
      localhost: fe,
    });
    expect(info).toEqual(['copied 1 file(s) from node1 to fe', 'moved one-7-0 from node1 to fe']);
    expect(fe.sent.get(`dd of=${DIR}/disk.1 bs=1M status=none`)).toBe(ISO);
  });

  it('resume maps the disk on node2 from its own observation and removes the front-end copy', async () => {
    const args = [FE_DIR, 'node2:/var/lib/one//datastores/0/7', '7', '0'];
    const b = withFiles(script(recorder('node2'), [released], [O, ...copyIso.b, ...mapHere(), ...link(RW)]));
    const fe = withFiles(script(recorder('localhost'), [], [...copyIso.a, rm]));
    expect((await tm('mv', args, { node2: b, localhost: fe })).info).toEqual([
      'copied 1 file(s) from fe to node2',
      'moved one-7-0 from fe to node2',
    ]);
    // A re-run: the front-end directory is gone, the disk is mapped: D is linked again.
    const b2 = withFiles(script(recorder('node2'), [mappedOn()], [O, ...mapFound, ...link(RW)]));
    const fe2 = withFiles(script(recorder('localhost'), [], [rd(FIND, { exitCode: 1 }), rm]));
    expect((await tm('mv', args, { node2: b2, localhost: fe2 })).info).toEqual(['moved one-7-0 from fe to node2']);
  });

  it('within one host: nothing to do for the same path, a usage error (2) for another one', async () => {
    const same = ['node1:/var/lib/one//datastores/0/7', 'node1:/var/lib/one/datastores/0/7/', '7', '0'];
    expect((await tm('mv', same, { node1: recorder('node1') })).info).toEqual([]);
    const other = ['node1:/var/lib/one/datastores/0/7', 'node1:/var/lib/one/datastores/1/7', '7', '0'];
    await rejectionOf(tm('mv', other, { node1: recorder('node1') }), EXIT.USAGE);
  });
});

describe('tm mv of a volatile disk', () => {
  const MV = ['node1:/var/lib/one//datastores/0/7', 'node2:/var/lib/one//datastores/0/7/', '7', '0'];
  const VOL = '/dev/mapper/vg-one--7--0';
  const vol = (active?: 'exclusive') =>
    imageRow('one-7-0', U.n1, { state: 'writable', size: 1024 * MiB, active, minor: 5 });
  const activeHere: World = { rows: [vol('exclusive')], devs: [lvDev('one-7-0', U.n1, 5, 0)] };

  // The disk was active on node1 when mv observed it there: node2 must still activate it.
  it('deactivates the disk on node1 and activates it on node2 before linking D there', async () => {
    const a = withFiles(
      script(
        recorder('node1'),
        [activeHere],
        [O, wr(['lvchange', '-an', 'vg/one-7-0']), ...copyIso.a, wr(['rm', '-rf', '--', DIR])],
      ),
    );
    const b = withFiles(
      script(
        recorder('node2'),
        [{ rows: [vol()] }],
        [...copyIso.b, O, wr(['lvchange', '-aey', 'vg/one-7-0']), ...link(VOL)],
      ),
    );
    const { info } = await tm('mv', MV, { node1: a, node2: b });
    expect(info).toEqual(['copied 1 file(s) from node1 to node2', 'moved one-7-0 from node1 to node2']);
  });

  it('a re-run after success activates nothing again (the disk is active on node2) and links D', async () => {
    const a = withFiles(script(recorder('node1'), [{ rows: [vol()] }], [O, rd(FIND, { exitCode: 1 }), rm]));
    const b = withFiles(script(recorder('node2'), [activeHere], [O, ...link(VOL)]));
    expect((await tm('mv', MV, { node1: a, node2: b })).info).toEqual(['moved one-7-0 from node1 to node2']);
  });
});

// ---- cpds -------------------------------------------------------------------------------------------

describe('tm cpds', () => {
  const CPDS = [`node1:${DIR}/disk.0`, 'fe:vg/saved', '-1', '7', '0'];
  const withSaved = (w: World): World => ({
    rows: [...w.rows, savedRow()],
    devs: w.devs,
  });

  it('saves the powered-off disk as a new sealed image, copying from its mapped device', async () => {
    const worlds = [mappedOn(), mappedOn(), mappedOn(), withSaved(mappedOn())];
    const r = script(recorder('node1'), worlds, [O, O, ...mapFound, ...copyInto(RW)]);
    const { info } = await tm('cpds', CPDS, { node1: r });
    expect(info).toEqual([`saved one-7-0 as image vg/saved (sha256 ${SHA})`]);
  });

  it('a re-run after success finds the image it made (by its marker tag) and copies nothing', async () => {
    const r = script(recorder('node1'), [withSaved(mappedOn())], [O, O]);
    const { info } = await tm('cpds', CPDS, { node1: r });
    expect(info).toEqual([`saved one-7-0 as image vg/saved (sha256 ${SHA})`]);
  });

  it('a failed copy removes the half-made image; the re-run copies again', async () => {
    const r1 = script(recorder('node1'), [mappedOn()], [O, O, ...mapFound, ...copyInto(RW, { failDd: true })]);
    const e = await rejectionOf(tm('cpds', CPDS, { node1: r1 }), EXIT.FAILED);
    expect(e.message).toContain(`of=${SAVED}`);
    // The half-made LV is gone (lvremove above), the disk stays mapped as it was: the re-run starts over.
    const worlds = [mappedOn(), mappedOn(), mappedOn(), withSaved(mappedOn())];
    const r2 = script(recorder('node1'), worlds, [O, O, ...mapFound, ...copyInto(RW)]);
    expect((await tm('cpds', CPDS, { node1: r2 })).info).toEqual([`saved one-7-0 as image vg/saved (sha256 ${SHA})`]);
  });

  it('a disk not mapped here is mapped for the copy and released after it, even when the copy fails', async () => {
    const unmapAfter: Step[] = [
      rd(DM_INFO, { stdout: dmInfo(mappedOn().devs!) }),
      wr(journalBegin('one-7-0', 'unmap')),
      wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
      wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']),
      wr(journalEnd('one-7-0', 'unmap')),
    ];
    const r1 = script(
      recorder('node1'),
      [released, released, released, mappedOn()],
      [O, O, ...mapHere(), ...copyInto(RW, { failDd: true }), ...unmapAfter],
    );
    await rejectionOf(tm('cpds', CPDS, { node1: r1 }), EXIT.FAILED);
    const r2 = script(
      recorder('node1'),
      [released, released, released, withSaved(mappedOn())],
      [O, O, ...mapHere(), ...copyInto(RW), ...unmapAfter],
    );
    expect((await tm('cpds', CPDS, { node1: r2 })).info).toEqual([`saved one-7-0 as image vg/saved (sha256 ${SHA})`]);
  });

  const SNAP3 = [`node1:${DIR}/disk.0`, 'fe:vg/saved', '3', '7', '0'];
  /** The snapshot's read-only device, mapped for the copy (the disk's top stands on it, unmapped). */
  const mapSnap: Step[] = [
    wr(journalBegin('one-7-0-s3', 'map')),
    wr(['lvchange', '-asy', 'vg/img']),
    wr(['lvchange', '-asy', 'vg/one-7-0-s3']),
    wr([
      'dmsetup',
      'create',
      roName(U.c2),
      '--uuid',
      `COWSTACK-ro-${U.c2.replace(/-/g, '')}`,
      '--readonly',
      '--table',
      '0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0--s3 P 8',
    ]),
    wr(journalEnd('one-7-0-s3', 'map')),
  ];
  const onSnap: World = { rows: [img(), snap3(U.c2), top({}, U.c2)] };
  const flatMark = `cowstack_flattened_from:${U.c2}`;
  const flattened = () => savedRow(flatMark);

  it('snapshot 3: flattens it through a read-only mapping, which is taken down after the copy', async () => {
    const s3 = cloneRow('one-7-0-s3', U.c2, U.image, { state: 'committed', active: 'shared', open: true, minor: 4 });
    const snapMapped: World = {
      rows: [img('shared'), s3, top({}, U.c2), flattened()],
      devs: [
        lvDev('img', U.image, 3, 1, true),
        lvDev('one-7-0-s3', U.c2, 4, 1, true),
        { ...roDev(U.c2, 5, 0), uses: ['vg-img', 'vg-one--7--0--s3'] },
      ],
    };
    const r = script(
      recorder('node1'),
      [onSnap, onSnap, onSnap, snapMapped],
      [
        O,
        O,
        O,
        ...mapSnap,
        ...copyInto(`/dev/mapper/${roName(U.c2)}`, { mark: flatMark }),
        // collectGarbage: the mapping nothing uses any more goes.
        O,
        wr(['dmsetup', 'remove', '--retry', roName(U.c2)]),
        wr(['lvchange', '-an', 'vg/one-7-0-s3', 'vg/img']),
      ],
    );
    expect((await tm('cpds', SNAP3, { node1: r })).info).toEqual([
      `saved one-7-0-s3 as image vg/saved (sha256 ${SHA})`,
    ]);
    // The re-run finds the image by its marker: nothing is mapped or copied again.
    const r2 = script(recorder('node1'), [{ rows: [...onSnap.rows, flattened()] }], [O, O]);
    expect((await tm('cpds', SNAP3, { node1: r2 })).info).toEqual([
      `saved one-7-0-s3 as image vg/saved (sha256 ${SHA})`,
    ]);
  });

  it('refuses a missing snapshot (7), a volatile disk (2) and an open disk (6), writing nothing', async () => {
    const none = script(recorder('node1'), [{ rows: [img(), top()] }], [O]);
    expect((await rejectionOf(tm('cpds', SNAP3, { node1: none }), EXIT.NOT_FOUND)).message).toContain('one-7-0-s3');
    const vol = imageRow('one-7-0', U.n1, { state: 'writable' });
    await rejectionOf(tm('cpds', CPDS, { node1: script(recorder('node1'), [{ rows: [vol] }], [O]) }), EXIT.USAGE);
    // A transient opener (udev's probe) gets three chances to go before the disk counts as open.
    const settle = rd(['udevadm', 'settle', '--timeout=10']);
    const open = script(recorder('node1'), [mappedOn(1)], [O, O, settle, O, settle, O, settle, O]);
    await rejectionOf(tm('cpds', CPDS, { node1: open }), EXIT.REFUSED);
  });
});

// ---- context ----------------------------------------------------------------------------------------

describe('tm context', () => {
  const STAGE = `${DIR}/.context.1`;
  const ISO_PATH = `${DIR}/disk.1`;
  let files: { dir: string; args: string[] };
  beforeAll(async () => {
    const dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-ctx-'));
    await fsp.writeFile(path.join(dir, 'context.sh'), 'ETH0_IP=10.0.0.7\n');
    await fsp.writeFile(path.join(dir, 'key.pub'), 'ssh-ed25519 AAAA test\n');
    files = { dir, args: [`${dir}/context.sh`, `${dir}/key.pub:id_ed25519.pub`] };
  });
  afterAll(async () => fsp.rm(files.dir, { recursive: true, force: true }));
  const args = () => [...files.args, `node1:/var/lib/one//datastores/0/7/disk.1`, '7', '0'];
  const build = (o: { failIso?: boolean } = {}): Step[] => [
    wr(['rm', '-rf', '--', STAGE]),
    wr(['mkdir', '-p', '--', STAGE]),
    wr(['dd', `of=${STAGE}/context.sh`, 'bs=1M', 'status=none']),
    wr(['dd', `of=${STAGE}/id_ed25519.pub`, 'bs=1M', 'status=none']),
    wr(['rm', '-f', '--', ISO_PATH]),
    wr(['genisoimage', '-quiet', '-o', ISO_PATH, '-V', 'CONTEXT', '-J', '-R', STAGE], o.failIso ? { exitCode: 1 } : {}),
    ...(o.failIso ? [] : [wr(['rm', '-rf', '--', STAGE])]),
  ];
  const DONE = `context ISO with 2 file(s) at ${ISO_PATH} on node1`;

  it('stages the files under their ISO names, builds the CONTEXT ISO at D and removes the staging dir', async () => {
    const r = withFiles(script(recorder('node1'), [], build()));
    expect((await tm('context', args(), { node1: r })).info).toEqual([DONE]);
    expect(r.sent.get(`dd of=${STAGE}/context.sh bs=1M status=none`)).toBe('ETH0_IP=10.0.0.7\n');
    expect(r.sent.get(`dd of=${STAGE}/id_ed25519.pub bs=1M status=none`)).toBe('ssh-ed25519 AAAA test\n');
  });

  it('a re-run after success builds the same ISO again from a clean staging dir', async () => {
    for (let i = 0; i < 2; i++) {
      const r = withFiles(script(recorder('node1'), [], build()));
      expect((await tm('context', args(), { node1: r })).info).toEqual([DONE]);
    }
  });

  it('a failed genisoimage leaves the staging dir; the re-run removes it first and builds the ISO', async () => {
    const r1 = withFiles(script(recorder('node1'), [], build({ failIso: true })));
    expect((await rejectionOf(tm('context', args(), { node1: r1 }), EXIT.FAILED)).message).toContain('genisoimage');
    const r2 = withFiles(script(recorder('node1'), [], build()));
    expect((await tm('context', args(), { node1: r2 })).info).toEqual([DONE]);
    expect(r2.calls[0]?.argv).toEqual(['rm', '-rf', '--', STAGE]);
  });

  it('a context file missing on the front-end is not found (7) before anything runs on the node', async () => {
    const missing = [`${files.dir}/gone.sh`, `node1:${DIR}/disk.1`, '7', '0'];
    await rejectionOf(tm('context', missing, { node1: recorder('node1') }), EXIT.NOT_FOUND);
  });
});

// ---- activate ---------------------------------------------------------------------------------------

describe('tm activate', () => {
  const JOURNAL_LS = rd(['ls', '-1', '-A', '--', '/var/lib/cowstack/journal']);
  /** recover with an empty journal: its look for unused devices, then the node status (observe, status, tables). */
  const recoverNothing = (tables = ''): Step[] => [
    JOURNAL_LS,
    O,
    O,
    rd(['dmsetup', 'status']),
    rd(['dmsetup', 'table'], { stdout: tables }),
    JOURNAL_LS,
  ];
  const LINKS = [`${DIR}/disk.0`, `${DIR}/disk.2`, '/var/lib/one/datastores/0/8/disk.0'];
  const FIND_LINKS = rd(
    ['find', '/var/lib/one/datastores', '-mindepth', '3', '-maxdepth', '3', '-type', 'l', '-name', 'disk.*'],
    {
      stdout: LINKS.map((l) => `${l}\n`).join(''),
    },
  );
  const VOL2 = '/dev/mapper/vg-one--7--2';
  const vol2 = (active?: 'exclusive') =>
    imageRow('one-7-2', U.n1, { state: 'writable', size: 1024 * MiB, active, minor: 10 });
  /** After a reboot: nothing active, the links in the system datastore left dangling. */
  const rebooted: World = { rows: [img(), top(), vol2()] };
  const up: World = {
    rows: [...mappedOn().rows, vol2('exclusive')],
    devs: [...mappedOn().devs!, lvDev('one-7-2', U.n1, 10, 0)],
  };
  const TABLES = `${rwName(U.c3)}: 0 131072 snapshot 253:3 253:8 PO 8\n`;
  const INFO = ['recover on node1: 0 action(s)', `${DIR}/disk.0 -> ${RW}`, `${DIR}/disk.2 -> ${VOL2}`];

  const firstRun: Step[] = [
    ...recoverNothing(),
    FIND_LINKS,
    O,
    ...mapHere(),
    ...link(RW, 0),
    wr(['lvchange', '-aey', 'vg/one-7-2']),
    ...link(VOL2, 2),
  ];

  it('after a reboot: recovers, maps the COW disk and activates the volatile one behind each link', async () => {
    const r = script(recorder('node1'), [rebooted], firstRun);
    // VM 8's link has no disk in the VG (the VM is gone): it is left alone.
    expect((await tm('activate', ['node1'], { node1: r })).info).toEqual(INFO);
  });

  it('a re-run after success keeps every mapping: it checks them and links again', async () => {
    const r = script(
      recorder('node1'),
      [up],
      [...recoverNothing(TABLES), FIND_LINKS, O, ...mapFound, ...link(RW, 0), ...link(VOL2, 2)],
    );
    expect((await tm('activate', ['node1'], { node1: r })).info).toEqual(INFO);
  });

  it('a COW that fails to map does not keep the next disk down; the re-run maps it', async () => {
    const r1 = script(
      recorder('node1'),
      [rebooted],
      [
        ...recoverNothing(),
        FIND_LINKS,
        O,
        ...mapHere({ failAt: 'cow' }),
        wr(['lvchange', '-aey', 'vg/one-7-2']),
        ...link(VOL2, 2),
      ],
    );
    await rejectionOf(tm('activate', ['node1'], { node1: r1 }), EXIT.FAILED);
    // The map undid itself (the image released, the journal entry closed); the volatile disk is up.
    const half: World = { rows: [img(), top(), vol2('exclusive')], devs: [lvDev('one-7-2', U.n1, 10, 0)] };
    const r2 = script(
      recorder('node1'),
      [half],
      [...recoverNothing(), FIND_LINKS, O, ...mapHere(), ...link(RW, 0), ...link(VOL2, 2)],
    );
    expect((await tm('activate', ['node1'], { node1: r2 })).info).toEqual(INFO);
  });

  // Several repositories: `cowstack tm activate` runs once per VG; each pass leaves the links of
  // datastores another VG holds to that VG's pass, although a disk of that name is in this VG.
  it('with several repositories it brings up only the disks of datastores mapped to its VG', async () => {
    const r = script(recorder('node1'), [rebooted], [...recoverNothing(), FIND_LINKS, O]);
    const vgOf = (ds: number) => (ds === 0 ? 'repo2' : 'vg');
    const { info } = await tm('activate', ['node1'], { node1: r }, '', [], { vgOf });
    expect(info).toEqual(['recover on node1: 0 action(s)']);
  });

  // A stale link after a failover: VM 7 runs on node2 now, its COW is locked there.
  it('a COW locked by another host is reported, the next disk still comes up, the action fails (4)', async () => {
    const r = script(
      recorder('node1'),
      [rebooted],
      [
        ...recoverNothing(),
        FIND_LINKS,
        O,
        ...mapHere({ failAt: 'cow', stderr: conflictStderr() }),
        ...heldBy('one-7-0', U.c3, 2),
        wr(['lvchange', '-aey', 'vg/one-7-2']),
        ...link(VOL2, 2),
      ],
    );
    const info: string[] = [];
    const e = await rejectionOf(tm('activate', ['node1'], { node1: r }, '', info), EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('vg/one-7-0 is locked by another host (held by node2, sanlock host_id 2)');
    expect(info).toEqual([
      'recover on node1: 0 action(s)',
      `${DIR}/disk.0: vg/one-7-0 is locked by another host (held by node2, sanlock host_id 2)`,
      `${DIR}/disk.2 -> ${VOL2}`,
    ]);
  });
});
