/**
 * TM restore against the recording runner, with the arguments oned passes
 * (`restore HOST:VM_DIR VM_ID IMG_ID INC_ID DISK_ID`, TransferManager::trigger_restore): the
 * front-end asks oned's CLI and the backup datastore driver (`ls -i`) where each disk's backup
 * is, downloads it (`downloader.sh --nodecomp URL -`), and the host writes it into a sealed
 * image the disk becomes a fresh clone of. The data itself: integration/backup.test.ts.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the VM is 7, its disk 0 `one-7-0`;
 * the backup image 12 lives on rsync datastore 100.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { parseTmArgs, vmLvPattern } from '../../src/tm/args.js';
import { listBackup, persistentDisks, restore, type RestoreRequest } from '../../src/tm/restore.js';
import { nodeSession } from '../../src/core/node.js';
import { settleRestore } from '../../src/core/restoreDisk.js';
import { restoredName } from '../../src/core/vmDisks.js';
import { MiB, U, imageRow, journalBegin, journalEnd, lvcreateArgv } from './repoFixtures.js';
import { recorder, rejectionOf, thrownBy } from './support.js';
import {
  DIR,
  O,
  R,
  createTop,
  img,
  link,
  mapped,
  mark,
  rd,
  restoreImageSteps,
  rwName,
  script,
  snap3,
  tm,
  top,
  withFiles,
  wr,
  type Step,
} from './tmFixtures.js';

const ARGS = ['node1:/var/lib/one//datastores/0/7', '7', '12', '-1', '-1'];
const REMOTES = '/var/lib/one/remotes';
const URL0 = 'rsync://100//0:a47997,1:6ca565/var/lib/one/datastores/100/7/6ca565/disk.0.1';
const VM_XML = '<VM><ID>7</ID><STATE>8</STATE></VM>';
const IMG_XML = '<IMAGE><ID>12</ID><TYPE>6</TYPE><DATASTORE_ID>100</DATASTORE_ID><VMS><ID>7</ID></VMS></IMAGE>';
const DS_XML = '<DATASTORE><ID>100</ID><DS_MAD><![CDATA[rsync]]></DS_MAD></DATASTORE>';
const LISTED = JSON.stringify({ 0: URL0, tpm: 'rsync://100//0:a47997/var/lib/one/datastores/100/7/a47997/vm.tpm' });
const FILE = `${DIR}/disk.0.backup`;
const IMAGE = restoredName('one-7-0', 12, createHash('sha256').update(URL0).digest('hex').slice(0, 8));

/** What the front-end runs to find the backup: oned's CLI, then the datastore's ls. */
const asked = (listed = LISTED, inc = '-1'): Step[] => [
  rd(['onevm', 'show', '-x', '7'], { stdout: `${VM_XML}\n` }),
  rd(['oneimage', 'show', '-x', '12'], { stdout: IMG_XML }),
  rd(['onedatastore', 'show', '-x', '100'], { stdout: DS_XML }),
  rd([`${REMOTES}/datastore/rsync/ls`, '-i', inc], { stdout: listed }),
];
const download = { argv: [`${REMOTES}/datastore/downloader.sh`, '--nodecomp', URL0, '-'], kind: 'write' as const };

describe('tm restore: arguments as oned passes them', () => {
  it('HOST:VM_DIR VM_ID IMG_ID INC_ID DISK_ID, -1 for the whole chain and every disk', () => {
    expect(parseTmArgs('restore', ARGS)).toEqual({
      action: 'restore',
      host: 'node1',
      vmDir: DIR,
      imgId: 12,
      incId: -1,
      diskId: -1,
      vmId: 7,
      dsId: 0,
    });
    expect(parseTmArgs('restore', ['node1:/var/lib/one//datastores/0/7', '7', '12', '2', '1'])).toMatchObject({
      incId: 2,
      diskId: 1,
    });
  });

  it('refuses -1 as the image or VM id, options, another VM directory and wrong arity', () => {
    expect(thrownBy(() => parseTmArgs('restore', [ARGS[0]!, '7', '-1', '0', '0']), EXIT.USAGE).message).toMatch(
      /argument 3 "-1" looks like an option/,
    );
    expect(thrownBy(() => parseTmArgs('restore', [ARGS[0]!, '7', '12', '--dry-run', '0']), EXIT.USAGE).message).toMatch(
      /argument 4 "--dry-run"/,
    );
    expect(thrownBy(() => parseTmArgs('restore', [ARGS[0]!, '8', '12', '0', '0']), EXIT.USAGE).message).toMatch(/8/);
    expect(thrownBy(() => parseTmArgs('restore', ARGS.slice(0, 4)), EXIT.USAGE).message).toMatch(/takes HOST:VM_DIR/);
  });

  it("a VM's restored images are its LVs (delete removes them)", () => {
    expect(vmLvPattern(7).test(IMAGE)).toBe(true);
    expect(vmLvPattern(7).test('one-7-0-r12.xyz')).toBe(false);
    expect(vmLvPattern(7).test('one-17-0-r12.0123abcd')).toBe(false);
  });
});

