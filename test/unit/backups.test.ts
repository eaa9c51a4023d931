/**
 * Backups (core/backups.ts, tools/exceptionStore.ts, tools/qemuImg.ts, the TM backup
 * arguments): the arguments oned's VMM driver passes to prebackup/postbackup, the VM XML's
 * backup configuration, the dm-snapshot exception table as od prints it, and the cluster
 * arithmetic that turns changed chunks into an increment.
 * SYNTHETIC: od output below is what od prints for a COW with the layout the kernel writes
 * (header magic "SnAp" = 1883336275, valid 1, version 1, 8 sectors per chunk).
 */
import { describe, expect, it } from 'vitest';
import { CowstackError, EXIT } from '../../src/exec/errors.js';
import { backupIncrement, parseTmArgs, vmLvPattern } from '../../src/tm/args.js';
import { clusterRanges, uncovered, validateBackupPath } from '../../src/core/backups.js';
import { backupPointName, backupPointPattern } from '../../src/core/vmDisks.js';
import * as store from '../../src/tools/exceptionStore.js';
import * as qemu from '../../src/tools/qemuImg.js';
import { thrownBy } from './support.js';

const K = 65536;
const DIR = 'node1:/var/lib/one//datastores/0/42';
const xml = (mode: string, last?: number) =>
  `<VM><ID>42</ID><TEMPLATE><GRAPHICS><MODE>vnc</MODE></GRAPHICS></TEMPLATE><BACKUPS><BACKUP_CONFIG>` +
  `<MODE><![CDATA[${mode}]]></MODE>${last === undefined ? '' : `<LAST_INCREMENT_ID>${last}</LAST_INCREMENT_ID>`}` +
  `</BACKUP_CONFIG></BACKUPS></VM>`;

describe('TM backup arguments, as oned passes them', () => {
  it('prebackup: VM dir, disk ids, deploy id, "-" for no backup job, VM id, system datastore; VM XML on stdin', () => {
    const r = parseTmArgs('prebackup', [DIR, '0:2', 'one-42', '-', '42', '0'], xml('INCREMENT', 3));
    expect(r).toEqual({
      action: 'prebackup',
      host: 'node1',
      vmDir: '/var/lib/one/datastores/0/42',
      diskIds: [0, 2],
      deployId: 'one-42',
      vmId: 42,
      dsId: 0,
      xml: xml('INCREMENT', 3),
    });
    // A backup job's id; the XML base64-encoded is accepted too.
    const live = parseTmArgs(
      'postbackup_live',
      [DIR, '1', 'one-42', '5', '42', '0'],
      Buffer.from(xml('FULL')).toString('base64'),
    );
    expect(live).toMatchObject({ action: 'postbackup_live', jobId: 5, diskIds: [1], xml: xml('FULL') });
  });

  it.each([
    [[`${DIR}/disk.0`, '0', 'one-42', '-', '42', '0'], /expected the VM directory/],
    [['node1:/etc', '0', 'one-42', '-', '42', '0'], /must be \/var\/lib\/one\/datastores/],
    [[DIR, '0:0', 'one-42', '-', '42', '0'], /disk ids "0:0" is invalid/],
    [[DIR, '0:x', 'one-42', '-', '42', '0'], /disk id "x" is invalid/],
    [[DIR, '', 'one-42', '-', '42', '0'], /disk ids/],
    [[DIR, '0', 'one 42;rm', '-', '42', '0'], /deploy id "one 42;rm" is invalid/],
    [[DIR, '0', 'one-42', 'x', '42', '0'], /backup job id "x" is invalid/],
    [[DIR, '0', 'one-42', '-', '43', '0'], /not that of VM 43/],
    [[DIR, '0', 'one-42', '3', '42'], /takes HOST:VM_DIR/],
  ])('refuses %j, naming the bad value', (args, message) => {
    const e = thrownBy(() => parseTmArgs('prebackup', args as string[], xml('FULL')), EXIT.USAGE);
    expect(e.message).toMatch(message);
  });

  it('the VM XML that is neither XML nor base64 XML is refused', () => {
    expect(() => parseTmArgs('prebackup', [DIR, '0', 'one-42', '-', '42', '0'], 'not xml')).toThrow(CowstackError);
  });

  it("the mode is BACKUP_CONFIG's MODE (no other element's): full, or increment LAST_INCREMENT_ID + 1", () => {
    expect(backupIncrement(xml('FULL'))).toBeUndefined();
    expect(backupIncrement('<VM><ID>1</ID></VM>')).toBeUndefined();
    expect(backupIncrement(xml('INCREMENT', -1))).toBe(0);
    expect(backupIncrement(xml('increment', 4))).toBe(5);
    expect(backupIncrement(xml('INCREMENT'))).toBe(0);
    expect(thrownBy(() => backupIncrement(xml('DIFFERENTIAL')), EXIT.USAGE).message).toMatch(
      /backup MODE "DIFFERENTIAL"/,
    );
    expect(thrownBy(() => backupIncrement(xml('INCREMENT', -7)), EXIT.USAGE).message).toMatch(/LAST_INCREMENT_ID "-7"/);
  });

  it("backup points (and an earlier chain's, renamed aside) are the VM's LVs: terminate removes them", () => {
    expect(backupPointName('one-42-0', 3)).toBe('one-42-0-b3');
    const re = vmLvPattern(42);
    for (const n of ['one-42-0-b0', 'one-42-0-b12', 'one-42-0-b3.AbCd1234']) expect(re.test(n), n).toBe(true);
    for (const n of ['one-42-0-b01', 'one-42-0-b3.x', 'one-42-0-bx', 'one-420-0-b1']) expect(re.test(n), n).toBe(false);
    expect(backupPointPattern('one-42-0').exec('one-42-0-b3.AbCd1234')?.[2]).toBe('.AbCd1234');
  });
});

