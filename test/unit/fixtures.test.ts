import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isLockRefusal, findLockHolder, leaseOwners, lockConflict } from '../../src/core/locks.js';
import { hostMapFromTags } from '../../src/core/hostMap.js';
import { CommandError, EXIT } from '../../src/exec/errors.js';
import * as dmsetup from '../../src/tools/dmsetup.js';
import * as iscsi from '../../src/tools/iscsiadm.js';
import * as lvm from '../../src/tools/lvm.js';
import * as sanlock from '../../src/tools/sanlock.js';
import { conflictStderr, leaseDump, lvsArgv, lvsJson, recorder, vgsArgv, vgsJson } from './support.js';

/*
 * REAL output captured on the testbed (Debian bookworm: lvm2 2.03.16, sanlock 3.8.5,
 * open-iscsi 2.1.8), replayed through the parsers and the lock-holder lookup. Node1 holds
 * both LVs of VG "repo" exclusively (lvmlockctl-info.txt); the conflict was node2's
 * `lvchange -aey repo/probe`. The files are used byte for byte, never edited.
 */
const DIR = fileURLToPath(new URL('../fixtures/lvm2-2.03.16-bookworm/', import.meta.url));
const read = (name: string) => readFileSync(DIR + name, 'utf8');
/** Every file in the directory, each read by a test below; a new capture must be added here. */
const FILES = [
  'dmsetup-info.txt',
  'dmsetup-targets.txt',
  'iscsiadm-session-P3.txt',
  'lvchange-aey-conflict.stderr',
  'lvchange-aey-conflict.stdout',
  'lvm-version.txt',
  'lvmlockctl-info.txt',
  // Read by capacity.test.ts (a VG just made by cluster init --max-lvs 2000: lvmlock only).
  'lvs-a-leases-empty.json',
  'lvs-repo.json',
  'pvs.json',
  'sanlock-dump-delta.txt',
  'sanlock-dump-lease-free.txt',
  'sanlock-dump-lease-held.txt',
  'sanlock-gets.txt',
  'vgs-repo.json',
  'vgs-space-repo.json', // read by capacity.test.ts, like lvs-a-leases-empty.json
];
const fixture = (name: string) => {
  if (!FILES.includes(name)) throw new Error(`${name} is not listed in FILES`);
  return read(name);
};

const PROBE = 'ZbrHVB-1Ojq-Qsmf-BcAe-gVnS-fCUC-huCqf4';
const LOCKTEST = 'Hy0kVc-Zozu-2K6A-ixTD-Ld0S-I44F-sRv75Z';
const VG_UUID = 'SUyCZP-8s9G-lpCM-9TMd-ZNNq-u64o-3oSj0f';

/** The capture of `lvs repo` narrowed to one LV, which is what `lvs repo/LV` prints. */
function lvsOne(name: string): string {
  const doc = JSON.parse(fixture('lvs-repo.json')) as { report: Array<{ lv: Array<{ lv_name: string }> }> };
  for (const r of doc.report) r.lv = r.lv.filter((l) => l.lv_name === name);
  return JSON.stringify(doc);
}

/** lvchange-aey-conflict.stderr ends with the capture script's "exit=N" line, which is not stderr. */
function conflict(): { stderr: string; exitCode: number } {
  const text = fixture('lvchange-aey-conflict.stderr');
  const m = /^exit=(\d+)\n?$/m.exec(text);
  expect(m, 'capture records the exit code').not.toBeNull();
  return { stderr: text.slice(0, m!.index), exitCode: Number(m![1]) };
}

