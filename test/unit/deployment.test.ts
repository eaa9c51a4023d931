/**
 * The deployment files (sudoers/cowstack, cluster-conf/) against the code that depends on them.
 *
 * - sudoers/cowstack parses (visudo) and grants exactly the root programs the tools adapters
 *   declare (src/tools/rootPrograms.ts collects them), and every root request the adapters
 *   build runs one of them: a new root program that is not declared and added to sudoers
 *   fails here, not on a production node as "sudo: a password is required". Only src/tools
 *   spells an argv (test/unit/rooms.test.ts), so the adapters are the whole list.
 * - The argument rules of sudoers/cowstack accept the command lines cowstack builds and
 *   refuse the ones that would make the service user root. The rules are POSIX extended
 *   regular expressions written so that JavaScript reads them the same way (no backslash
 *   or `]` inside brackets); the policy itself was also checked with the real sudo
 *   (`sudo -l -U oneadmin CMD...`, sudo 1.9.13) for every command line below.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { getConfValue } from '../../src/core/lvmConf.js';
import { beginStep, endStep, setOperationId } from '../../src/core/journal.js';
import { newOperationId } from '../../src/core/nodeLock.js';
import * as flock from '../../src/tools/flock.js';
import { DM_UUID_PREFIX, dmName, dmPath, dmUuid, lvMapperPath } from '../../src/core/dmNames.js';
import { ROOT_PROGRAMS, ROOT_PROGRAMS_BY_MODULE, rootProgram } from '../../src/tools/rootPrograms.js';
import type { RunRequest, RunResult, Runner } from '../../src/exec/types.js';
import { stagingFiles } from '../../src/core/stage/files.js';
import * as aria2 from '../../src/tools/aria2.js';
import * as blockdev from '../../src/tools/blockdev.js';
import * as daemon from '../../src/tools/daemon.js';
import * as mktorrent from '../../src/tools/mktorrent.js';
import { trackerArgv } from '../../src/tools/opentracker.js';
import * as staging from '../../src/tools/staging.js';
import * as dmsetup from '../../src/tools/dmsetup.js';
import * as blockData from '../../src/tools/blockData.js';
import * as cacheCheck from '../../src/tools/cacheCheck.js';
import * as files from '../../src/tools/files.js';
import { readFile, writeFileReqs } from '../../src/tools/files.js';
import * as host from '../../src/tools/host.js';
import * as iscsi from '../../src/tools/iscsiadm.js';
import * as lvm from '../../src/tools/lvm.js';
import * as sanlock from '../../src/tools/sanlock.js';
import { startDaemonReq } from '../../src/tools/service.js';
import * as udevadm from '../../src/tools/udevadm.js';
import { settleReq } from '../../src/tools/udevadm.js';
import * as lio from '../../src/tools/lio.js';
import * as tgt from '../../src/tools/tgt.js';
import { TGT_CONF, storeName } from '../../src/core/target.js';
import { validateOutput } from '../../src/cli/commands/metrics.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const SUDOERS = join(ROOT, 'sudoers/cowstack');
const CONF = (name: string) => readFileSync(join(ROOT, 'cluster-conf', name), 'utf8');

// ---- sudoers/cowstack, as sudo reads it ------------------------------------------------------

interface Rule {
  alias: string;
  path: string;
  /** undefined: any arguments; '""': none; '^...$': a regex; otherwise the literal arguments. */
  args?: string;
}

/**
 * The Cmnd_Alias rules of sudoers/cowstack. The file keeps one command per line inside each
 * `Cmnd_Alias NAME = \` block (a regex may contain ", ", so lines, not commas, separate them).
 */
function parseSudoers(text: string): { rules: Rule[]; granted: string[] } {
  const rules: Rule[] = [];
  const granted: string[] = [];
  let alias: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || !line) continue;
    if (alias === undefined) {
      const def = /^Cmnd_Alias\s+(\w+)\s*=\s*\\$/.exec(line);
      if (def) alias = def[1];
      const grant = /^COWSTACK_USERS\s+ALL\s*=\s*\(root\)\s*NOPASSWD:\s*(.+)$/.exec(line);
      if (grant) granted.push(...grant[1]!.split(',').map((a) => a.trim()));
      continue;
    }
    const more = line.endsWith('\\');
    const spec = line.replace(/\s*\\$/, '').replace(/,$/, '');
    const space = spec.indexOf(' ');
    rules.push(space < 0 ? { alias, path: spec } : { alias, path: spec.slice(0, space), args: spec.slice(space + 1) });
    if (!more) alias = undefined;
  }
  return { rules, granted };
}

/** Does this rule allow these arguments? sudo matches all arguments joined by single spaces. */
function ruleAllows(rule: Rule, args: readonly string[]): boolean {
  if (rule.args === undefined) return true;
  if (rule.args === '""') return args.length === 0;
  const joined = args.join(' ');
  if (rule.args.startsWith('^') && rule.args.endsWith('$')) return new RegExp(rule.args).test(joined);
  return rule.args === joined;
}

const sudoers = parseSudoers(readFileSync(SUDOERS, 'utf8'));