describe('tm restore: where the backup is (oned and the backup datastore)', () => {
  it('the driver action XML on ls -i stdin: datastore, VM, image; a TPM state and other disks left', async () => {
    const r = script(recorder('localhost'), [], asked(LISTED.replace('}', ',"1":"rsync://100//0:b/x/disk.1.1"}'), '3'));
    const { urls, vmXml } = await listBackup(r, REMOTES, { vmId: 7, imgId: 12, incId: 3, diskId: 0 });
    r.verify();
    expect([...urls]).toEqual([[0, URL0]]);
    expect(vmXml).toBe(VM_XML);
    expect(r.calls[3]!.input).toBe(
      `<DS_DRIVER_ACTION_DATA>\n${DS_XML}\n${VM_XML}\n${IMG_XML}\n</DS_DRIVER_ACTION_DATA>\n`,
    );
  });

  it('refuses what the datastore must not say: no JSON, a URL with spaces, a bad driver name', async () => {
    for (const [listed, msg] of [
      ['ERROR', /printed no JSON/],
      ['[]', /not an object of disk URLs/],
      [JSON.stringify({ 0: 'rsync://x y' }), /not a URL/],
      [JSON.stringify({ '0; rm': URL0 }), /disk id listed/],
    ] as const) {
      const r = script(recorder('localhost'), [], asked(listed));
      await rejectionOf(listBackup(r, REMOTES, { vmId: 7, imgId: 12, incId: -1, diskId: -1 }), EXIT.USAGE).then((e) =>
        expect(e.message).toMatch(msg),
      );
    }
    const bad = script(
      recorder('localhost'),
      [],
      [...asked().slice(0, 2), rd(['onedatastore', 'show', '-x', '100'], { stdout: DS_XML.replace('rsync', '../x') })],
    );
    const e = await rejectionOf(listBackup(bad, REMOTES, { vmId: 7, imgId: 12, incId: -1, diskId: -1 }), EXIT.USAGE);
    expect(e.message).toMatch(/DS_MAD "..\/x" of datastore 100 is not a driver name/);
  });
});