describe('lvm2 2.03.16 --reportformat json', () => {
  it('lvs: every value a string, lock args under lv_lockargs', () => {
    const raw = fixture('lvs-repo.json');
    expect(raw).toContain('"lv_lockargs":"1.0.0:562036736"'); // the key the parser must read
    expect(raw).not.toContain('lv_lock_args');
    expect(lvm.parseLvs(raw)).toEqual([
      {
        name: 'cs-locktest',
        vg: 'repo',
        uuid: LOCKTEST,
        sizeBytes: 8388608,
        attr: '-wi-a-----',
        tags: [],
        activeLocally: true,
        activeExclusively: true,
        readOnly: false,
        open: false,
        dmPath: '/dev/mapper/repo-cs--locktest',
        lockArgs: '1.0.0:562036736',
        created: '2026-11-22 04:11:39 +0000',
        major: 253,
        minor: 1,
      },
      {
        name: 'probe',
        vg: 'repo',
        uuid: PROBE,
        sizeBytes: 8388608,
        attr: '-wi-a-----',
        tags: [],
        activeLocally: true,
        activeExclusively: true,
        readOnly: false,
        open: false,
        dmPath: '/dev/mapper/repo-probe',
        lockArgs: '1.0.0:570425344',
        created: '2026-11-22 04:13:15 +0000',
        major: 253,
        minor: 2,
      },
    ]);
  });

  it('vgs: tags one comma-joined string, split into the cowstack_host entries', () => {
    const [vg, ...more] = lvm.parseVgs(fixture('vgs-repo.json'));
    expect(more).toEqual([]);
    expect(vg).toEqual({
      name: 'repo',
      uuid: VG_UUID,
      sizeBytes: 4290772992,
      freeBytes: 3200253952,
      extentBytes: 4194304,
      lockType: 'sanlock',
      lockArgs: '1.0.0:lvmlock',
      shared: true,
      tags: ['cowstack_host:1:node1', 'cowstack_host:2:node2'],
      pvCount: 1,
      lvCount: 2,
    });
    expect([...hostMapFromTags(vg!.tags)]).toEqual([
      [1, 'node1'],
      [2, 'node2'],
    ]);
  });

  it('pvs', () => {
    expect(lvm.parsePvs(fixture('pvs.json'))).toEqual([
      {
        name: '/dev/sda',
        vg: 'repo',
        uuid: 'vmiZuT-kBfz-asmd-8YH6-QGJ0-zMu0-uykuz3',
        sizeBytes: 4290772992,
        devSizeBytes: 4294967296,
      },
    ]);
  });

  it('lvs through the runner with the argv cowstack sends', async () => {
    const r = recorder().expect(lvsArgv('repo'), { kind: 'read', stdout: fixture('lvs-repo.json') });
    expect((await lvm.lvs(r, 'repo')).map((l) => [l.name, l.lockArgs])).toEqual([
      ['cs-locktest', '1.0.0:562036736'],
      ['probe', '1.0.0:570425344'],
    ]);
    r.verify();
  });

  it('is the version the directory is named after', () => {
    expect(fixture('lvm-version.txt')).toMatch(/LVM version:\s+2\.03\.16\(2\)/);
  });
});

describe('dmsetup', () => {
  it('info -c: one device per LV, uuid LVM-<vg uuid><lv uuid> without dashes', () => {
    const devs = dmsetup.parseInfoColumns(fixture('dmsetup-info.txt'));
    expect(devs).toEqual([
      {
        name: 'repo-cs--locktest',
        uuid: `LVM-${(VG_UUID + LOCKTEST).replace(/-/g, '')}`,
        open: 0,
        major: 253,
        minor: 1,
        attr: 'L--w',
        readOnly: false,
        suspended: false,
        uses: [],
      },
      {
        name: 'repo-lvmlock',
        uuid: 'LVM-SUyCZP8s9GlpCM9TMdZNNqu64o3oSj0fSlrkU9IeHzHpZo112RlGpUMncTusgKzW',
        open: 1,
        major: 253,
        minor: 0,
        attr: 'L--w',
        readOnly: false,
        suspended: false,
        uses: [],
      },
      {
        name: 'repo-probe',
        uuid: `LVM-${(VG_UUID + PROBE).replace(/-/g, '')}`,
        open: 0,
        major: 253,
        minor: 2,
        attr: 'L--w',
        readOnly: false,
        suspended: false,
        uses: [],
      },
    ]);
    // The same device numbers as lvs reports for the active LVs.
    const lvs = lvm.parseLvs(fixture('lvs-repo.json'));
    for (const lv of lvs)
      expect(devs.find((d) => d.name === lv.dmPath.replace('/dev/mapper/', ''))).toMatchObject({
        major: lv.major,
        minor: lv.minor,
      });
  });

  it('targets: names and versions without the v, through targets()', async () => {
    const r = recorder().expect(['dmsetup', 'targets'], { kind: 'read', stdout: fixture('dmsetup-targets.txt') });
    const t = await dmsetup.targets(r);
    expect([...t]).toEqual([
      ['thin-pool', '1.22.0'],
      ['thin', '1.22.0'],
      ['writecache', '1.6.0'],
      ['cache', '2.3.0'],
      ['snapshot-merge', '1.5.0'],
      ['snapshot-origin', '1.9.0'],
      ['snapshot', '1.16.0'],
      ['striped', '1.6.0'],
      ['linear', '1.4.0'],
      ['error', '1.5.0'],
    ]);
    r.verify();
  });
});

