/**
 * `cowstack install`: put the files a site needs on a node, the repository server or the
 * OpenNebula front-end in place, checked before they take effect. The sudoers drop-in is written beside its final
 * name (sudo ignores files with a `.` in sudoers.d), checked with `visudo -cf`, and only then
 * moved over the old one: a broken file never reaches sudo. Files already as they should be
 * are left alone, so a re-run changes nothing.
 *
 * Installing is root's job (it grants the service user its rights), so cowstack refuses to
 * run it as anyone else instead of asking sudo for it; none of these commands is in sudoers.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CowstackError, EXIT, commandFailed, refused, usageError } from '../exec/errors.js';
import type { RunRequest, Runner } from '../exec/types.js';
import { installFileReq, moveReq, readOwnFileReq } from '../tools/files.js';
import * as flock from '../tools/flock.js';
import * as host from '../tools/host.js';
import * as udevadm from '../tools/udevadm.js';
import { readJournalSync } from './journalSync.js';
import type { NodeSession } from './node.js';
import { validateVgName } from './validate.js';

export const SUDOERS_PATH = '/etc/sudoers.d/cowstack';
export const UDEV_RULE_PATH = '/etc/udev/rules.d/99-cowstack.rules';
export const CONFIG_PATH = '/etc/cowstack/cowstack.yaml';

/** OpenNebula's remotes directory on the front-end: oned runs <remotes>/{tm,datastore}/<driver>/<action>. */
export const REMOTES_DIR = '/var/lib/one/remotes';
/** The driver directories of the package a front-end gets, each at the same path under the remotes. */
export const FRONTEND_DRIVERS = ['tm/cowstack', 'datastore/cowstack'] as const;

/**
 * What oned.conf needs for the TM driver (the README explains each attribute). Printed, not
 * written: oned.conf is the site's, and its TM_MAD line lists every driver the site uses, which
 * only the site can merge.
 */
/** OpenNebula's own TM drivers as its oned.conf lists them, then cowstack. */
const TM_DRIVERS = 'dummy,lvm,shared,fs_lvm,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt,cowstack';
export const ONED_TM_STANZA =
  '# add cowstack to the driver list (-d) of your TM_MAD line, e.g.\n' +
  `TM_MAD = [ EXECUTABLE = "one_tm", ARGUMENTS = "-t 15 -d ${TM_DRIVERS}" ]\n` +
  'TM_MAD_CONF = [ NAME = "cowstack", LN_TARGET = "NONE", CLONE_TARGET = "SELF", SHARED = "YES",\n' +
  '                DS_MIGRATE = "NO", DRIVER = "raw", ALLOW_ORPHANS = "NO", TM_MAD_SYSTEM = "" ]\n';

/** OpenNebula's datastore drivers as its oned.conf lists them (-d), the system ones (-s), then cowstack. */
const DS_DRIVERS = 'dummy,fs,lvm,ceph,dev,iscsi_libvirt,restic,rsync,netapp,purefa,virtiofs,interactive,cowstack';
const DS_SYSTEM = 'dummy,lvm,shared,ssh,local,ceph,fs_lvm,fs_lvm_ssh,qcow2,netapp,purefa,cowstack';
/** What oned.conf needs for the datastore driver (README "OpenNebula datastore driver"); printed, as the TM one. */
export const ONED_DS_STANZA =
  '# add cowstack to both lists (-d: image datastores, -s: system datastores) of your DATASTORE_MAD line, e.g.\n' +
  `DATASTORE_MAD = [ EXECUTABLE = "one_datastore", ARGUMENTS = "-t 15 -d ${DS_DRIVERS} -s ${DS_SYSTEM}" ]\n` +
  'DS_MAD_CONF = [ NAME = "cowstack", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO", MARKETPLACE_ACTIONS = "export" ]\n';

/**
 * The VMM action live migration needs (README "Live migration"): oned runs <remotes>/vmm/kvm/migrate
 * on the source host, and a VMM driver directory must hold every action, so cowstack's replaces
 * that one file of the stock kvm driver rather than being a driver of its own. The stock action is
 * moved aside to migrate.stock (moving it back undoes the install); oned.conf does not change.
 */
