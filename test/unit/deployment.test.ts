/**
 * The deployment files (sudoers/cowstack, cluster-conf/) against the code that depends on them.
 *
 * - sudoers/cowstack parses (visudo), grants exactly the programs of src/exec/rootPrograms.ts,
 *   and every program src/ runs as root is in that list: a new root program that is not
 *   added to both fails here, not on a production node as "sudo: a password is required".
 * - The argument rules of sudoers/cowstack accept the command lines cowstack builds and
 *   refuse the ones that would make the service user root. The rules are POSIX extended
 *   regular expressions written so that JavaScript reads them the same way (no backslash
 *   or `]` inside brackets); the policy itself was also checked with the real sudo
 *   (`sudo -l -U oneadmin CMD...`, sudo 1.9.13) for every command line below.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { getConfValue } from '../../src/core/lvmConf.js';
import { beginStep, endStep, setOperationId } from '../../src/core/journal.js';
import { newOperationId } from '../../src/core/nodeLock.js';
import * as flock from '../../src/tools/flock.js';
import { DM_UUID_PREFIX, dmName, dmPath, dmUuid, lvMapperPath } from '../../src/core/dmNames.js';
import { ROOT_PROGRAMS, rootProgram } from '../../src/exec/rootPrograms.js';
import type { RunRequest, RunResult, Runner } from '../../src/exec/types.js';
import * as blockdev from '../../src/tools/blockdev.js';
import * as dmsetup from '../../src/tools/dmsetup.js';
import { readFile, writeFileReqs } from '../../src/tools/files.js';
import * as iscsi from '../../src/tools/iscsiadm.js';
import * as lvm from '../../src/tools/lvm.js';
import * as sanlock from '../../src/tools/sanlock.js';
import { startDaemonReq } from '../../src/tools/service.js';
import { settleReq } from '../../src/tools/udevadm.js';
import * as lio from '../../src/tools/lio.js';
import * as tgt from '../../src/tools/tgt.js';
import { TGT_CONF, storeName } from '../../src/core/target.js';

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

// ---- what src/ runs as root, read from the source ---------------------------------------------

interface Found {
  program: string;
  where: string;
}

interface SourceScan {
  /** argv[0] of every root request, and every LVM command built by lvmRequest. */
  programs: Found[];
  /** Root requests whose program the scan cannot name (an argv it cannot resolve). */
  unresolved: string[];
  /** Root argvs made only of string literals: checked against sudoers as they are. */
  literalArgvs: string[][];
  /** LVM command -> option literals (`-x`, `--xyz`) passed to it through lvmRequest. */
  lvmOptions: Map<string, Set<string>>;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : name.endsWith('.ts') ? [path] : [];
  });
}

const unwrap = (e: ts.Expression): ts.Expression =>
  ts.isNonNullExpression(e) || ts.isParenthesizedExpression(e) || ts.isAsExpression(e) || ts.isSatisfiesExpression(e)
    ? unwrap(e.expression)
    : e;

const propertyOf = (o: ts.ObjectLiteralExpression, name: string): ts.ObjectLiteralElementLike | undefined =>
  o.properties.find((p) => p.name && ts.isIdentifier(p.name) && p.name.text === name);

/** An array literal's elements when all of them are string literals. */
function stringArray(e: ts.Expression): string[] | undefined {
  const a = unwrap(e);
  if (!ts.isArrayLiteralExpression(a)) return undefined;
  const out: string[] = [];
  for (const el of a.elements) {
    if (!ts.isStringLiteral(el) && !ts.isNoSubstitutionTemplateLiteral(el)) return undefined;
    out.push(el.text);
  }
  return out;
}

/** The program an argv expression starts with, when its first element is a string literal. */
function firstString(e: ts.Expression): string | undefined {
  const a = unwrap(e);
  if (!ts.isArrayLiteralExpression(a)) return undefined;
  const first = a.elements[0];
  return first && (ts.isStringLiteral(first) || ts.isNoSubstitutionTemplateLiteral(first)) ? first.text : undefined;
}