describe('sanlock 3.8.5', () => {
  it('client gets -h 1: the lockspace on the lvmlock LV and both hosts live', () => {
    expect(sanlock.parseGets(fixture('sanlock-gets.txt'))).toEqual([
      {
        name: 'lvm_repo',
        hostId: 1,
        path: '/dev/mapper/repo-lvmlock',
        hosts: [
          { hostId: 1, generation: 1, timestamp: 713, flags: 'LIVE' },
          { hostId: 2, generation: 1, timestamp: 722, flags: 'LIVE' },
        ],
      },
    ]);
  });

  it('direct dump of the lvmlock LV: only the delta leases, one per host, named <uuid>.<hostname>', () => {
    const rows = sanlock.parseDirectDump(fixture('sanlock-dump-delta.txt'));
    expect(rows).toEqual([
      {
        offset: 0,
        lockspace: 'lvm_repo',
        resource: '0bc1fe7f-3a46-4a1a-9b15-a1ea286d8ea2.node1',
        timestamp: 734,
        owner: 1,
        generation: 1,
        lver: 0,
      },
      {
        offset: 4096,
        lockspace: 'lvm_repo',
        resource: 'cdc58498-8144-44ed-b79d-38228beaa577.node2',
        timestamp: 722,
        owner: 2,
        generation: 1,
        lver: 0,
      },
    ]);
    // No LV lease is in it: they live at the offsets in the LVs' lock args.
    expect(rows.some((r) => r.resource === PROBE || r.resource === LOCKTEST)).toBe(false);
  });

  it('direct dump at an LV lease offset: held (timestamp set) and released (timestamp 0, own kept)', () => {
    expect(sanlock.parseDirectDump(fixture('sanlock-dump-lease-held.txt'))).toEqual([
      { offset: 570425344, lockspace: 'lvm_repo', resource: PROBE, timestamp: 663, owner: 1, generation: 1, lver: 1 },
    ]);
    expect(sanlock.parseDirectDump(fixture('sanlock-dump-lease-free.txt'))).toEqual([
      { offset: 570425344, lockspace: 'lvm_repo', resource: PROBE, timestamp: 0, owner: 1, generation: 1, lver: 1 },
    ]);
  });

  it('leaseOffset reads the lock args of both captured LVs', () => {
    const lvs = lvm.parseLvs(fixture('lvs-repo.json'));
    expect(lvs.map((l) => sanlock.leaseOffset(l.lockArgs))).toEqual([562036736, 570425344]);
    // The offset is where the lease dump found probe's lease.
    expect(sanlock.parseDirectDump(fixture('sanlock-dump-lease-held.txt'))[0]!.offset).toBe(
      sanlock.leaseOffset(lvs[1]!.lockArgs),
    );
    expect(sanlock.leaseOffset(lvm.parseVgs(fixture('vgs-repo.json'))[0]!.lockArgs)).toBeUndefined(); // "1.0.0:lvmlock"
    expect(sanlock.leaseOffset('')).toBeUndefined();
  });

  it('lvmlockctl --info agrees: node1 holds both LVs exclusively', () => {
    const text = fixture('lvmlockctl-info.txt');
    expect(text).toContain(`VG repo lock_type=sanlock ${VG_UUID}`);
    expect(
      text
        .split('\n')
        .filter((l) => l.startsWith('LK LV ex '))
        .map((l) => l.slice(9)),
    ).toEqual([LOCKTEST, PROBE]);
  });
});

