/**
 * The TM actions tmActions.test.ts does not cover (mv, cpds, context, activate), end to end
 * against the recording runner: a first run, a re-run after success against the state the
 * first run left (oned re-runs an action whose answer it lost), and a run that fails in the
 * middle followed by the re-run that finishes it.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the image is `img` (64 MiB), the
 * VM's disk 0 is `one-7-0`, its context ISO the file disk.1.
 */
import { describe, expect, it } from 'vitest';
import { MiB, U, imageRow, lvDev } from './repoFixtures.js';
import { recorder } from './support.js';
import { DIR, O, link, rd, script, tm, withFiles, wr, type Step, type World } from './tmFixtures.js';

// ---- mv -------------------------------------------------------------------------------------------

/** The VM directory as `find -type f` lists it on the source: the context ISO (D itself is a symlink). */
const FIND = ['find', DIR, '-maxdepth', '1', '-type', 'f', '-printf', '%f\\n'];
const ISO = 'CD001 context of VM 7';
/** The context ISO copied from node1 to node2 through the front-end. */
const copyIso: { a: Step[]; b: Step[] } = {
  a: [rd(FIND, { stdout: 'disk.1\n' }), rd(['cat', '--', `${DIR}/disk.1`], { stdout: ISO })],
  b: [wr(['mkdir', '-p', '--', DIR]), wr(['dd', `of=${DIR}/disk.1`, 'bs=1M', 'status=none'])],
};

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
});