function scanSources(): SourceScan {
  const scan: SourceScan = { programs: [], unresolved: [], literalArgvs: [], lvmOptions: new Map() };
  for (const file of sourceFiles(join(ROOT, 'src'))) {
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const rel = file.slice(ROOT.length);
    const where = (n: ts.Node) => `${rel}:${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1}`;
    const declarations = new Map<string, ts.Expression[]>();
    const dataArgvs: ts.Expression[] = []; // `argv:` in objects that are not requests (no `kind`): tables of commands
    const objects: ts.ObjectLiteralExpression[] = [];
    const calls: ts.CallExpression[] = [];
    const visit = (n: ts.Node): void => {
      if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.initializer) {
        declarations.set(n.name.text, [...(declarations.get(n.name.text) ?? []), n.initializer]);
      }
      if (ts.isObjectLiteralExpression(n)) objects.push(n);
      if (ts.isCallExpression(n)) calls.push(n);
      ts.forEachChild(n, visit);
    };
    visit(sf);
    for (const o of objects) {
      const argv = propertyOf(o, 'argv');
      if (argv && ts.isPropertyAssignment(argv) && !propertyOf(o, 'kind')) dataArgvs.push(argv.initializer);
    }

    /** The argv expressions a non-literal argv can stand for, in this file. */
    const candidates = (e: ts.Expression): ts.Expression[] | undefined => {
      const x = unwrap(e);
      // direct[program]: the values of the object literal `direct` (service.ts).
      if (ts.isElementAccessExpression(x) && ts.isIdentifier(x.expression)) {
        const inits = declarations.get(x.expression.text) ?? [];
        const values = inits
          .map(unwrap)
          .filter(ts.isObjectLiteralExpression)
          .flatMap((init) => init.properties.filter(ts.isPropertyAssignment).map((p) => p.initializer));
        return values.length ? values : undefined;
      }
      // p.argv: an entry of a table of commands in this file (doctor.ts's PROGRAMS).
      if (ts.isPropertyAccessExpression(x) && x.name.text === 'argv') return dataArgvs.length ? dataArgvs : undefined;
      // a local const holding the argv
      if (ts.isIdentifier(x)) return declarations.get(x.text);
      return undefined;
    };

    for (const o of objects) {
      const root = propertyOf(o, 'root');
      if (!root) continue;
      const rootValue = ts.isPropertyAssignment(root) ? root.initializer.kind : undefined;
      if (rootValue === ts.SyntaxKind.FalseKeyword) continue;
      if (rootValue !== ts.SyntaxKind.TrueKeyword) {
        // src/exec/ only forwards requests it was given (dry-run's plan: root: Boolean(req.root)).
        if (!rel.startsWith('src/exec/')) scan.unresolved.push(`${where(o)}: root is computed, not \`root: true\``);
        continue;
      }
      const argvProp = propertyOf(o, 'argv');
      if (!argvProp) {
        scan.unresolved.push(`${where(o)}: a root request without an argv property`);
        continue;
      }
      const argvExpr = ts.isPropertyAssignment(argvProp)
        ? argvProp.initializer
        : ts.isShorthandPropertyAssignment(argvProp)
          ? argvProp.name
          : undefined;
      if (!argvExpr) {
        scan.unresolved.push(`${where(o)}: unreadable argv`);
        continue;
      }
      // lvmRequest's own body: its callers name the LVM command (below).
      if (
        ts.isCallExpression(argvExpr) &&
        ts.isIdentifier(argvExpr.expression) &&
        argvExpr.expression.text === 'lvmArgv'
      )
        continue;
      const direct = firstString(argvExpr);
      const exprs = direct ? [argvExpr] : candidates(argvExpr);
      if (!exprs) {
        scan.unresolved.push(`${where(o)}: cannot tell which program runs as root (argv: ${argvExpr.getText(sf)})`);
        continue;
      }
      for (const e of exprs) {
        const program = firstString(e);
        if (!program)
          scan.unresolved.push(`${where(e)}: cannot tell which program runs as root (argv: ${e.getText(sf)})`);
        else scan.programs.push({ program, where: where(e) });
        const literal = stringArray(e);
        if (literal) scan.literalArgvs.push(literal);
      }
    }

    /** Option literals anywhere in an expression, following local consts (REPORT, flag, args). */
    const options = (e: ts.Node, seen = new Set<string>()): string[] => {
      const out: string[] = [];
      const walk = (n: ts.Node): void => {
        if ((ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) && n.text.startsWith('-'))
          out.push(n.text);
        if (ts.isIdentifier(n) && !seen.has(n.text) && declarations.has(n.text)) {
          seen.add(n.text);
          for (const init of declarations.get(n.text)!) out.push(...options(init, seen));
        }
        ts.forEachChild(n, walk);
      };
      walk(e);
      return out;
    };
    for (const c of calls) {
      const callee = c.expression;
      const name = ts.isIdentifier(callee)
        ? callee.text
        : ts.isPropertyAccessExpression(callee)
          ? callee.name.text
          : '';
      if (name !== 'lvmRequest') continue;
      const command = c.arguments[0];
      if (!command || !ts.isStringLiteral(command)) {
        scan.unresolved.push(`${where(c)}: lvmRequest with a command that is not a string literal`);
        continue;
      }
      scan.programs.push({ program: command.text, where: where(c) });
      const set = scan.lvmOptions.get(command.text) ?? new Set<string>();
      if (c.arguments[1]) for (const opt of options(c.arguments[1])) set.add(opt);
      scan.lvmOptions.set(command.text, set);
    }
  }
  return scan;
}

