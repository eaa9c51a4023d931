/**
 * The TM backup actions end to end against the recording runner (tmFixtures' script
 * language): prebackup of a powered-off VM in FULL mode, prebackup_live of a running one
 * (refused, nothing backed up), postbackup. The increments' exception-table arithmetic is in
 * backups.test.ts; the whole incremental flow runs on the testbed (integration/backup.test.ts).
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the VM is 7, its disk 0 `one-7-0`.
 */
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { settleReq } from '../../src/tools/udevadm.js';
import { U } from './repoFixtures.js';
import { recorder, rejectionOf } from './support.js';
import { DIR, O, mapped, rd, rwName, script, tm, wr, type Step } from './tmFixtures.js';

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

  it('prebackup_live of a running VM is refused before anything is read or committed', async () => {
    const settle = rd(settleReq(10).argv);
    const r = script(recorder('node1'), [mapped(1)], [...freshDir, O, settle, O, settle, O, settle, O]);
    const e = await rejectionOf(tm('prebackup_live', ARGS, { node1: r }, XML), EXIT.REFUSED);
    expect(e.message).toMatch(/vg\/one-7-0 is open on node1 \(a running VM\?\)/);
    expect(e.hint).toMatch(/power the VM off for the backup/);
  });

  it('postbackup removes the backup directory, whatever the backup did', async () => {
    const r = script(recorder('node1'), [], [wr(['rm', '-rf', '--', BK])]);
    await tm('postbackup', ARGS, { node1: r }, XML.replace('</VM>', '<BACKUP_RESULT>FAILURE</BACKUP_RESULT></VM>'));
  });
});