describe('the dm-snapshot exception table', () => {
  it('reads the header and refuses a COW that is not a valid persistent snapshot store', () => {
    expect(store.headerReq('/dev/mapper/vg-one--7--0').argv).toEqual([
      'od',
      '-An',
      '-v',
      '-tu4',
      '-w8',
      '-j',
      '0',
      '-N',
      '16',
      '/dev/mapper/vg-one--7--0',
    ]);
    expect(store.parseHeader('  1883336275          1\n          1          8\n', 'cow')).toBe(8);
    expect(() => store.parseHeader('0 0\n0 0\n', 'cow')).toThrow(/no dm-snapshot header/);
    expect(() => store.parseHeader('1883336275 0\n1 8\n', 'cow')).toThrow(/invalidated/);
  });

  it('areas: one metadata chunk each, after chunk 0, every (exceptions per chunk + 1) chunks', () => {
    expect(store.perArea(4096)).toBe(256);
    expect(store.areaOffset(0, 4096)).toBe(4096);
    expect(store.areaOffset(1, 4096)).toBe(258 * 4096);
  });

  it('lists origin chunks until the COW chunk 0 that ends the table', () => {
    const od =
      '                  512                    2\n' +
      '                 2304                    3\n' +
      '                    0                    0\n';
    expect(store.parseArea(od)).toEqual({ chunks: [512, 2304], ended: true });
    expect(store.parseArea('5 2\n6 3\n')).toEqual({ chunks: [5, 6], ended: false });
  });
});

describe('increments: changed chunks as whole qcow2 clusters', () => {
  it('rounds chunks out to 64 KiB clusters, merges neighbours, stays within the disk', () => {
    const spans = [
      { at: 5 * 2 ** 20, bytes: 4096 },
      { at: 5 * 2 ** 20 + 8192, bytes: 4096 }, // same cluster
      { at: 2 * K - 4096, bytes: 4096 }, // cluster 1, next to cluster 2 below
      { at: 2 * K, bytes: 4096 },
      { at: 16 * 2 ** 20 - 4096, bytes: 8192 }, // runs past the end
    ];
    expect(clusterRanges(spans, 16 * 2 ** 20)).toEqual([
      { start: K, length: 2 * K },
      { start: 5 * 2 ** 20, length: K },
      { start: 16 * 2 ** 20 - K, length: K },
    ]);
    expect(clusterRanges([], 2 ** 20)).toEqual([]);
  });

  it('the changed clusters the written file holds no data for are the zeroed ones', () => {
    const ranges = [
      { start: 0, length: 3 * K },
      { start: 10 * K, length: K },
    ];
    expect(uncovered(ranges, [{ start: K, length: K }])).toEqual([
      { start: 0, length: K },
      { start: 2 * K, length: K },
      { start: 10 * K, length: K },
    ]);
    expect(uncovered(ranges, [{ start: 0, length: 11 * K }])).toEqual([]);
  });

  it('qemu-img, qemu-io: qcow2 with 64 KiB clusters, zero clusters, a chain opened without touching the files', () => {
    expect(qemu.toQcow2Req('/dev/mapper/x', '/b/disk.0.0').argv).toEqual([
      'qemu-img',
      'convert',
      '-q',
      '-f',
      'raw',
      '-O',
      'qcow2',
      '-o',
      'cluster_size=65536',
      '/dev/mapper/x',
      '/b/disk.0.0',
    ]);
    expect(qemu.writeZeroesReq('/b/disk.0.1', [{ start: K, length: 2 * K }]).argv).toEqual([
      'qemu-io',
      '-f',
      'qcow2',
      '-c',
      `write -z ${K} ${2 * K}`,
      '/b/disk.0.1',
    ]);
    expect(qemu.chainToDeviceReq(['/b/d.0', '/b/d.1', '/b/d.2'], '/dev/mapper/vg-r').argv).toEqual([
      'qemu-img',
      'convert',
      '-q',
      '-n',
      '--image-opts',
      'driver=qcow2,file.driver=file,file.filename=/b/d.2,' +
        'backing.driver=qcow2,backing.file.driver=file,backing.file.filename=/b/d.1,' +
        'backing.backing.driver=qcow2,backing.backing.file.driver=file,backing.backing.file.filename=/b/d.0',
      '-O',
      'raw',
      '/dev/mapper/vg-r',
    ]);
    expect(
      qemu.parseDataRanges(
        '[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, ' +
          '"offset": 327680},\n' +
          '{ "start": 65536, "length": 983040, "depth": 0, "present": false, "zero": true, "data": false}]',
      ),
    ).toEqual([{ start: 0, length: K }]);
    expect(qemu.parseVirtualSize('{"virtual-size": 16777216, "format": "qcow2"}')).toBe(16777216);
    expect(() => qemu.parseVirtualSize('{}')).toThrow(/no virtual size/);
  });

  it('backup file paths are plain absolute paths (they go into qemu option strings, where "," separates)', () => {
    expect(validateBackupPath('/var/lib/one/datastores/0/42/backup/disk.0.1', 'f')).toBeTruthy();
    for (const p of ['relative/disk.0', '/a/../etc/shadow', '/b/x,file.filename=/etc/shadow', '/b/a b', ''])
      expect(thrownBy(() => validateBackupPath(p, 'backup file'), EXIT.USAGE).message).toContain('backup file');
  });
});