const scan = scanSources();

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

async function builtRequests(): Promise<RunRequest[]> {
  const runner = new CollectingRunner();
  const reqs: RunRequest[] = [];
  const tolerate = async (f: () => Promise<unknown>) => {
    try {
      await f();
    } catch {
      // Parsers may reject the empty answers; only the request matters here.
    }
  };
  const report = ['--reportformat', 'json', '--units', 'b', '--nosuffix', '--binary', '-o'];
  const lvmCalls: Array<[string, string[]]> = [
    ['lvs', ['--nolocking', ...report, lvm.LV_FIELDS.join(','), 'repo/img']],
    ['vgs', [...report, lvm.VG_FIELDS.join(','), 'repo']],
    ['pvs', [...report, lvm.PV_FIELDS.join(',')]],
    [
      'lvcreate',
      [
        '-an',
        '-Zn',
        '-Wn',
        '--setautoactivation',
        'n',
        '-L',
        '1073741824b',
        '-n',
        'c-1',
        '--addtag',
        'cowstack_role:clone',
        '--addtag',
        'cowstack_parent:Ab12-cD34',
        '--addtag',
        'cowstack_chunk:8',
        'repo',
      ],
    ],
    ['lvchange', ['-aey', 'repo/c-1']],
    [
      'lvchange',
      [
        '--permission',
        'r',
        '--deltag',
        'cowstack_state:writable',
        '--addtag',
        'cowstack_state:sealed',
        '--addtag',
        `cowstack_sha256:${'0f'.repeat(32)}`,
        'repo/img',
      ],
    ],
    ['lvremove', ['-y', 'repo/c-1']],
    ['lvrename', ['repo', 'old', 'new']],
    ['lvextend', ['-L', '2147483648b', 'repo/c-1']],
    ['vgchange', ['--deltag', 'cowstack_host:1:old', '--addtag', 'cowstack_host:1:node1', 'repo']],
    ['vgcreate', ['--shared', '--lock-type', 'sanlock', '--setautoactivation', 'n', 'repo', LUN]],
    ['vgremove', ['-y', 'repo']],
    // cache.ts: the node-local cache VG and its replicas
    ['vgcreate', ['--setautoactivation', 'n', 'cowstack_cache', '/dev/vda']],
    [
      'lvcreate',
      [
        '-an',
        '-Zn',
        '-Wn',
        '--setautoactivation',
        'n',
        '-L',
        '33554432b',
        '-n',
        'rp_Ab12cD34',
        '--addtag',
        'cowstack_cache:replica',
        '--addtag',
        'cowstack_origin:Ab12-cD34',
        '--addtag',
        'cowstack_cstate:copying',
        '--addtag',
        'cowstack_copied:0',
        '--addtag',
        `cowstack_sha256:${'0f'.repeat(32)}`,
        'cowstack_cache',
      ],
    ],
    [
      'lvchange',
      ['--deltag', 'cowstack_copied:0', '--addtag', 'cowstack_copied:67108864', 'cowstack_cache/rp_Ab12cD34'],
    ],
    [
      'lvchange',
      [
        '--permission',
        'r',
        '--deltag',
        'cowstack_cstate:copying',
        '--addtag',
        'cowstack_cstate:complete',
        '--deltag',
        'cowstack_copied:0',
        '--addtag',
        'cowstack_copied:33554432',
        '--addtag',
        'cowstack_used:1795000000',
        'cowstack_cache/rp_Ab12cD34',
      ],
    ],
  ];
  for (const [command, args] of lvmCalls)
    reqs.push(lvm.lvmRequest(command, args, 'write'), lvm.lvmRequest(command, args, 'write', SCOPE));
  // lvcreate that activates and zeroes in the one command (the LVM verbs' other shape).
  reqs.push(
    lvm.createLvReq({ vg: 'repo', name: 'c-1', bytes: 1 << 30, activate: 'ey', zero: true, tags: ['t:1'] }, SCOPE),
  );
  await tolerate(() => lvm.lvmconfigValue(runner, 'global/use_lvmlockd'));
  await tolerate(() => lvm.lvs(runner, 'repo', SCOPE));
  await tolerate(() => lvm.vgs(runner, 'repo', SCOPE));
  await tolerate(() => lvm.pvs(runner, SCOPE));
  await tolerate(() => dmsetup.listDevices(runner));
  await tolerate(() => dmsetup.deviceInfo(runner, dmName('rw', U)));
  await tolerate(() => dmsetup.table(runner, dmName('ro', U)));
  await tolerate(() => dmsetup.status(runner, 'repo-img'));
  await tolerate(() => dmsetup.statusAll(runner));
  await tolerate(() => dmsetup.targets(runner));
  reqs.push(
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
  );
  for (const build of [
    iscsi.nodeShowReq,
    iscsi.nodeNewReq,
    iscsi.nodeDeleteReq,
    iscsi.loginReq,
    iscsi.logoutReq,
    iscsi.rescanReq,
  ])
    reqs.push(build(IQN, PORTAL));
  reqs.push(iscsi.nodeUpdateReq(IQN, PORTAL, 'node.startup', 'automatic'), iscsi.sessionsReq());
  reqs.push(
    iscsi.nodeUpdateReq(IQN, PORTAL, 'node.session.auth.authmethod', 'CHAP'),
    iscsi.nodeUpdateReq(IQN, PORTAL, 'node.session.auth.username', 'cowstack-node'),
    iscsi.discoverReq(PORTAL),
    iscsi.rescanAllReq(),
  );
  for (const base of iscsi.NODE_DIRS) await tolerate(() => readFile(runner, `${base}/${IQN}/10.0.2.2,3260,1/default`));
  // The repository server (cowstack target ...): both backends, every request shape.
  const store = storeName(TARGET);
  reqs.push(
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
    tgt.showReq(),
    tgt.newTargetReq(3, TARGET),
    tgt.deleteTargetReq(3),
    tgt.deleteTargetReq(3, true),
    tgt.newLunReq(3, 1, '/dev/vg0/repo'),
    tgt.bindInitiatorReq(3, IQN_NODE),
    tgt.unbindInitiatorReq(3, IQN_NODE),
    tgt.dumpReq(),
    ...(writeFileReqs(TGT_CONF, 'x', '0600') as RunRequest[]),
  );
  await tolerate(() =>
    lio.readTarget(new AnsweringRunner(runner, { ls: `${TARGET}\n`, find: '../../../../core/iblock_0/x\n' }), TARGET),
  );
  await tolerate(() => lio.listStores(new AnsweringRunner(runner, { ls: 'iblock_0\n' })));
  reqs.push(
    sanlock.clientStatusReq(),
    sanlock.clientGetsReq(),
    sanlock.hostStatusReq(sanlock.lockspaceName('repo')),
    sanlock.directDumpReq('/dev/mapper/repo-lvmlock'),
    sanlock.directDumpReq('/dev/mapper/my--repo-lvmlock:69206016:1048576'),
    sanlock.lvmlockctlInfoReq(),
  );
  for (const f of [blockdev.sizeBytes, blockdev.sizeSectors, blockdev.logicalBlockSize])
    await tolerate(() => f(runner, lvMapperPath('repo', 'img')));
  reqs.push(blockdev.flushReq(LUN) as RunRequest, settleReq(), settleReq(5));
  for (const daemon of ['sanlock', 'lvmlockd', 'iscsid'] as const)
    reqs.push(startDaemonReq(daemon, true), startDaemonReq(daemon, false));
  reqs.push(startDaemonReq('lvmlockd', false, 'dlm'));
  for (const path of [
    '/etc/lvm/lvm.conf',
    '/etc/lvm/lvmlocal.conf',
    '/var/lib/cowstack/journal/repo.c-1.map.json',
    '/sys/class/block/dm-3/dm/name',
  ]) {
    await tolerate(() => readFile(runner, path));
  }
  for (const path of ['/etc/lvm/lvm.conf', '/etc/lvm/lvmlocal.conf'])
    reqs.push(...(writeFileReqs(path, 'x') as RunRequest[]));
  reqs.push(
    beginStep({ op: 'create-clone', vg: 'repo', name: 'c-1' }).req,
    endStep({ op: 'map', vg: 'repo', name: 'c-1' }).req,
  );
  // Journal entries named by operation (the id the node lock gives), and the node lock itself.
  setOperationId(newOperationId());
  reqs.push(beginStep({ op: 'map', vg: 'repo', name: 'c-1' }).req, endStep({ op: 'map', vg: 'repo', name: 'c-1' }).req);
  setOperationId(undefined);
  reqs.push(
    flock.lockDirReq(),
    flock.holdReq('repo', 120),
    flock.writeHolderReq('repo', '{}'),
    flock.readHolderReq('repo'),
  );
  // Inline in src/core (not exported): copies of the argv shapes, with the file they come from.
  const cow = lvMapperPath('repo', 'c-1');
  const inline: string[][] = [
    // clones.ts: zero the first chunk
    ['dd', 'if=/dev/zero', `of=${cow}`, 'bs=4096', 'count=1', 'oflag=direct', 'conv=fsync', 'status=none'],
    [
      'dd',
      `if=${dmPath('ro', U)}`,
      `of=${lvMapperPath('repo', 'flat')}`,
      'bs=4M',
      'iflag=direct',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ], // flatten.ts
    ['dd', `of=${cow}`, 'bs=4M', 'iflag=fullblock', 'oflag=direct', 'conv=fsync', 'status=none'], // images.ts: import
    ['dd', `if=${cow}`, 'bs=4M', 'iflag=direct', 'status=none'], // images.ts: export
    // images.ts (zero a new image)
    ['dd', 'if=/dev/zero', `of=${cow}`, 'bs=4M', 'count=256', 'oflag=direct', 'conv=fsync', 'status=none'],
    ['sha256sum', cow], // images.ts, flatten.ts
    [
      'dd',
      `if=${cow}`,
      `of=${lvMapperPath('cowstack_cache', 'rp_Ab12cD34')}`,
      'bs=4M',
      'skip=16',
      'seek=16',
      'count=16',
      'iflag=direct',
      'oflag=direct',
      'conv=fsync,notrunc',
      'status=none',
    ], // cache.ts: replica copy
    ['sha256sum', lvMapperPath('cowstack_cache', 'rp_Ab12cD34')], // cache.ts: verify a replica
    ['blkid', '-p', '-o', 'export', '/dev/vda'], // cache.ts: cache init
    ['fuser', cow], // holders.ts
    ['fuser', dmPath('rw', U)],
    ['cp', '-a', '--no-clobber', '/etc/lvm/lvm.conf', '/etc/lvm/lvm.conf.cowstack-orig'], // cluster.ts
    ['cp', '-a', '--no-clobber', '/etc/lvm/lvmlocal.conf', '/etc/lvm/lvmlocal.conf.cowstack-orig'],
    ['blkid', '-p', '-o', 'export', '/dev/sdb'], // cluster.ts
    ['wipefs', '-a', '/dev/sdb'], // cluster.ts
    ['rm', '-f', '--', '/var/lib/cowstack/journal/repo.c-1.import.json'], // recover.ts
    // initiator.ts: CHAP secret
    ['install', '-m', '0600', '/proc/self/fd/0', `/etc/iscsi/nodes/${IQN}/10.0.2.2,3260,1/default`],
    ['truncate', '--size', '>1073741824', '--', '/srv/cowstack/repo.img'], // target.ts: tgt file LUN
  ];
  for (const argv of inline) reqs.push({ argv, kind: 'write', root: true });
  return [...reqs, ...runner.requests];
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

describe('root programs in src/', () => {
  it('the scan understands every root request', () => {
    expect(scan.unresolved).toEqual([]);
  });

  it('finds the root programs it must find (the scan is not silently blind)', () => {
    const found = new Set(scan.programs.map((p) => p.program));
    for (const name of [
      'lvchange',
      'lvs',
      'dmsetup',
      'dd',
      'install',
      'rm',
      'sanlock',
      'iscsiadm',
      'lvm',
      'cache_check',
      'iscsid',
      'systemctl',
    ]) {
      expect(found.has(name), `scan did not find ${name}`).toBe(true);
    }
  });

  it('every program src/ runs as root is in src/exec/rootPrograms.ts (and so in sudoers/cowstack)', () => {
    const missing = scan.programs.filter((p) => !rootProgram(p.program)).map((p) => `${p.program} (${p.where})`);
    expect(missing, 'add these to src/exec/rootPrograms.ts and sudoers/cowstack').toEqual([]);
  });

  it('rootPrograms lists nothing that src/ no longer runs as root', () => {
    const found = new Set(scan.programs.map((p) => p.program));
    expect(
      ROOT_PROGRAMS.filter((p) => !found.has(p.name)).map((p) => p.name),
      'remove these from rootPrograms.ts and sudoers/cowstack',
    ).toEqual([]);
  });

  it('sudoers allows every option src/ passes to each LVM command', () => {
    expect(scan.lvmOptions.get('lvchange')).toContain('-aey');
    const refused: string[] = [];
    for (const [command, opts] of scan.lvmOptions) {
      for (const opt of opts) {
        if (!allowingRules([command, opt, 'repo/x']).length && !allowingRules([command, opt]).length)
          refused.push(`${command} ${opt}`);
      }
    }
    expect(refused, 'sudoers/cowstack refuses these LVM options').toEqual([]);
  });

  it('sudoers allows every root argv that src/ spells out in full', () => {
    expect(scan.literalArgvs.length).toBeGreaterThan(5);
    for (const argv of scan.literalArgvs) expect(allowingRules(argv).length, argv.join(' ')).toBeGreaterThan(0);
  });

  it('sudoers allows every root command line cowstack builds', async () => {
    const roots = (await builtRequests()).filter((r) => r.root);
    expect(roots.length).toBeGreaterThan(60);
    const refused = roots.filter((r) => !allowingRules(r.argv).length).map((r) => r.argv.join(' '));
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