/** The rules that would let the service user run argv through `sudo -n` (none: sudo refuses). */
function allowingRules(argv: readonly string[]): Rule[] {
  const program = rootProgram(argv[0] ?? '');
  if (!program) return [];
  return sudoers.rules.filter((r) => r.path === program.path && ruleAllows(r, argv.slice(1)));
}

function findVisudo(): string | undefined {
  for (const candidate of ['visudo', '/usr/sbin/visudo', '/sbin/visudo']) {
    const r = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (!r.error) return candidate;
  }
  return undefined;
}

// ---- command lines cowstack builds, from its own builders where they are exported ------------

const U = 'aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW'; // a compact LV uuid
const IQN = 'iqn.2003-01.org.example.repo:vg0';
const PORTAL = '10.0.2.2:3260';
const LUN = iscsi.byPathLink(PORTAL, IQN);
const SCOPE = { devices: [LUN] };
const TARGET = 'iqn.2003-01.org.example.repo:lun1';
const IQN_NODE = 'iqn.2003-01.org.example.node1:initiator';

/**
 * Collects every request instead of asserting an order (what the recording runner is for):
 * here the assertion is the sudoers policy, applied to all of them.
 */
class CollectingRunner implements Runner {
  readonly target = 'local';
  readonly requests: RunRequest[] = [];
  async run(req: RunRequest): Promise<RunResult> {
    this.requests.push(req);
    return {
      argv: req.argv,
      exitCode: 0,
      stdout: req.argv[0] === 'blockdev' ? '512\n' : '',
      stderr: '',
      durationMs: 0,
    };
  }
  async close(): Promise<void> {}
}

/** Answers by program name so readers walk past the empty first answer; collects into `inner`. */
class AnsweringRunner implements Runner {
  readonly target = 'local';
  constructor(
    private inner: CollectingRunner,
    private answers: Record<string, string>,
  ) {}
  async run(req: RunRequest): Promise<RunResult> {
    await this.inner.run(req);
    return { argv: req.argv, exitCode: 0, stdout: this.answers[req.argv[0]!] ?? '', stderr: '', durationMs: 0 };
  }
  async close(): Promise<void> {}
}

/**
 * Every request shape the tools adapters build, by module (the module's own runner collects
 * what its readers run). Core and tm build no argv of their own, so this is what cowstack
 * can run as root.
 */