export const VMM_ACTION = 'vmm/kvm/migrate';
export const VMM_STOCK_SUFFIX = '.stock';
/** A line every version of cowstack's action carries (the bash one too): such a file is not the stock one. */
const VMM_OURS = 'OpenNebula VMM action "migrate" for KVM hosts whose VM disks are cowstack clones';
export const ONED_VMM_STANZA =
  "# VM_MAD kvm: no change. Its migrate action (remotes/vmm/kvm/migrate) is now cowstack's; the stock one\n" +
  '# is kept as migrate.stock (move it back to undo). Copy the remotes to the hosts: onehost sync --force\n';

export type InstallRole = 'node' | 'server' | 'frontend';

export interface InstallOptions {
  role: InstallRole;
  /** Service users (sudoers) and the hypervisor user that owns VM disks (udev rule); not for a front-end. */
  users: string[];
  vg: string;
  /** Directory holding sudoers/, cluster-conf/ and tm/ (default: the cowstack package). */
  from?: string;
  /** The front-end's OpenNebula remotes directory (default REMOTES_DIR). */
  remotes?: string;
}

export interface InstalledFile {
  path: string;
  action: 'installed' | 'updated' | 'unchanged' | 'kept';
}

export interface InstallResult {
  role: InstallRole;
  files: InstalledFile[];
  /** Front-end: what oned.conf needs (printed; see ONED_TM_STANZA, ONED_DS_STANZA, ONED_VMM_STANZA). */
  onedConf?: string;
}

/** The package root: the nearest directory above this module that holds sudoers/cowstack. */
export function packageRoot(start = path.dirname(fileURLToPath(import.meta.url))): string | undefined {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'sudoers', 'cowstack'))) return dir;
    if (path.dirname(dir) === dir) return undefined;
  }
}

export function validateUser(user: string): string {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user ?? ''))
    throw usageError(
      `user "${user}" is not a valid login name`,
      'lower-case letters, digits, _ and -, starting with a letter or _, at most 32 characters',
    );
  return user;
}

/** sudoers/cowstack with the service users in its one User_Alias line. */
export function sudoersFor(text: string, users: string[]): string {
  const line = /^User_Alias COWSTACK_USERS = .*$/m;
  if (!line.test(text))
    throw new CowstackError(EXIT.FAILED, 'sudoers/cowstack has no "User_Alias COWSTACK_USERS = ..." line to fill in');
  return text.replace(line, `User_Alias COWSTACK_USERS = ${users.join(', ')}`);
}

/** The udev rule with the hypervisor user as the owner of cowstack's rw devices. */
export function udevRuleFor(text: string, user: string): string {
  return text.replace(/OWNER="[^"]*"/g, `OWNER="${user}"`);
}

export const configFor = (vg: string): string =>
  `# cowstack configuration (written by cowstack install; see the README for every key)\nrepository:\n  vg: ${vg}\n`;

/** A front-end's first config: the TM driver reaches the nodes over ssh, which the site names. */
export const frontendConfigFor = (vg: string): string =>
  `${configFor(vg)}# The TM driver reaches the nodes over ssh (README: "OpenNebula transfer-manager driver"):\n` +
  '# ssh:\n#   config: /etc/cowstack/ssh_config\n# tm:\n#   hosts: [node1, node2]\n';

/** An absolute, normalised directory of plain characters (it becomes part of every path written). */
export function validateRemotesDir(dir: string): string {
  const clean = path.posix.normalize(dir ?? '').replace(/(.)\/+$/, '$1');
  if (!/^\/[A-Za-z0-9._+/-]*$/.test(dir ?? '') || clean !== dir || dir.split('/').includes('..'))
    throw usageError(
      `remotes directory "${dir}" is not an absolute, normalised path of letters, digits and . _ + - /`,
      `OpenNebula's is ${REMOTES_DIR}`,
    );
  return dir;
}

/** A package file to install: its content and mode (executable where the package's is). */
interface SourceFile {
  name: string;
  content: string;
  mode: number;
}

function driverFiles(root: string, driver: string): SourceFile[] {
  const dir = path.join(root, driver);
  return readdirSync(dir)
    .sort()
    .filter((name) => statSync(path.join(dir, name)).isFile())
    .map((name) => ({
      name,
      content: readFileSync(path.join(dir, name), 'utf8'),
      mode: statSync(path.join(dir, name)).mode & 0o111 ? 0o755 : 0o644,
    }));
}