describe('open-iscsi 2.1.8', () => {
  it('session -P 3: one session, LUN 1 attached as /dev/sda, LUN 0 (controller) skipped', () => {
    expect(iscsi.parseSessions(fixture('iscsiadm-session-P3.txt'))).toEqual([
      {
        id: 1,
        portal: '10.0.2.2:36143',
        iqn: 'iqn.2003-01.org.example.cowstack:repo',
        state: 'LOGGED_IN',
        disks: [{ lun: 1, device: '/dev/sda', state: 'running' }],
      },
    ]);
  });
});

describe('lock conflict from the real refusal', () => {
  const lvmlock = '/dev/mapper/repo-lvmlock';
  const probeLease = ['sanlock', 'direct', 'dump', `${lvmlock}:570425344:1048576`];

  it('isLockRefusal recognises lvchange -aey refused by lvmlockd (exit 5, empty stdout)', () => {
    const { stderr, exitCode } = conflict();
    expect(exitCode).toBe(5);
    expect(fixture('lvchange-aey-conflict.stdout')).toBe('');
    expect(stderr).toBe('  LV locked by other host: repo/probe\n  Failed to lock logical volume repo/probe.\n');
    expect(isLockRefusal(new CommandError('local', ['lvchange', '-aey', 'repo/probe'], exitCode, stderr))).toBe(true);
    expect(
      isLockRefusal(
        new CommandError('local', ['lvchange', '-aey', 'repo/probe'], exitCode, '  Volume group "repo" not found\n'),
      ),
    ).toBe(false);
  });

  it('findLockHolder names node1 from the captured lvs, lease, vgs and delta dump', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/probe'), { kind: 'read', stdout: lvsOne('probe') })
      .expect(probeLease, { kind: 'read', stdout: fixture('sanlock-dump-lease-held.txt') })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: fixture('vgs-repo.json') })
      .expect(['sanlock', 'direct', 'dump', lvmlock], { kind: 'read', stdout: fixture('sanlock-dump-delta.txt') });
    expect(await findLockHolder(r, 'repo', 'probe')).toEqual({ hostId: 1, host: 'node1' });
    r.verify();
  });

  it('findLockHolder finds no holder in the released lease (timestamp 0), and reads nothing more', async () => {
    const r = recorder()
      .expect(lvsArgv('repo/probe'), { kind: 'read', stdout: lvsOne('probe') })
      .expect(probeLease, { kind: 'read', stdout: fixture('sanlock-dump-lease-free.txt') });
    expect(await findLockHolder(r, 'repo', 'probe')).toBeUndefined();
    r.verify();
  });

  it('the delta leases name the host when no cowstack_host tag does', async () => {
    const untagged = fixture('vgs-repo.json').replace('"cowstack_host:1:node1,cowstack_host:2:node2"', '""');
    const r = recorder()
      .expect(lvsArgv('repo/probe'), { kind: 'read', stdout: lvsOne('probe') })
      .expect(probeLease, { kind: 'read', stdout: fixture('sanlock-dump-lease-held.txt') })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: untagged })
      .expect(['sanlock', 'direct', 'dump', lvmlock], { kind: 'read', stdout: fixture('sanlock-dump-delta.txt') });
    expect(await findLockHolder(r, 'repo', 'probe')).toEqual({ hostId: 1, host: 'node1' });
    r.verify();
  });

  it('lockConflict: LOCK_CONFLICT (4) naming the LV and the holder', async () => {
    const { stderr, exitCode } = conflict();
    const cause = new CommandError('local', ['lvchange', '-aey', 'repo/probe'], exitCode, stderr);
    const r = recorder()
      .expect(lvsArgv('repo/probe'), { kind: 'read', stdout: lvsOne('probe') })
      .expect(probeLease, { kind: 'read', stdout: fixture('sanlock-dump-lease-held.txt') })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: fixture('vgs-repo.json') })
      .expect(['sanlock', 'direct', 'dump', lvmlock], { kind: 'read', stdout: fixture('sanlock-dump-delta.txt') });
    const e = await lockConflict(r, 'repo', 'probe', PROBE, cause);
    expect(e.exitCode).toBe(EXIT.LOCK_CONFLICT);
    expect(e.message).toBe('repo/probe is locked by another host (held by node1, sanlock host_id 1)');
    expect(e.data).toEqual({
      vg: 'repo',
      lv: 'probe',
      uuid: PROBE,
      holder: { hostId: 1, host: 'node1' },
      stderr: stderr.trim(),
    });
    r.verify();
  });

  it('leaseOwners reads each LV lease at its own offset', async () => {
    const lvs = lvm.parseLvs(fixture('lvs-repo.json'));
    const tags = lvm.parseVgs(fixture('vgs-repo.json'))[0]!.tags;
    const r = recorder()
      .expect(['sanlock', 'direct', 'dump', lvmlock], { kind: 'read', stdout: fixture('sanlock-dump-delta.txt') })
      // cs-locktest's lease was not captured: a read error leaves it out, it does not fail the rest.
      .expect(['sanlock', 'direct', 'dump', `${lvmlock}:562036736:1048576`], {
        kind: 'read',
        exitCode: 1,
        stderr: 'open error -5\n',
      })
      .expect(probeLease, { kind: 'read', stdout: fixture('sanlock-dump-lease-held.txt') });
    expect([...(await leaseOwners(r, 'repo', lvs, tags))]).toEqual([
      [PROBE.replace(/-/g, ''), { hostId: 1, host: 'node1' }],
    ]);
    r.verify();
  });
});

