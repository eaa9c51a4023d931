/**
 * doctor over several repositories (issue 12: capacity visible before it runs out, on a site
 * that grew to more than one VG): every repository VG gets its own checks, each naming its VG,
 * and the node-wide answers (sanlock's lockspaces, the PVs) are asked once for all of them.
 */
import { describe, expect, it } from 'vitest';
import { doctor } from '../../src/core/doctor.js';
import { nodeSession } from '../../src/core/node.js';
import { leaseRows, SPACE_COLUMNS, spaceRow } from './repoFixtures.js';
import { lvsJson, PV_COLUMNS, recorder, REPORT, VG_COLUMNS, vgsJson } from './support.js';

const vgRow = (vg: string) => ({
  vg_name: vg,
  vg_uuid: `uuid-${vg}`,
  vg_size: 4290772992,
  vg_free: 2688548864,
  vg_extent_size: 4194304,
  vg_lock_type: 'sanlock',
  vg_lock_args: '1.0.0:lvmlock',
  vg_shared: 1,
  vg_tags: ['cowstack_host:1:node1'],
  pv_count: 1,
  lv_count: 62,
});

const J = '/var/lib/cowstack/journal';
/** A journal made by an older cowstack: the directory synchronous (install --node ran), one log not. */
const journalAttrs = `--S------e----- ${J}/.\n---------e----- ${J}/repo.log\n--S------e----- ${J}/repo2.log\n`;

function expectNode(r: ReturnType<typeof recorder>) {
  const ok = (argv: string[], stdout = '') => r.expect(argv, { kind: 'read', stdout });
  ok(['lvm', 'version'], '  LVM version:     2.03.16(2) (2022-05-18)\n');
  ok(['dmsetup', 'version'], 'Library version:   1.02.185 (2022-05-18)\n');
  ok(['blockdev', '--version'], 'blockdev from util-linux 2.38.1\n');
  ok(['iscsiadm', '--version'], 'iscsiadm version 2.1.8\n');
  ok(['sanlock', 'version'], 'sanlock 3.8.5 (built Jan  1 2023 00:00:00)\n');
  ok(['lvmlockctl', '--help']);
  ok(['udevadm', '--version'], '252\n');
  ok(['cache_check', '--version'], '0.9.0\n');
  ok(['dmsetup', 'targets'], 'writecache v1.6.0\ncache v2.2.0\nsnapshot v1.16.0\nlinear v1.4.0\n');
  for (const d of ['iscsid', 'sanlock', 'lvmlockd']) ok(['pidof', d], '123\n');
  ok(['lvmconfig', '--typeconfig', 'full', 'global/use_lvmlockd'], 'use_lvmlockd=1\n');
  ok(['lsattr', '-a', '--', J], journalAttrs);
  ok(['cat', '--', '/etc/lvm/lvmlocal.conf'], 'local {\n\thost_id = 1\n}\n');
  return ok;
}

describe('doctor', () => {
  it('checks every repository VG, each check naming its VG, and warns on the one filling up', async () => {
    const r = recorder('node1');
    const ok = expectNode(r);
    const gets = 's lvm_repo:1:/dev/mapper/repo-lvmlock:0\ns lvm_repo2:1:/dev/mapper/repo2-lvmlock:0\n';
    const pvs =
      '{"report":[{"pv":[{"pv_name":"/dev/sda","vg_name":"repo","pv_uuid":"a","pv_size":"4290772992",' +
      '"dev_size":"4294967296"},{"pv_name":"/dev/sdb","vg_name":"repo2","pv_uuid":"b","pv_size":"4290772992",' +
      '"dev_size":"4294967296"}]}]}';
    const paths = (dev: string) => {
      ok(['realpath', '-e', '--', `/dev/${dev}`], `/dev/${dev}\n`);
      ok(['cat', '--', `/sys/class/block/${dev}/device/wwid`], `naa.${dev}\n`);
      ok(['ls', '-1', '--', '/sys/class/block'], 'sda\nsdb\nvda\n');
      ok(['cat', '--', '/sys/class/block/sda/device/wwid'], 'naa.sda\n');
      ok(['cat', '--', '/sys/class/block/sdb/device/wwid'], 'naa.sdb\n');
    };
    const capacity = (vg: string, dev: string, mdaFree: number, n: number) => {
      ok(['vgs', '--nolocking', ...REPORT, '-o', SPACE_COLUMNS, vg], vgsJson([spaceRow({ vg, mdaFree, lvCount: n })]));
      ok(['lvs', '-a', '--nolocking', ...REPORT, '-o', 'lv_name,lv_size,lv_lock_args', vg], lvsJson(leaseRows(n)));
      ok(['blockdev', '--getpbsz', `/dev/${dev}`], '4096\n');
    };
    ok(['vgs', ...REPORT, '-o', VG_COLUMNS, 'repo'], vgsJson([vgRow('repo')]));
    ok(['uname', '-n'], 'node1\n');
    ok(['sanlock', 'client', 'gets', '-h', '1'], gets);
    ok(['pvs', ...REPORT, '-o', PV_COLUMNS], pvs);
    paths('sda');
    capacity('repo', 'sda', 489984, 62);
    ok(['vgs', ...REPORT, '-o', VG_COLUMNS, 'repo2'], vgsJson([vgRow('repo2')]));
    paths('sdb');
    // repo2's metadata area: 20 KiB free of its usable 510 KiB.
    capacity('repo2', 'sdb', 20480, 62);
    for (const f of ['/etc/sudoers.d/cowstack', '/etc/udev/rules.d/99-cowstack.rules', '/etc/cowstack/cowstack.yaml'])
      ok(['test', '-f', f]);

    const report = await doctor(nodeSession({ runner: r, vg: 'repo' }), { vgs: ['repo', 'repo2', 'repo'] });
    r.verify();
    expect(report.vgs).toEqual(['repo', 'repo2']);
    const of = (vg: string) => report.checks.filter((c) => c.vg === vg).map((c) => `${c.id} ${c.status}`);
    const each = (metadata: string) => [
      'repository:vg ok',
      'cluster:host_id-unique ok',
      'repository:lockspace ok',
      'repository:single-path ok',
      `capacity:metadata ${metadata}`,
      'capacity:leases ok',
      'repository:lock-io ok',
      'capacity:extents ok',
    ];
    expect(of('repo')).toEqual(each('ok'));
    expect(of('repo2')).toEqual(each('warning'));
    const full = report.checks.find((c) => c.vg === 'repo2' && c.id === 'capacity:metadata')!;
    expect(full.message).toMatch(/VG repo2 metadata area 9\d% full/);
    expect(report.checks.find((c) => c.id === 'repository:lockspace' && c.vg === 'repo2')!.message).toBe(
      'lockspace lvm_repo2 started with host_id 1',
    );
    expect(report.warnings).toBeGreaterThanOrEqual(1);
    expect(report.errors).toBe(0);
    // The journal: the log an older cowstack made without the attribute is named, with the fix.
    const journal = report.checks.find((c) => c.id === 'journal:synchronous')!;
    expect(journal.status).toBe('warning');
    expect(journal.message).toContain(`${J}/repo.log lack(s) the synchronous attribute`);
    expect(journal.message).not.toContain('repo2.log');
    expect(journal.fix).toContain(`chattr +S ${J}/repo.log`);
  });
});
