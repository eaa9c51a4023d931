/**
 * The TM backup actions end to end against the recording runner (tmFixtures' script
 * language): prebackup of a powered-off VM in FULL mode, prebackup_live on a host without
 * the disk (refused, nothing backed up; the live point itself: livePoint.test.ts),
 * postbackup, and `backup restore` into a new image. The
 * increments' exception-table arithmetic is in backups.test.ts; the whole incremental flow
 * runs on the testbed (integration/backup.test.ts).
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the VM is 7, its disk 0 `one-7-0`.
 */
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { restoreImage } from '../../src/core/backups.js';
import { nodeSession } from '../../src/core/node.js';
import { MiB, U, imageRow } from './repoFixtures.js';
import { recorder, rejectionOf } from './support.js';
import { DIR, O, img, mapped, rd, restoreImageSteps, rwName, script, tm, top, wr, type Step } from './tmFixtures.js';

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
      [
        ...freshDir,
        O,
        wr(['mkdir', '-p', '--', BK]),
        ...mapFound,
        O,
        wr(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', RW, `${BK}/disk.0.0`]),
      ],
    );
    const { info } = await tm('prebackup', ARGS, { node1: r }, XML);
    expect(info).toEqual([`disk 0: full backup of ${64 * 1024 * 1024} bytes in ${BK}/disk.0.0`]);
    expect(r.calls[2]!.input).toBe(Buffer.from(XML).toString('base64'));
  });

  it('prebackup_live where the disk is not mapped: refused before anything is read or committed', async () => {
    const unmapped = { rows: [img(), top()] };
    const r = script(recorder('node1'), [unmapped, unmapped], [...freshDir, O, O]);
    const e = await rejectionOf(tm('prebackup_live', ARGS, { node1: r }, XML), EXIT.REFUSED);
    expect(e.message).toMatch(/vg\/one-7-0 is not mapped on node1: there is no running disk to back up/);
    expect(e.hint).toMatch(/on the host that runs the VM/);
  });

  it('postbackup removes the backup directory, whatever the backup did', async () => {
    const r = script(recorder('node1'), [], [wr(['rm', '-rf', '--', BK])]);
    await tm('postbackup', ARGS, { node1: r }, XML.replace('</VM>', '<BACKUP_RESULT>FAILURE</BACKUP_RESULT></VM>'));
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