describe('the SYNTHETIC fixture builders print the real layout', () => {
  it('support.lvsJson / vgsJson reproduce the captured reports byte for byte from their rows', () => {
    const rows = (name: string, key: string) =>
      (JSON.parse(fixture(name)) as { report: Array<Record<string, Array<Record<string, unknown>>>> }).report[0]![key]!;
    expect(lvsJson(rows('lvs-repo.json', 'lv'))).toBe(fixture('lvs-repo.json'));
    expect(vgsJson(rows('vgs-repo.json', 'vg'))).toBe(fixture('vgs-repo.json'));
    // numbers and tag arrays, as fixtures write them, come out as lvm2 2.03.16 prints them
    expect(
      vgsJson([
        {
          ...rows('vgs-repo.json', 'vg')[0],
          vg_size: 4290772992,
          vg_shared: 1,
          vg_tags: ['cowstack_host:1:node1', 'cowstack_host:2:node2'],
        },
      ]),
    ).toBe(fixture('vgs-repo.json'));
  });

  it('support.leaseDump reproduces the captured lease dumps', () => {
    expect(leaseDump({ offset: 570425344, vg: 'repo', uuid: PROBE, owner: 1, timestamp: 663 })).toBe(
      fixture('sanlock-dump-lease-held.txt'),
    );
    expect(leaseDump({ offset: 570425344, vg: 'repo', uuid: PROBE, owner: 1, timestamp: 0 })).toBe(
      fixture('sanlock-dump-lease-free.txt'),
    );
  });

  it('support.conflictStderr is the captured stderr without the exit line', () => {
    expect(conflictStderr()).toBe(conflict().stderr);
  });
});

describe('the capture directory', () => {
  it('holds exactly the files listed (and tested) here', () => {
    expect(readdirSync(DIR).sort()).toEqual(FILES);
  });
});
