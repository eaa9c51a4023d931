/**
 * `cowstack install`: put the files a site needs on a node (or the repository server) in
 * place, checked before they take effect. The sudoers drop-in is written beside its final
 * name (sudo ignores files with a `.` in sudoers.d), checked with `visudo -cf`, and only then
 * moved over the old one: a broken file never reaches sudo. Files already as they should be
 * are left alone, so a re-run changes nothing.
 *
 * Installing is root's job (it grants the service user its rights), so cowstack refuses to
 * run it as anyone else instead of asking sudo for it; none of these commands is in sudoers.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CowstackError, EXIT, commandFailed, refused, usageError } from '../exec/errors.js';
import type { RunRequest, Runner } from '../exec/types.js';
import { installFileReq, moveReq, readOwnFileReq } from '../tools/files.js';
import * as host from '../tools/host.js';
import * as udevadm from '../tools/udevadm.js';
import type { NodeSession } from './node.js';
import { validateVgName } from './validate.js';

export const SUDOERS_PATH = '/etc/sudoers.d/cowstack';
export const UDEV_RULE_PATH = '/etc/udev/rules.d/99-cowstack.rules';
export const CONFIG_PATH = '/etc/cowstack/cowstack.yaml';

export type InstallRole = 'node' | 'server';

export interface InstallOptions {
  role: InstallRole;
  /** Service users (sudoers) and the hypervisor user that owns VM disks (udev rule). */
  users: string[];
  vg: string;
  /** Directory holding sudoers/ and cluster-conf/ (default: the cowstack package). */
  from?: string;
}

export interface InstalledFile {
  path: string;
  action: 'installed' | 'updated' | 'unchanged' | 'kept';
}

export interface InstallResult {
  role: InstallRole;
  files: InstalledFile[];
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
  if (!o.users.length) throw usageError('name at least one user (--user)');
  o.users.forEach(validateUser);
  validateVgName(o.vg);
  const root = o.from ?? packageRoot();
  if (!root || !existsSync(path.join(root, 'sudoers', 'cowstack'))) {
    throw usageError(
      `cannot find sudoers/cowstack${o.from ? ` under ${o.from}` : ' next to cowstack'}`,
      'run from a cowstack checkout or package, or give --from DIR (the single-file bundle has no data files)',
    );
  }
  const uid = (await runner.run(host.userIdReq())).stdout.trim();
  if (uid !== '0')
    throw refused(
      `cowstack install must run as root on ${runner.target} (it writes ${SUDOERS_PATH})`,
      'run it as root, e.g. sudo cowstack install ...',
    );

  const files: InstalledFile[] = [];
  // sudoers: written beside, checked, then moved into place.
  const sudoers = sudoersFor(readFileSync(path.join(root, 'sudoers', 'cowstack'), 'utf8'), o.users);
  const had = await current(runner, SUDOERS_PATH);
  if (had === sudoers) files.push({ path: SUDOERS_PATH, action: 'unchanged' });
  else {
    const tmp = `${SUDOERS_PATH}.cowstack-new`;
    await must(runner, installFileReq(tmp, sudoers, '0440'));
    const check = await runner.run({ ...host.sudoersCheckReq(tmp), title: `check ${tmp}` });
    if (check.exitCode !== 0 && !check.skipped) {
      await runner.run({ ...host.removeReq(tmp), allowFailure: true });
      throw new CowstackError(
        EXIT.FAILED,
        `visudo rejects the sudoers file for ${o.users.join(', ')}; nothing was installed`,
        {
          hint: 'sudoers/cowstack needs sudo >= 1.9.10 (regular expressions in arguments)',
          data: { output: `${check.stdout}${check.stderr}`.trim() },
        },
      );
    }
    await must(runner, { ...moveReq(tmp, SUDOERS_PATH), title: `install ${SUDOERS_PATH}` });
    files.push({ path: SUDOERS_PATH, action: had === undefined ? 'installed' : 'updated' });
  }

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

  // The config is the site's: written once, never overwritten.
  if ((await current(runner, CONFIG_PATH)) === undefined) {
    await must(runner, installFileReq(CONFIG_PATH, configFor(o.vg), '0644'));
    files.push({ path: CONFIG_PATH, action: 'installed' });
  } else files.push({ path: CONFIG_PATH, action: 'kept' });
  return { role: o.role, files };
}