describe('tm restore: the disk becomes a clone of the backup point', () => {
  const SHA = 'c'.repeat(64);
  const MARK = `cowstack_restored_from:${FILE}`;
  const restoredRow = () => {
    const row = imageRow(IMAGE, U.img2, { sha: SHA });
    return { ...row, lv_tags: [...(row.lv_tags as string[]), MARK] };
  };
  const DEV = `/dev/mapper/vg-${IMAGE.replace(/-/g, '--')}`;

  it('a powered-off VM: download, sealed image, old disk removed, fresh clone mapped and linked', async () => {
    const fe = withFiles(script(recorder('localhost'), [], [...asked(), { ...download, stdout: 'QCOW' }]));
    const node = withFiles(
      script(
        recorder('node1'),
        [
          mapped(),
          mapped(),
          { ...mapped(), rows: [...mapped().rows, restoredRow()] },
          { rows: [img(), restoredRow()] },
          { rows: [img(), restoredRow(), top({ active: 'exclusive' }, U.img2, U.c1)] },
        ],
        [
          O,
          wr(['mkdir', '-p', '--', DIR]),
          wr(['dd', `of=${FILE}`, 'bs=1M', 'status=none']),
          wr(journalBegin('one-7-0', 'restore')),
          O,
          ...restoreImageSteps(IMAGE, [FILE], { sha: SHA, mark: MARK }),
          O,
          wr(journalBegin('one-7-0', 'discard')),
          wr(['dmsetup', 'remove', '--retry', rwName(U.c3)]),
          wr(['lvchange', '-an', 'vg/one-7-0', 'vg/img']),
          wr(['lvremove', '-y', 'vg/one-7-0']),
          wr(journalEnd('one-7-0', 'discard')),
          // A fresh clone of the restored image, as TM clone makes one (tmActions.test.ts).
          R,
          wr(['lvchange', '-asy', `vg/${IMAGE}`]),
          wr(journalBegin('one-7-0', 'create-clone')),
          wr(lvcreateArgv('one-7-0', U.img2, 16 * MiB, 8)),
          mark('one-7-0', false),
          wr(journalEnd('one-7-0', 'create-clone')),
          wr(journalBegin('one-7-0', 'map')),
          wr([
            'dmsetup',
            'create',
            rwName(U.c1),
            '--uuid',
            `COWSTACK-rw-${U.c1.replace(/-/g, '')}`,
            '--table',
            `0 131072 snapshot ${DEV} /dev/mapper/vg-one--7--0 PO 8`,
          ]),
          wr(journalEnd('one-7-0', 'map')),
          wr(journalEnd('one-7-0', 'restore')),
          ...link(`/dev/mapper/${rwName(U.c1)}`),
          wr(['rm', '-f', '--', FILE]),
        ],
      ),
    );
    const { info } = await tm('restore', ARGS, { localhost: fe, node1: node });
    expect(node.sent.get(`dd of=${FILE} bs=1M status=none`)).toBe('QCOW');
    expect(info[0]).toBe(`disk 0: one-7-0 becomes a clone of ${IMAGE} from ${URL0} via ${FILE}, replacing one-7-0`);
    const entry = node.calls.find((c) => String(c.argv.at(-1)).endsWith('/vg.one-7-0.restore.json'));
    expect(JSON.parse(String(entry!.input))).toMatchObject({ op: 'restore', name: 'one-7-0', restored: IMAGE });
  });

  it('--dry-run says the plan from the listing and one observation; nothing is downloaded or changed', async () => {
    const fe = script(recorder('localhost'), [], asked());
    const node = script(recorder('node1'), [{ rows: [img(), top(), snap3(), restoredRow()] }], [O]);
    const info: string[] = [];
    const ctx = nodeSession({ runner: node, vg: 'vg' });
    const cow = { chunk: '4K', defaultPercent: 25 };
    const link = async () => expect.fail('nothing is linked');
    await restore(
      { ctx, local: fe, remotes: REMOTES, cow, dryRun: true, info: (m) => info.push(m), link },
      {
        ...(parseTmArgs('restore', ARGS) as RestoreRequest),
      },
    );
    fe.verify();
    node.verify();
    // The image a previous run sealed is not downloaded again; the disk's snapshot goes with it.
    expect(info).toEqual([
      `disk 0: one-7-0 becomes a clone of ${IMAGE} (restored already), replacing one-7-0, one-7-0-s3`,
    ]);
  });

  it('a running VM (its disk open) is refused before anything is downloaded or changed', async () => {
    const settle = rd(['udevadm', 'settle', '--timeout=10']);
    const fe = script(recorder('localhost'), [], asked());
    const node = script(recorder('node1'), [mapped(1)], [O, settle, O, settle, O, settle, O]);
    const e = await rejectionOf(tm('restore', ARGS, { localhost: fe, node1: node }), EXIT.REFUSED);
    expect(e.message).toMatch(/vg\/one-7-0 is open on node1/);
    expect(e.hint).toMatch(/power the VM off before restoring its disks/);
  });

  it('a persistent disk (its top is in its image lineage, mvds syncs it back) is refused first', async () => {
    const disk = (id: number, p: string) => `<DISK><DISK_ID>${id}</DISK_ID><PERSISTENT>${p}</PERSISTENT></DISK>`;
    const xml = `<VM><ID>7</ID><TEMPLATE>${disk(0, 'NO')}${disk(1, 'YES')}</TEMPLATE></VM>`;
    expect([...persistentDisks(xml)]).toEqual([1]);
    const listed = JSON.stringify({ 0: URL0, 1: URL0.replace('disk.0.1', 'disk.1.1') });
    const fe = script(
      recorder('localhost'),
      [],
      [rd(['onevm', 'show', '-x', '7'], { stdout: xml }), ...asked(listed).slice(1)],
    );
    const e = await rejectionOf(tm('restore', ARGS, { localhost: fe, node1: recorder('node1') }), EXIT.REFUSED);
    expect(e.message).toBe('disk(s) 1 of VM 7 are persistent: cowstack restores non-persistent disks');
  });

  it('a backup without the disk asked for is not found; nothing touches the host', async () => {
    const fe = script(recorder('localhost'), [], asked(JSON.stringify({ 1: URL0 })));
    const node = recorder('node1');
    const e = await rejectionOf(
      tm('restore', [...ARGS.slice(0, 4), '0'], { localhost: fe, node1: node }),
      EXIT.NOT_FOUND,
    );
    expect(e.message).toBe('backup image 12 has no disk 0');
  });
});

describe('recover of an interrupted restore', () => {
  const entry = { name: 'one-7-0', restored: IMAGE };
  const restoredRow = (state: 'sealed' | 'initializing') => imageRow(IMAGE, U.img2, { state });

  it("undone while the image is not sealed: the disk is untouched (the fill's entry removes the image)", async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top(), restoredRow('initializing')] }], [O]);
    expect(await settleRestore(nodeSession({ runner: r, vg: 'vg' }), entry)).toBe('undone');
    r.verify();
  });

  it('finished once it is: what is left of the old disk goes, the top is made on the image', async () => {
    const r = script(
      recorder('node1'),
      [
        { rows: [img(), snap3(), restoredRow('sealed')] },
        { rows: [img(), restoredRow('sealed')] },
        { rows: [img(), restoredRow('sealed'), top({}, U.img2, U.c1)] },
      ],
      [
        O,
        wr(journalBegin('one-7-0-s3', 'discard')),
        wr(['lvremove', '-y', 'vg/one-7-0-s3']),
        wr(journalEnd('one-7-0-s3', 'discard')),
        R,
        ...createTop(U.img2),
      ],
    );
    expect(await settleRestore(nodeSession({ runner: r, vg: 'vg' }), entry)).toBe('finished');
    r.verify();
  });

  it('nothing to do when the top stands on the image already', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), restoredRow('sealed'), top({}, U.img2)] }], [O]);
    expect(await settleRestore(nodeSession({ runner: r, vg: 'vg' }), entry)).toBe('nothing-to-do');
    r.verify();
  });
});