const octal = (mode: number) => `0${mode.toString(8)}`;

/**
 * The front-end's driver scripts into the remotes directory: one read of the modes there, one of
 * each file; only a file whose content or mode differs is written (install -D creates the
 * driver directory), so a re-run writes nothing.
 */
async function installDrivers(runner: Runner, root: string, remotes: string): Promise<InstalledFile[]> {
  const files: InstalledFile[] = [];
  for (const driver of FRONTEND_DRIVERS) {
    const target = `${remotes}/${driver}`;
    const modes = host.parseFileModes((await runner.run(host.fileModesReq(target))).stdout);
    for (const f of driverFiles(root, driver)) {
      const file = `${target}/${f.name}`;
      const had = modes.has(f.name) ? await current(runner, file) : undefined;
      if (had === f.content && modes.get(f.name) === f.mode) {
        files.push({ path: file, action: 'unchanged' });
        continue;
      }
      await must(runner, installFileReq(file, f.content, octal(f.mode)));
      files.push({ path: file, action: had === undefined ? 'installed' : 'updated' });
    }
  }
  return files;
}

/**
 * cowstack's VMM migrate action over the stock one, which is moved to migrate.stock first (a
 * stock file that an OpenNebula upgrade put back replaces an older backup). A re-run writes nothing.
 */
async function installVmmAction(runner: Runner, root: string, remotes: string): Promise<InstalledFile[]> {
  const ours = readFileSync(path.join(root, VMM_ACTION), 'utf8');
  const file = `${remotes}/${VMM_ACTION}`;
  const stock = `${file}${VMM_STOCK_SUFFIX}`;
  const name = path.posix.basename(file);
  const modes = host.parseFileModes((await runner.run(host.fileModesReq(path.posix.dirname(file)))).stdout);
  const had = modes.has(name) ? await current(runner, file) : undefined;
  const files: InstalledFile[] = [];
  if (had !== undefined && !had.includes(VMM_OURS)) {
    await must(runner, { ...moveReq(file, stock), title: `keep OpenNebula's migrate action as ${stock}` });
    files.push({ path: stock, action: 'installed' });
  } else if (modes.has(`${name}${VMM_STOCK_SUFFIX}`)) files.push({ path: stock, action: 'kept' });
  if (had === ours && modes.get(name) === 0o755) files.push({ path: file, action: 'unchanged' });
  else {
    await must(runner, installFileReq(file, ours, '0755'));
    files.push({ path: file, action: had === undefined ? 'installed' : 'updated' });
  }
  return files;
}

async function current(runner: Runner, file: string): Promise<string | undefined> {
  const r = await runner.run(readOwnFileReq(file));
  return r.exitCode === 0 ? r.stdout : undefined;
}

async function must(runner: Runner, req: RunRequest): Promise<void> {
  const r = await runner.run(req);
  if (r.exitCode !== 0 && !r.skipped) throw commandFailed(runner.target, r);
}