async function builtRequests(): Promise<Map<string, RunRequest[]>> {
  const built = new Map<string, RunRequest[]>();
  const runners = new Map<string, CollectingRunner>();
  const add = (module: string, ...reqs: RunRequest[]) => built.set(module, [...(built.get(module) ?? []), ...reqs]);
  const runner = (module: string) => {
    if (!runners.has(module)) runners.set(module, new CollectingRunner());
    return runners.get(module)!;
  };
  const tolerate = async (f: () => Promise<unknown>) => {
    try {
      await f();
    } catch {
      // Parsers may reject the empty answers; only the request matters here.
    }
  };

  // LVM: every verb, every option, with and without the repository's device filter.
  const cloneTags = ['cowstack_role:clone', 'cowstack_parent:Ab12-cD34', 'cowstack_chunk:8'];
  const replicaTags = [
    'cowstack_cache:replica',
    'cowstack_origin:Ab12-cD34',
    'cowstack_cstate:copying',
    'cowstack_copied:0',
    `cowstack_sha256:${'0f'.repeat(32)}`,
  ];
  for (const scope of [{}, SCOPE]) {
    add(
      'lvm',
      lvm.createLvReq({ vg: 'repo', name: 'c-1', bytes: 1 << 30, tags: cloneTags }, scope),
      lvm.createLvReq({ vg: 'repo', name: 'c-1', bytes: 1 << 30, tags: cloneTags, activate: 'ey', zero: true }, scope),
      lvm.createLvReq({ vg: 'cowstack_cache', name: 'rp_Ab12cD34', bytes: 33554432, tags: replicaTags }, scope),
      lvm.activateReq('repo/c-1', 'exclusive', scope),
      lvm.activateReq('repo/img', 'shared', scope),
      lvm.deactivateReq(['cowstack_cache/a', 'cowstack_cache/b'], scope),
      lvm.refreshReq('repo/img', scope),
      lvm.changeLvReq(
        'repo/img',
        {
          readOnly: true,
          tags: {
            del: ['cowstack_state:writable'],
            add: ['cowstack_state:sealed', `cowstack_sha256:${'0f'.repeat(32)}`],
          },
        },
        scope,
      ),
      lvm.changeLvReq(
        ['cowstack_cache/lm_x', 'cowstack_cache/ld_x'],
        {
          activate: 'ey',
          tags: [
            { del: ['cowstack_cstate:ready'], add: ['cowstack_cstate:attached'] },
            { del: ['cowstack_used:1795000000'], add: ['cowstack_used:1795000600'] },
          ],
        },
        scope,
      ),
      lvm.tagLvReq('cowstack_cache/rp_Ab12cD34', { del: ['cowstack_copied:0'], add: ['cowstack_copied:67108864'] }),
      lvm.removeLvReq('repo/c-1', scope),
      lvm.removeLvReq(['cowstack_cache/a', 'cowstack_cache/b'], scope),
      lvm.renameLvReq('repo', 'old', 'new', scope),
      lvm.extendLvReq('repo/c-1', 2147483648, scope),
      lvm.tagVgReq('repo', { del: ['cowstack_host:1:old'], add: ['cowstack_host:1:node1'] }, scope),
    );
  }
  add(
    'lvm',
    lvm.createVgReq('repo', LUN, { lockType: 'sanlock' }),
    lvm.createVgReq('repo', LUN, { lockType: 'sanlock', metadataMiB: 5 }),
    lvm.createVgReq('cowstack_cache', '/dev/vda'),
    lvm.removeVgReq('repo'),
    lvm.lockStartReq('repo'),
    lvm.versionReq(),
  );
  await tolerate(() => lvm.lvmconfigValue(runner('lvm'), 'global/use_lvmlockd'));
  for (const scope of [{}, SCOPE]) {
    await tolerate(() => lvm.lvs(runner('lvm'), 'repo', scope));
    await tolerate(() => lvm.vgs(runner('lvm'), 'repo', scope));
    await tolerate(() => lvm.pvs(runner('lvm'), scope));
    await tolerate(() => lvm.vgSpace(runner('lvm'), 'repo', scope));
    await tolerate(() => lvm.leaseLvs(runner('lvm'), 'repo', scope));
  }
  await tolerate(() => lvm.allLvUuids(runner('lvm')));

  await tolerate(() => dmsetup.listDevices(runner('dmsetup')));
  await tolerate(() => dmsetup.deviceInfo(runner('dmsetup'), dmName('rw', U)));
  await tolerate(() => dmsetup.table(runner('dmsetup'), dmName('ro', U)));
  await tolerate(() => dmsetup.status(runner('dmsetup'), 'repo-img'));
  await tolerate(() => dmsetup.statusAll(runner('dmsetup')));
  await tolerate(() => dmsetup.targets(runner('dmsetup')));
  add(
    'dmsetup',
    dmsetup.createReq(
      dmName('ro', U),
      dmUuid('ro', U),
      dmsetup.snapshotTable(131072, lvMapperPath('repo', 'img'), lvMapperPath('repo', 'c-1'), 'P', 8),
      { readOnly: true },
    ),
    dmsetup.createReq(
      dmName('rw', U),
      dmUuid('rw', U),
      dmsetup.snapshotTable(131072, dmPath('ro', U), lvMapperPath('repo', 'c2'), 'PO', 16),
    ),
    dmsetup.createReq(
      dmName('wb', U),
      dmUuid('wb', U),
      dmsetup.writecacheTable(32768, lvMapperPath('repo', 'c-1'), lvMapperPath('cowstack_cache', 'wb_Ab12cD34'), 4096),
    ),
    dmsetup.messageReq(dmName('wb', U), 'flush'),
    dmsetup.messageReq(dmName('wb', U), 'cleaner'),
    dmsetup.removeReq(dmName('wb', U)),
    dmsetup.createReq(
      dmName('rw', U),
      dmUuid('rw', U),
      dmsetup.snapshotTable(131072, dmPath('ro', U), dmPath('wb', U), 'PO', 8),
    ),
    dmsetup.removeReq(dmName('rw', U)),
    dmsetup.removeReq(dmName('rw', U), true),
    // A live backup point (core/livePoint.ts) and its recover.
    dmsetup.createEmptyReq(dmName('ro', U), dmUuid('ro', U)),
    dmsetup.reloadReq(
      dmName('ro', U),
      dmsetup.snapshotTable(131072, dmPath('ro', U), lvMapperPath('repo', 'one-7-0'), 'P', 8),
      { readOnly: true },
    ),
    dmsetup.reloadReq(
      dmName('rw', U),
      dmsetup.snapshotTable(131072, dmPath('ro', U), lvMapperPath('repo', 'one-7-0-b1-next'), 'PO', 8),
    ),
    dmsetup.suspendReq(dmName('rw', U)),
    dmsetup.resumeReq(dmName('rw', U)),
    dmsetup.resumeReq(dmName('ro', U)),
    dmsetup.clearReq(dmName('rw', U)),
    dmsetup.renameReq(dmName('rw', U), dmName('rw', [...U].reverse().join(''))),
    dmsetup.versionReq(),
  );

  for (const build of [
    iscsi.nodeShowReq,
    iscsi.nodeNewReq,
    iscsi.nodeDeleteReq,
    iscsi.loginReq,
    iscsi.logoutReq,
    iscsi.rescanReq,
  ])
    add('iscsiadm', build(IQN, PORTAL));
  add(
    'iscsiadm',
    iscsi.nodeUpdateReq(IQN, PORTAL, 'node.startup', 'automatic'),
    iscsi.sessionsReq(),
    iscsi.nodeUpdateReq(IQN, PORTAL, 'node.session.auth.authmethod', 'CHAP'),
    iscsi.nodeUpdateReq(IQN, PORTAL, 'node.session.auth.username', 'cowstack-node'),
    iscsi.discoverReq(PORTAL),
    iscsi.rescanAllReq(),
    iscsi.writeRecordReq(`/etc/iscsi/nodes/${IQN}/10.0.2.2,3260,1/default`, 'x'),
    iscsi.versionReq(),
  );
  for (const base of iscsi.NODE_DIRS)
    await tolerate(() => readFile(runner('files'), `${base}/${IQN}/10.0.2.2,3260,1/default`));

  // The repository server (cowstack target ...): both backends, every request shape.
  const store = storeName(TARGET);
  add(
    'lio',
    lio.createBlockReq(store, '/dev/vg0/repo'),
    lio.createFileReq(store, '/srv/cowstack/repo.img', 1 << 30),
    lio.deleteStoreReq('block', store),
    lio.deleteStoreReq('fileio', store),
    lio.createTargetReq(TARGET),
    lio.deleteTargetReq(TARGET),
    lio.createLunReq(TARGET, 'block', store),
    lio.tpgAttributesReq(TARGET, true),
    lio.tpgAttributesReq(TARGET, false),
    lio.createAclReq(TARGET, IQN_NODE),
    lio.deleteAclReq(TARGET, IQN_NODE),
    lio.aclAuthReq(TARGET, IQN_NODE, 'userid', 'u'),
    lio.aclAuthReq(TARGET, IQN_NODE, 'password', 'not-a-real-secret'),
    lio.saveReq(),
  );
  const lioRunner = runner('lio');
  await tolerate(() =>
    lio.readTarget(
      new AnsweringRunner(lioRunner, { ls: `${TARGET}\n`, find: '../../../../core/iblock_0/x\n' }),
      TARGET,
    ),
  );
  await tolerate(() => lio.listStores(new AnsweringRunner(lioRunner, { ls: 'iblock_0\n' })));
  add(
    'tgt',
    tgt.showReq(),
    tgt.newTargetReq(3, TARGET),
    tgt.deleteTargetReq(3),
    tgt.deleteTargetReq(3, true),
    tgt.newLunReq(3, 1, '/dev/vg0/repo'),
    tgt.bindInitiatorReq(3, IQN_NODE),
    tgt.unbindInitiatorReq(3, IQN_NODE),
    tgt.dumpReq(),
    tgt.sparseFileReq('/srv/cowstack/repo.img', 1073741824),
  );
  add('files', ...(writeFileReqs(TGT_CONF, 'x', '0600') as RunRequest[]));
  // The image catalogue's node-local state (core/catalog/state.ts).
  add('files', files.readFileReq('/var/lib/cowstack/catalog/site-images.json'));
  add('files', files.writeRootFileReq('/var/lib/cowstack/catalog/site-images.json', '{}'));

  add(
    'sanlock',
    sanlock.clientStatusReq(),
    sanlock.clientGetsReq(),
    sanlock.hostStatusReq(sanlock.lockspaceName('repo')),
    sanlock.directDumpReq('/dev/mapper/repo-lvmlock'),
    sanlock.directDumpReq('/dev/mapper/my--repo-lvmlock:69206016:1048576'),
    sanlock.lvmlockctlInfoReq(),
    sanlock.versionReq(),
    sanlock.lvmlockctlProbeReq(),
  );
  for (const f of [blockdev.sizeBytes, blockdev.sizeSectors, blockdev.logicalBlockSize, blockdev.physicalBlockSize])
    await tolerate(() => f(runner('blockdev'), lvMapperPath('repo', 'img')));
  add('blockdev', blockdev.flushReq(LUN) as RunRequest, blockdev.versionReq());
  add('udevadm', settleReq(), settleReq(5), udevadm.versionReq());
  for (const daemon of ['sanlock', 'lvmlockd', 'iscsid'] as const)
    add('service', startDaemonReq(daemon, true), startDaemonReq(daemon, false));
  add('service', startDaemonReq('lvmlockd', false, 'dlm'));
  add('cacheCheck', cacheCheck.checkReq(lvMapperPath('cowstack_cache', 'lm_Ab12cD34')), cacheCheck.versionReq());

  for (const path of [
    '/etc/lvm/lvm.conf',
    '/etc/lvm/lvmlocal.conf',
    '/var/lib/cowstack/journal/repo.c-1.map.json',
    '/sys/class/block/dm-3/dm/name',
  ]) {
    await tolerate(() => readFile(runner('files'), path));
  }
  for (const path of ['/etc/lvm/lvm.conf', '/etc/lvm/lvmlocal.conf'])
    add('files', ...(writeFileReqs(path, 'x') as RunRequest[]));
  // The journal writes entries with files' install and removes them with host's rm
  // (core/journal.ts still spells both).
  add('files', beginStep({ op: 'create-clone', vg: 'repo', name: 'c-1' }).req);
  add('host', endStep({ op: 'map', vg: 'repo', name: 'c-1' }).req);
  // Journal entries named by operation (the id the node lock gives), and the node lock itself.
  setOperationId(newOperationId());
  add('files', beginStep({ op: 'map', vg: 'repo', name: 'c-1' }).req);
  add('host', endStep({ op: 'map', vg: 'repo', name: 'c-1' }).req);
  setOperationId(undefined);
  add(
    'flock',
    flock.lockDirReq(),
    flock.syncAttrReq(),
    flock.attrsReq(),
    flock.holdReq('repo', 120),
    flock.readHolderReq('repo'),
    flock.appendLogReq(flock.journalLog('repo'), '{}\n'),
    flock.truncateLogReq('repo'),
  );

  const cow = lvMapperPath('repo', 'c-1');
  const replica = lvMapperPath('cowstack_cache', 'rp_Ab12cD34');
  add(
    'blockData',
    blockData.zeroHeaderReq(cow, 4096), // a snapshot COW's first chunk
    blockData.zeroHeaderReq(cow, 65536),
    blockData.zeroReq(cow, 256), // a new image
    blockData.copyReq(dmPath('ro', U), lvMapperPath('repo', 'flat')), // flatten
    blockData.writeFromStdinReq(cow, new PassThrough()), // import
    blockData.readToFileReq(cow, '-'), // export
    blockData.copyRangeReq(cow, replica, 16, 16), // a replica's copy
    blockData.checksumReq(cow),
    blockData.checksumReq(replica),
    blockData.md5Req(lvMapperPath('repo', 'one-img-8')), // ds export
    blockData.signaturesReq('/dev/sdb'),
    blockData.signaturesReq('/dev/vda'),
    blockData.wipeSignaturesReq('/dev/sdb'),
    blockData.mkswapReq(cow),
    blockData.mkfsReq(cow, 'ext4'),
  );
  add(
    'host',
    host.openersReq(cow),
    host.openersReq(dmPath('rw', U)),
    host.backupOnceReq('/etc/lvm/lvm.conf'),
    host.backupOnceReq('/etc/lvm/lvmlocal.conf'),
    host.removeRootFileReq('/var/lib/cowstack/journal/repo.c-1.import.json'),
  );
  // Peer-to-peer staging (catalog stage): every shape of a run's plan, by the module that spells it.
  const st = stagingFiles('Ab12cD-34eF-56gH-78iJ-90kL-12mN-34oP56');
  const peer = aria2.peerArgv(st.torrent, { dir: st.peerDir, port: 6881, rateBytes: 8 << 20, log: st.log });
  add('aria2', aria2.showTorrentReq(st.torrent));
  add(
    'daemon',
    daemon.startReq(st.pid, peer, 'peer', staging.PEER_USER),
    daemon.startReq(
      st.pid,
      aria2.peerArgv(st.torrent, { dir: st.peerDir, port: 6881, log: st.log, out: 'x-1.img' }),
      'pull',
      staging.PEER_USER,
    ),
    daemon.startReq(st.trackerPid, trackerArgv(6969, st.whitelist), 'tracker', staging.PEER_USER),
    daemon.stopReq(st.pid, 'stop'),
    daemon.stopReq(st.trackerPid, 'stop'),
    daemon.runningReq(st.pid),
  );
  add('mktorrent', mktorrent.makeTorrentReq(st.image, st.torrent, 'http://10.0.2.2:6969/announce'));
  add(
    'staging',
    staging.makeDirReq(st.peerDir),
    staging.readBase64Req(st.torrent),
    staging.sizesReq(st.image),
    staging.extendReq(st.image, 8 << 20),
  );
  add(
    'blockData',
    blockData.copyToFileReq(lvMapperPath('repo', 'img'), st.image),
    blockData.copyRangeReq(st.image, replica, 16, 16),
    blockData.checksumReq(st.image),
    blockData.checksumReq(st.image, 'sha512'),
  );
  add(
    'files',
    files.writeRootFileReq(st.torrent, Buffer.from('d4:infod')),
    files.writeRootFileReq(st.record, '{}'),
    files.writeRootFileReq(st.whitelist, 'x\n'),
  );
  add('host', host.removeRootFileReq(st.image), host.removeRootFileReq(st.torrent));
  for (const [module, r] of runners) add(module, ...r.requests);
  return built;
}

