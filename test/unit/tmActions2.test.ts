/**
 * The TM actions tmActions.test.ts does not cover (mv, cpds, context, activate), end to end
 * against the recording runner: a first run, a re-run after success against the state the
 * first run left (oned re-runs an action whose answer it lost), and a run that fails in the
 * middle followed by the re-run that finishes it.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the image is `img` (64 MiB), the
 * VM's disk 0 is `one-7-0`, its context ISO the file disk.1.
 */
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { DM_INFO, MiB, U, dmInfo, imageRow, journalBegin, journalEnd, lvDev, rwDev } from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf } from './support.js';
import {
  DIR,
  O,
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
const mapHere = (o: { failAt?: 'cow' } = {}): Step[] => [
  O,
  wr(journalBegin('one-7-0', 'map')),
  wr(['lvchange', '-asy', 'vg/img']),
  ...(o.failAt === 'cow'
    ? [
        wr(['lvchange', '-aey', 'vg/one-7-0'], { exitCode: 5 }),
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