/** Installs the session node's root files; the repository VG is the session's. */
export async function install(ctx: NodeSession, opts: Omit<InstallOptions, 'vg'>): Promise<InstallResult> {
  const { runner } = ctx;
  const o: InstallOptions = { ...opts, vg: ctx.vg };
  const frontend = o.role === 'frontend';
  if (!frontend) {
    if (!o.users.length) throw usageError('name at least one user (--user)');
    o.users.forEach(validateUser);
  }
  validateVgName(o.vg);
  const remotes = validateRemotesDir(o.remotes ?? REMOTES_DIR);
  const root = o.from ?? packageRoot();
  const needed = frontend ? [...FRONTEND_DRIVERS, VMM_ACTION] : [path.join('sudoers', 'cowstack')];
  const needs = needed.find((n) => !root || !existsSync(path.join(root, n)));
  if (!root || needs) {
    throw usageError(
      `cannot find ${needs}${o.from ? ` under ${o.from}` : ' next to cowstack'}`,
      'run from a cowstack checkout or package, or give --from DIR (the single-file bundle has no data files)',
    );
  }
  const uid = (await runner.run(host.userIdReq())).stdout.trim();
  if (uid !== '0')
    throw refused(
      `cowstack install must run as root on ${runner.target} ` +
        `(it writes ${frontend ? `${remotes} and ${CONFIG_PATH}` : SUDOERS_PATH})`,
      'run it as root, e.g. sudo cowstack install ...',
    );

  const files: InstalledFile[] = [];
  if (frontend)
    files.push(...(await installDrivers(runner, root, remotes)), ...(await installVmmAction(runner, root, remotes)));
  else files.push(await installSudoers(runner, root, o.users));

  if (o.role === 'node') {
    const rule = udevRuleFor(readFileSync(path.join(root, 'cluster-conf', '99-cowstack.rules'), 'utf8'), o.users[0]!);
    const hadRule = await current(runner, UDEV_RULE_PATH);
    if (hadRule === rule) files.push({ path: UDEV_RULE_PATH, action: 'unchanged' });
    else {
      await must(runner, installFileReq(UDEV_RULE_PATH, rule, '0644'));
      await must(runner, { ...udevadm.reloadRulesReq(), title: 'reload udev rules' });
      files.push({ path: UDEV_RULE_PATH, action: hadRule === undefined ? 'installed' : 'updated' });
    }
  }

  if (o.role === 'node') files.push(await syncJournal(runner));

  // The config is the site's: written once, never overwritten.
  if ((await current(runner, CONFIG_PATH)) === undefined) {
    await must(runner, installFileReq(CONFIG_PATH, frontend ? frontendConfigFor(o.vg) : configFor(o.vg), '0644'));
    files.push({ path: CONFIG_PATH, action: 'installed' });
  } else files.push({ path: CONFIG_PATH, action: 'kept' });
  return { role: o.role, files, ...(frontend ? { onedConf: ONED_TM_STANZA + ONED_DS_STANZA + ONED_VMM_STANZA } : {}) };
}

/**
 * The journal directory synchronous (core/journalSync.ts): made so if absent; on a node an
 * older cowstack set up, the attribute added to the directory and the logs already in it.
 */
async function syncJournal(runner: Runner): Promise<InstalledFile> {
  const now = await readJournalSync(runner);
  const file = (action: InstalledFile['action']): InstalledFile => ({ path: flock.JOURNAL_DIR, action });
  if (now.state === 'synchronous') return file('unchanged');
  if (now.state === 'absent') {
    await must(runner, flock.lockDirReq());
    await must(runner, flock.syncAttrReq());
    return file('installed');
  }
  if (now.state === 'unknown')
    throw new CowstackError(EXIT.FAILED, `cannot read the attributes of ${flock.JOURNAL_DIR}: ${now.error}`, {
      hint:
        'keep /var/lib/cowstack on a disk file system with attributes (ext4, XFS, btrfs): ' +
        'the journal must survive a power cut',
    });
  await must(runner, {
    ...flock.syncAttrReq(now.paths),
    title: `make the journal synchronous: ${now.paths.join(' ')}`,
  });
  return file('updated');
}

/** sudoers: written beside, checked, then moved into place. */
async function installSudoers(runner: Runner, root: string, users: string[]): Promise<InstalledFile> {
  const sudoers = sudoersFor(readFileSync(path.join(root, 'sudoers', 'cowstack'), 'utf8'), users);
  const had = await current(runner, SUDOERS_PATH);
  if (had === sudoers) return { path: SUDOERS_PATH, action: 'unchanged' };
  const tmp = `${SUDOERS_PATH}.cowstack-new`;
  await must(runner, installFileReq(tmp, sudoers, '0440'));
  const check = await runner.run({ ...host.sudoersCheckReq(tmp), title: `check ${tmp}` });
  if (check.exitCode !== 0 && !check.skipped) {
    await runner.run({ ...host.removeReq(tmp), allowFailure: true });
    throw new CowstackError(
      EXIT.FAILED,
      `visudo rejects the sudoers file for ${users.join(', ')}; nothing was installed`,
      {
        hint: 'sudoers/cowstack needs sudo >= 1.9.10 (regular expressions in arguments)',
        data: { output: `${check.stdout}${check.stderr}`.trim() },
      },
    );
  }
  await must(runner, { ...moveReq(tmp, SUDOERS_PATH), title: `install ${SUDOERS_PATH}` });
  return { path: SUDOERS_PATH, action: had === undefined ? 'installed' : 'updated' };
}