// ---- the tests ---------------------------------------------------------------------------------

describe('sudoers/cowstack', () => {
  it('passes visudo -cf', () => {
    const visudo = findVisudo();
    if (!visudo) expect.fail('visudo is not installed: apt-get install sudo (it checks sudoers/cowstack)');
    const r = spawnSync(visudo, ['-cf', SUDOERS], { encoding: 'utf8' });
    expect(r.status, `${visudo} -cf sudoers/cowstack:\n${r.stdout}${r.stderr}`).toBe(0);
  });

  it('names the service user in one User_Alias line an installer can substitute, and keeps LC_ALL', () => {
    const text = readFileSync(SUDOERS, 'utf8');
    expect(text.match(/^User_Alias COWSTACK_USERS = oneadmin$/gm)).toHaveLength(1);
    expect(text).toMatch(/^Defaults:COWSTACK_USERS !requiretty$/m);
    expect(text).toMatch(/^Defaults:COWSTACK_USERS env_keep \+= "LC_ALL"$/m);
  });

  it('grants, with NOPASSWD, every Cmnd_Alias it defines', () => {
    const defined = [...new Set(sudoers.rules.map((r) => r.alias))];
    expect(defined.length).toBeGreaterThan(3);
    expect(new Set(sudoers.granted)).toEqual(new Set(defined));
  });

  it('has a rule with the full path of every program in rootPrograms, and no other program', () => {
    for (const p of ROOT_PROGRAMS) {
      expect(p.path.split('/').pop(), `${p.name}: path ${p.path}`).toBe(p.name);
      expect(
        sudoers.rules.some((r) => r.path === p.path),
        `sudoers/cowstack has no rule for ${p.path} (${p.name})`,
      ).toBe(true);
    }
    const known = new Set(ROOT_PROGRAMS.map((p) => p.path));
    expect(sudoers.rules.filter((r) => !known.has(r.path)).map((r) => r.path)).toEqual([]);
  });

  const programSetsBySudoersSection =
    'grants set-up-only programs only in COWSTACK_SETUP, server-only ones only in COWSTACK_SERVER, ' +
    'and every other program outside both';
  it(programSetsBySudoersSection, () => {
    for (const p of ROOT_PROGRAMS) {
      const aliases = new Set(sudoers.rules.filter((r) => r.path === p.path).map((r) => r.alias));
      // The server block is set-up work too (saving tgt's configuration moves a file into place).
      if (p.setupOnly)
        expect(
          [...aliases].filter((a) => a !== 'COWSTACK_SERVER'),
          p.name,
        ).toEqual(['COWSTACK_SETUP']);
      else if (p.serverOnly) expect([...aliases], p.name).toEqual(['COWSTACK_SERVER']);
      else
        expect(
          [...aliases].some((a) => a !== 'COWSTACK_SETUP' && a !== 'COWSTACK_SERVER'),
          `${p.name} is needed on a node after set-up too`,
        ).toBe(true);
    }
  });

  it('restricts the arguments of every program (no rule allows any arguments)', () => {
    for (const r of sudoers.rules) {
      expect(r.args, `${r.path} in ${r.alias} accepts any arguments`).toBeDefined();
      if (r.args!.startsWith('^')) expect(() => new RegExp(r.args!), r.args).not.toThrow();
      // Literal arguments are compared exactly above: they must hold no sudoers wildcard.
      else expect(r.args, `${r.path}: use a ^regex$ instead of wildcards`).not.toMatch(/[*?[\\]/);
    }
  });
});

/** Programs a module runs that another module declares. */
const BORROWED: Record<string, string[]> = {
  service: ['sanlock'], // `sanlock daemon` starts the program sanlock.ts declares
  flock: ['tee', 'truncate'], // the journal log is appended and emptied with lio's tee and tgt's truncate
  staging: ['truncate'], // a pulled raw disk is extended to whole extents with tgt's truncate
};

describe('root programs of the tools adapters', () => {
  const allBuilt = builtRequests();
  const roots = async () => [...(await allBuilt).values()].flat().filter((r) => r.root);

  it('each module builds root requests only for the programs it declares (or files.ts does)', async () => {
    const wrong: string[] = [];
    for (const [module, reqs] of await allBuilt) {
      const own = new Set([
        ...[...ROOT_PROGRAMS_BY_MODULE[module]!, ...files.ROOT_PROGRAMS].map((p) => p.name),
        ...(BORROWED[module] ?? []),
      ]);
      for (const r of reqs) if (r.root && !own.has(r.argv[0]!)) wrong.push(`${module}: ${r.argv.join(' ')}`);
    }
    expect(wrong, 'declare these in the ROOT_PROGRAMS of the module that spells them').toEqual([]);
  });

  it('every declared program is run as root by some request (nothing stale in sudoers)', async () => {
    const run = new Set((await roots()).map((r) => r.argv[0]));
    expect(
      ROOT_PROGRAMS.filter((p) => !run.has(p.name)).map((p) => p.name),
      'remove these from ROOT_PROGRAMS and sudoers/cowstack',
    ).toEqual([]);
  });

  it('sudoers allows every root command line the adapters build', async () => {
    const all = await roots();
    expect(all.length).toBeGreaterThan(100);
    const refused = all.filter((r) => !allowingRules(r.argv).length).map((r) => r.argv.join(' '));
    expect(refused, 'sudo -n would refuse these').toEqual([]);
  });
});

describe('sudoers/cowstack refuses what would make the service user root', () => {
  const refused: Array<[string, string[]]> = [
    [
      'LVM config injection: an executable setting',
      [
        'lvcreate',
        '--config',
        'devices { filter = [ "r|.*|" ] } global/thin_check_executable="/tmp/x"',
        '--type',
        'thin-pool',
        '-L',
        '1g',
        'repo',
      ],
    ],
    [
      'LVM config injection: a second --config hidden in the filter',
      [
        'lvchange',
        '--config',
        'devices { filter = [ --config global/thin_check_executable="/tmp/x" ] }',
        '-ay',
        'repo/p',
      ],
    ],
    ['LVM config injection: key=value word', ['lvchange', '-aey', 'repo/c1', 'global/use_lvmlockd=0']],
    ['LVM: an option cowstack never uses', ['lvextend', '-r', '-L', '1g', 'vg0/root']],
    ['LVM: a profile', ['lvremove', '--profile', '../../tmp/evil', '-y', 'repo/c1']],
    ['lvmconfig writing a file', ['lvmconfig', '--file', '/etc/shadow', '--typeconfig', 'full', 'global/use_lvmlockd']],
    ['lvm with a subcommand', ['lvm', 'lvremove', '-y', 'vg0/root']],
    ['dmsetup reload of a foreign device', ['dmsetup', 'reload', 'vg0-root', '--table', '0 100 linear /dev/sda 0']],
    [
      'dmsetup create of a non-snapshot cowstack device',
      ['dmsetup', 'create', 'cowstack-rw-x', '--uuid', 'COWSTACK-rw-x', '--table', '0 100 linear /dev/sda 0'],
    ],
    [
      'dmsetup create of a write-back cache over a disk',
      [
        'dmsetup',
        'create',
        'cowstack-wb-x',
        '--uuid',
        'COWSTACK-wb-x',
        '--table',
        '0 100 writecache s /dev/sda /dev/mapper/y 4096 0',
      ],
    ],
    ['dmsetup message to a foreign device', ['dmsetup', 'message', 'vg0-root', '0', 'cleaner']],
    ['dmsetup table --showkeys', ['dmsetup', 'table', '--showkeys']],
    ['dmsetup remove of a foreign device', ['dmsetup', 'remove', 'vg0-root']],
    ['dd onto a disk', ['dd', 'if=/dev/zero', 'of=/dev/sda']],
    [
      'dd escaping /dev/mapper',
      [
        'dd',
        'if=/dev/zero',
        'of=/dev/mapper/../sda',
        'bs=4096',
        'count=1',
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ],
    ],
    ['dd reading a file', ['dd', 'if=/etc/shadow', 'bs=4M', 'iflag=direct', 'status=none']],
    [
      'dd with an extra operand',
      [
        'dd',
        'if=/dev/mapper/x',
        'of=/dev/mapper/y',
        'bs=4M',
        'iflag=direct',
        'oflag=direct',
        'conv=fsync',
        'status=none',
        'of=/etc/passwd',
      ],
    ],
    ['cat of a secret', ['cat', '--', '/etc/shadow']],
    ['cat escaping the journal', ['cat', '--', '/var/lib/cowstack/journal/../../../../etc/shadow']],
    ['cat of a second file', ['cat', '--', '/etc/lvm/lvm.conf', '/etc/shadow']],
    ['install outside the journal', ['install', '-D', '-m', '0600', '/proc/self/fd/0', '/etc/sudoers.d/evil']],
    [
      'install escaping the journal',
      ['install', '-D', '-m', '0600', '/proc/self/fd/0', '/var/lib/cowstack/journal/../../../../etc/cron.d/x.json'],
    ],
    ['install setuid', ['install', '-D', '-m', '4755', '/proc/self/fd/0', '/var/lib/cowstack/journal/x.json']],
    ['install from a file', ['install', '-D', '-m', '0600', '/tmp/evil', '/var/lib/cowstack/journal/x.json']],
    [
      'install escaping the catalogue state',
      ['install', '-D', '-m', '0644', '/proc/self/fd/0', '/var/lib/cowstack/catalog/../../../../etc/cron.d/x.json'],
    ],
    [
      'install of catalogue state as an executable',
      ['install', '-D', '-m', '0755', '/proc/self/fd/0', '/var/lib/cowstack/catalog/x.json'],
    ],
    ['cat escaping the catalogue state', ['cat', '--', '/var/lib/cowstack/catalog/../../../etc/shadow.json']],
    ['flock running a shell', ['flock', '-w', '120', '-E', '75', '/run/lock/cowstack/repo.lock', 'sh', '-c', 'id']],
    ['flock -c', ['flock', '-w', '120', '-E', '75', '/run/lock/cowstack/repo.lock', '-c', 'id']],
    ['flock cat of a file', ['flock', '-w', '120', '-E', '75', '/run/lock/cowstack/repo.lock', 'cat', '/etc/shadow']],
    ['flock outside the lock directory', ['flock', '-w', '120', '-E', '75', '/etc/shadow', 'cat']],
    [
      'flock escaping the lock directory',
      ['flock', '-w', '120', '-E', '75', '/run/lock/cowstack/../../../etc/x.lock', 'cat'],
    ],
    ['install -d of another directory', ['install', '-d', '-m', '0700', '/etc/sudoers.d']],
    ['install -d world-writable', ['install', '-d', '-m', '0777', '/run/lock/cowstack']],
    [
      'install of a holder outside the lock directory',
      ['install', '-m', '0600', '/proc/self/fd/0', '/run/lock/x.holder'],
    ],
    ['rm -rf', ['rm', '-rf', '/']],
    ['rm of a second file', ['rm', '-f', '--', '/var/lib/cowstack/journal/a.json', '/etc/passwd']],
    ['rm relative to the caller', ['rm', '-f', '--', '/var/lib/cowstack/journal/a.json', 'b.json']],
    ['mv over lvm.conf from elsewhere', ['mv', '-f', '--', '/tmp/evil', '/etc/lvm/lvm.conf']],
    ['cp of a secret', ['cp', '-a', '--no-clobber', '/etc/shadow', '/tmp/x']],
    ['tee (never granted)', ['tee', '/etc/sudoers']],
    ['systemctl of another unit', ['systemctl', 'start', 'evil.service']],
    ['sanlock shutdown', ['sanlock', 'client', 'shutdown', '-f', '1']],
    ['sanlock lease init', ['sanlock', 'direct', 'init', '-s', 'x:1:/dev/mapper/repo-lvmlock:0']],
    ['lvmlockctl --kill', ['lvmlockctl', '--kill', 'repo']],
    [
      'iscsiadm CHAP secret in argv',
      [
        'iscsiadm',
        '-m',
        'node',
        '-T',
        IQN,
        '-p',
        PORTAL,
        '-o',
        'update',
        '-n',
        'node.session.auth.password',
        '-v',
        'x',
      ],
    ],
    ['iscsiadm discovery', ['iscsiadm', '-m', 'discovery', '-t', 'st', '-p', '10.0.0.1']],
    ['udevadm trigger', ['udevadm', 'trigger']],
    ['blockdev --setrw', ['blockdev', '--setrw', '/dev/mapper/repo-img']],
    ['blkdiscard of a disk', ['blkdiscard', '--zeroout', '/dev/sda']],
    ['sha256sum of a file', ['sha256sum', '/etc/shadow']],
    ['fuser -k', ['fuser', '-k', '/dev/mapper/repo-img']],
    ['wipefs escaping /dev', ['wipefs', '-a', '/dev/../etc/passwd']],
    ['iscsid with options', ['iscsid', '-f']],
  ];
  it.each(refused)('%s', (_why, argv) => {
    expect(allowingRules(argv).map((r) => `${r.path} ${r.args}`)).toEqual([]);
  });
});

describe('cluster-conf/', () => {
  it('99-cowstack.rules gives the hypervisor user the rw devices, by the COWSTACK- dm uuid prefix', () => {
    const rules = CONF('99-cowstack.rules')
      .split('\n')
      .filter((l) => l.trim() && !l.trim().startsWith('#'));
    expect(DM_UUID_PREFIX).toBe('COWSTACK-');
    expect(dmUuid('rw', U).startsWith(`${DM_UUID_PREFIX}rw-`)).toBe(true);
    expect(rules).toContain(`ENV{DM_UUID}=="${DM_UUID_PREFIX}rw-*", OWNER="oneadmin", GROUP="disk", MODE="0660"`);
  });

  it('cowstack-metrics.service runs a metrics command the CLI accepts; the timer runs it every minute', () => {
    const unit = (text: string, key: string) =>
      text
        .split('\n')
        .find((l) => l.startsWith(`${key}=`))
        ?.slice(key.length + 1);
    const exec = unit(CONF('cowstack-metrics.service'), 'ExecStart')!.split(' ');
    expect(exec.slice(0, 3)).toEqual(['/usr/local/bin/cowstack', '--quiet', 'metrics']);
    expect(exec[3]).toBe('--output');
    // the file the collector reads: inside the directory the unit waits for, accepted by the CLI's check
    expect(validateOutput(exec[4]!)).toBe(exec[4]);
    expect(exec[4]!.startsWith(`${unit(CONF('cowstack-metrics.service'), 'ConditionPathIsDirectory')}/`)).toBe(true);
    expect(unit(CONF('cowstack-metrics.service'), 'Type')).toBe('oneshot');
    expect(unit(CONF('cowstack-metrics.timer'), 'OnUnitActiveSec')).toBe('1min');
    expect(unit(CONF('cowstack-metrics.timer'), 'WantedBy')).toBe('timers.target');
  });

  it('lvm.conf.snippet sets use_lvmlockd = 1 and hides cowstack devices from LVM', () => {
    const text = CONF('lvm.conf.snippet');
    expect(getConfValue(text, 'global', 'use_lvmlockd')).toBe('1');
    expect(getConfValue(text, 'devices', 'scan_lvs')).toBe('0');
    const active = text
      .split('\n')
      .filter((l) => !l.trim().startsWith('#'))
      .join('\n');
    expect(active).toContain(`"r|^/dev/mapper/${dmName('rw', U).split('-')[0]}-|"`);
    expect(active).toContain(`"r|^/dev/disk/by-id/dm-uuid-${DM_UUID_PREFIX}|"`);
    expect(active).toMatch(/"a\|\^\/dev\/disk\/by-path\/ip-/);
    // No catch-all accept: it would let a VM disk back in through its /dev/dm-N name.
    expect(active).not.toContain('"a|.*|"');
  });

  it('lvmlocal.conf.snippet has a host_id, sanlock.conf keeps the watchdog, iscsid logs in at boot', () => {
    expect(getConfValue(CONF('lvmlocal.conf.snippet'), 'local', 'host_id')).toMatch(/^\d+$/);
    expect(CONF('sanlock.conf')).toMatch(/^use_watchdog = 1$/m);
    const iscsid = CONF('iscsid.conf.snippet');
    expect(iscsid).toMatch(/^node\.startup = automatic$/m);
    expect(iscsid).toMatch(/^node\.session\.timeo\.replacement_timeout = \d+$/m);
  });
});
