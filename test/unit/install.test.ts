import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_PATH,
  ONED_DS_STANZA,
  ONED_TM_STANZA,
  ONED_VMM_STANZA,
  VMM_ACTION,
  REMOTES_DIR,
  SUDOERS_PATH,
  UDEV_RULE_PATH,
  configFor,
  frontendConfigFor,
  install,
  packageRoot,
  sudoersFor,
  udevRuleFor,
} from '../../src/core/install.js';
import { nodeSession } from '../../src/core/node.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { catArgv, fileModesArgv, installFromStdinArgv, recorder, rejectionOf, userIdArgv } from './support.js';

const ROOT = packageRoot()!;
const SUDOERS = readFileSync(path.join(ROOT, 'sudoers/cowstack'), 'utf8');
const RULE = readFileSync(path.join(ROOT, 'cluster-conf/99-cowstack.rules'), 'utf8');
const R = { kind: 'read' as const };
const W = { kind: 'write' as const };
const J = '/var/lib/cowstack/journal';
/** lsattr -a of a journal directory made synchronous, with a log made before it was (an older cowstack). */
const journalAttrs = [`--S------e----- ${J}/.`, `---------e----- ${J}/repo.log`, `-----I---e----- ${J}/..`, ''].join(
  '\n',
);

describe('install', () => {
  it('finds the package root from the module', () => {
    expect(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).toContain('"name": "cowstack"');
  });

  it('fills in the service users; the result still passes visudo', () => {
    const text = sudoersFor(SUDOERS, ['cowstack', 'oneadmin']);
    expect(text).toMatch(/^User_Alias COWSTACK_USERS = cowstack, oneadmin$/m);
    expect(text.match(/^User_Alias/gm)).toHaveLength(1);
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'cowstack-sudoers-')), 'cowstack');
    writeFileSync(file, text);
    const r = spawnSync('visudo', ['-cf', file], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });

  it('makes the hypervisor user the owner in the udev rule and nothing else', () => {
    const text = udevRuleFor(RULE, 'vmuser');
    expect(text).toContain('OWNER="vmuser", GROUP="disk", MODE="0660"');
    expect(text.replace('OWNER="vmuser"', 'OWNER="oneadmin"')).toBe(RULE);
  });

  it('refuses to run as anyone but root, before writing anything', async () => {
    const r = recorder().expect(['id', '-u'], { ...R, stdout: '1000\n' });
    expect(
      (
        await rejectionOf(
          install(nodeSession({ runner: r, vg: 'repo' }), { role: 'node', users: ['oneadmin'] }),
          EXIT.REFUSED,
        )
      ).hint,
    ).toContain('as root');
    r.verify();
  });

  it('rejects a bad user name before running anything', async () => {
    const r = recorder();
    expect(
      (
        await rejectionOf(
          install(nodeSession({ runner: r, vg: 'repo' }), { role: 'node', users: ['root;rm'] }),
          EXIT.USAGE,
        )
      ).message,
    ).toContain('"root;rm"');
    r.verify();
  });

  const installNodeSteps =
    'writes sudoers beside its name, checks it with visudo, then moves it; udev rule with a reload; config once';
  it(installNodeSteps, async () => {
    const tmp = `${SUDOERS_PATH}.cowstack-new`;
    const r = recorder()
      .expect(['id', '-u'], { ...R, stdout: '0\n' })
      .expect(['cat', '--', SUDOERS_PATH], { ...R, exitCode: 1 })
      .expect(['install', '-D', '-m', '0440', '/proc/self/fd/0', tmp], W)
      .expect(['visudo', '-cf', tmp], W)
      .expect(['mv', '-f', '--', tmp, SUDOERS_PATH], W)
      .expect(['cat', '--', UDEV_RULE_PATH], { ...R, stdout: udevRuleFor(RULE, 'oneadmin') })
      // A node an older cowstack set up: its journal log lacks the synchronous attribute.
      .expect(['lsattr', '-a', '--', J], { ...R, stdout: journalAttrs })
      .expect(['chattr', '+S', '--', `${J}/repo.log`], W)
      .expect(['cat', '--', CONFIG_PATH], { ...R, exitCode: 1 })
      .expect(['install', '-D', '-m', '0644', '/proc/self/fd/0', CONFIG_PATH], W);
    const out = await install(nodeSession({ runner: r, vg: 'repo' }), { role: 'node', users: ['oneadmin'] });
    expect(out.files).toEqual([
      { path: SUDOERS_PATH, action: 'installed' },
      { path: UDEV_RULE_PATH, action: 'unchanged' },
      { path: J, action: 'updated' },
      { path: CONFIG_PATH, action: 'installed' },
    ]);
    expect(r.calls[2]!.input).toBe(sudoersFor(SUDOERS, ['oneadmin']));
    expect(r.calls[9]!.input).toBe(configFor('repo'));
    r.verify();
  });

  it('the journal directory: made synchronous when absent, left alone when so, refused without attrs', async () => {
    const head = (r: RecordingRunner) =>
      r
        .expect(['id', '-u'], { ...R, stdout: '0\n' })
        .expect(['cat', '--', SUDOERS_PATH], { ...R, stdout: sudoersFor(SUDOERS, ['oneadmin']) })
        .expect(['cat', '--', UDEV_RULE_PATH], { ...R, stdout: udevRuleFor(RULE, 'oneadmin') });
    const tail = (r: RecordingRunner) => r.expect(['cat', '--', CONFIG_PATH], { ...R, stdout: 'x' });
    const run = (r: RecordingRunner) =>
      install(nodeSession({ runner: r, vg: 'repo' }), { role: 'node', users: ['oneadmin'] });
    const absent = head(recorder())
      .expect(['lsattr', '-a', '--', J], {
        ...R,
        exitCode: 1,
        stderr: `lsattr: No such file or directory while trying to stat ${J}`,
      })
      .expect(['install', '-d', '-m', '0700', J], W)
      .expect(['chattr', '+S', '--', J], W);
    expect((await run(tail(absent))).files[2]).toEqual({ path: J, action: 'installed' });
    absent.verify();
    const synced = head(recorder()).expect(['lsattr', '-a', '--', J], {
      ...R,
      stdout: journalAttrs.replace('---------e----- ', '--S------e----- '),
    });
    expect((await run(tail(synced))).files[2]).toEqual({ path: J, action: 'unchanged' });
    synced.verify();
    const tmpfs = head(recorder()).expect(['lsattr', '-a', '--', J], {
      ...R,
      exitCode: 1,
      stderr: `lsattr: Inappropriate ioctl for device While reading flags on ${J}/.`,
    });
    const e = await rejectionOf(run(tmpfs), EXIT.FAILED);
    expect(e.message).toContain(`cannot read the attributes of ${J}: lsattr: Inappropriate ioctl`);
    tmpfs.verify();
  });

  it('leaves nothing behind when visudo rejects the file', async () => {
    const tmp = `${SUDOERS_PATH}.cowstack-new`;
    const r = recorder()
      .expect(['id', '-u'], { ...R, stdout: '0\n' })
      .expect(['cat', '--', SUDOERS_PATH], { ...R, exitCode: 1 })
      .expect(['install', '-D', '-m', '0440', '/proc/self/fd/0', tmp], W)
      .expect(['visudo', '-cf', tmp], { ...W, exitCode: 1, stderr: 'syntax error near line 60\n' })
      .expect(['rm', '-f', '--', tmp], W);
    expect(
      (
        await rejectionOf(
          install(nodeSession({ runner: r, vg: 'repo' }), { role: 'server', users: ['oneadmin'] }),
          EXIT.FAILED,
        )
      ).message,
    ).toContain('visudo rejects');
    r.verify();
  });
});

/** The package's TM and datastore drivers as install --frontend must reproduce them: name, content, mode. */
const driverFiles = (driver: string) => {
  const dir = path.join(ROOT, driver);
  return readdirSync(dir)
    .sort()
    .map((name) => {
      const st = statSync(path.join(dir, name));
      return { name, content: readFileSync(path.join(dir, name), 'utf8'), mode: st.mode & 0o111 ? '755' : '644' };
    });
};
const TM_FILES = driverFiles('tm/cowstack');
const DS_FILES = driverFiles('datastore/cowstack');
const VMM = readFileSync(path.join(ROOT, VMM_ACTION), 'utf8');
const STOCK_MIGRATE = '#!/bin/bash\n# stock OpenNebula migrate\nvirsh migrate --live "$1" "qemu+ssh://$2/system"\n';

describe('install --frontend', () => {
  const session = (r: RecordingRunner | DryRunRunner) => nodeSession({ runner: r, vg: 'repo' });
  const target = (remotes = REMOTES_DIR) => `${remotes}/tm/cowstack`;
  const dsTarget = (remotes = REMOTES_DIR) => `${remotes}/datastore/cowstack`;
  /** `find -printf '%f %m\\n'` of the driver directory: `files` with their modes. */
  const modes = (files: Array<{ name: string; mode: string }>) => ({
    ...R,
    stdout: files.map((f) => `${f.name} ${f.mode}\n`).join(''),
  });
  /** The datastore driver's files, all there already as they should be: read, never written. */
  const dsUnchanged = (r: RecordingRunner, remotes = REMOTES_DIR) => {
    r.expect(fileModesArgv(dsTarget(remotes)), modes(DS_FILES));
    for (const f of DS_FILES) r.expect(catArgv(`${dsTarget(remotes)}/${f.name}`), { ...R, stdout: f.content });
    return vmmUnchanged(r, remotes);
  };
  const vmmDir = (remotes = REMOTES_DIR) => `${remotes}/vmm/kvm`;
  /** The stock kvm driver's directory with cowstack's migrate action in place, the stock one kept. */
  const vmmUnchanged = (r: RecordingRunner, remotes = REMOTES_DIR) =>
    r
      .expect(fileModesArgv(vmmDir(remotes)), { ...R, stdout: 'deploy 755\nmigrate 755\nmigrate.stock 755\n' })
      .expect(catArgv(`${vmmDir(remotes)}/migrate`), { ...R, stdout: VMM });
  /** The stock action moved aside to migrate.stock, then cowstack's written in its place. */
  const vmmOverStock = (r: RecordingRunner) =>
    r
      .expect(fileModesArgv(vmmDir()), { ...R, stdout: 'deploy 755\nmigrate 755\n' })
      .expect(catArgv(`${vmmDir()}/migrate`), { ...R, stdout: STOCK_MIGRATE })
      .expect(['mv', '-f', '--', `${vmmDir()}/migrate`, `${vmmDir()}/migrate.stock`], W)
      .expect(installFromStdinArgv(`${vmmDir()}/migrate`, '0755'), W);

  it('sees the driver it installs (the test is not vacuous)', () => {
    expect(TM_FILES.map((f) => f.name)).toEqual(expect.arrayContaining(['cowstack_tm.sh', 'ln', 'clone', 'monitor']));
    expect(TM_FILES.find((f) => f.name === 'ln')!.mode).toBe('755');
    expect(TM_FILES.find((f) => f.name === 'cowstack_tm.sh')!.mode).toBe('644');
    expect(DS_FILES.map((f) => f.name)).toEqual([
      'clone',
      'cowstack_ds.sh',
      'cp',
      'export',
      'mkfs',
      'monitor',
      'rm',
      'snap_flatten',
      'stat',
    ]);
    expect(DS_FILES.filter((f) => f.mode === '644').map((f) => f.name)).toEqual(['cowstack_ds.sh']);
  });

  const freshFrontend =
    'on a fresh front-end writes every driver file with its mode and a config; gives the oned.conf stanza';
  it(freshFrontend, async () => {
    const r = recorder()
      .expect(userIdArgv, { ...R, stdout: '0\n' })
      .expect(fileModesArgv(target()), {
        ...R,
        exitCode: 1,
        stderr: `find: '${target()}': No such file or directory\n`,
      });
    for (const f of TM_FILES) r.expect(installFromStdinArgv(`${target()}/${f.name}`, `0${f.mode}`), W);
    r.expect(fileModesArgv(dsTarget()), { ...R, exitCode: 1 });
    for (const f of DS_FILES) r.expect(installFromStdinArgv(`${dsTarget()}/${f.name}`, `0${f.mode}`), W);
    vmmOverStock(r);
    r.expect(catArgv(CONFIG_PATH), { ...R, exitCode: 1 }).expect(installFromStdinArgv(CONFIG_PATH, '0644'), W);
    const out = await install(session(r), { role: 'frontend', users: [] });
    r.verify();
    expect(out.files).toEqual([
      ...TM_FILES.map((f) => ({ path: `${target()}/${f.name}`, action: 'installed' })),
      ...DS_FILES.map((f) => ({ path: `${dsTarget()}/${f.name}`, action: 'installed' })),
      { path: `${vmmDir()}/migrate.stock`, action: 'installed' },
      { path: `${vmmDir()}/migrate`, action: 'updated' },
      { path: CONFIG_PATH, action: 'installed' },
    ]);
    expect(r.calls.find((c) => c.argv.includes(`${vmmDir()}/migrate`) && c.argv[0] === 'install')!.input).toBe(VMM);
    TM_FILES.forEach((f, i) => expect(r.calls[2 + i]!.input, f.name).toBe(f.content));
    DS_FILES.forEach((f, i) => expect(r.calls[3 + TM_FILES.length + i]!.input, f.name).toBe(f.content));
    expect(r.calls.at(-1)!.input).toBe(frontendConfigFor('repo'));
    expect(out.onedConf).toBe(ONED_TM_STANZA + ONED_DS_STANZA + ONED_VMM_STANZA);
    expect(out.onedConf).toContain('migrate.stock');
    expect(out.onedConf).toContain('DS_MAD_CONF = [ NAME = "cowstack"');
    expect(out.onedConf).toContain('TM_MAD_CONF = [ NAME = "cowstack"');
  });

  it('a re-run changes nothing: same content and mode everywhere, the config kept', async () => {
    const r = recorder()
      .expect(userIdArgv, { ...R, stdout: '0\n' })
      .expect(fileModesArgv(target()), modes(TM_FILES));
    for (const f of TM_FILES) r.expect(catArgv(`${target()}/${f.name}`), { ...R, stdout: f.content });
    dsUnchanged(r).expect(catArgv(CONFIG_PATH), { ...R, stdout: frontendConfigFor('repo') });
    const out = await install(session(r), { role: 'frontend', users: [] });
    r.verify();
    expect(out.files.map((f) => f.action)).toEqual([
      ...[...TM_FILES, ...DS_FILES].map(() => 'unchanged'),
      'kept',
      'unchanged',
      'kept',
    ]);
  });

  it('rewrites only a file whose content or mode differs, under --remotes', async () => {
    const remotes = '/srv/one/remotes';
    const [changed, notExecutable] = TM_FILES.filter((f) => f.mode === '755');
    const r = recorder()
      .expect(userIdArgv, { ...R, stdout: '0\n' })
      .expect(
        fileModesArgv(target(remotes)),
        modes(TM_FILES.map((f) => (f === notExecutable ? { ...f, mode: '644' } : f))),
      );
    for (const f of TM_FILES) {
      r.expect(catArgv(`${target(remotes)}/${f.name}`), {
        ...R,
        stdout: f === changed ? '#!/bin/sh\nold\n' : f.content,
      });
      if (f === changed || f === notExecutable)
        r.expect(installFromStdinArgv(`${target(remotes)}/${f.name}`, '0755'), W);
    }
    dsUnchanged(r, remotes).expect(catArgv(CONFIG_PATH), { ...R, stdout: configFor('repo') });
    const out = await install(session(r), { role: 'frontend', users: [], remotes });
    r.verify();
    const rewritten = out.files.filter((f) => f.action !== 'unchanged' && f.action !== 'kept');
    expect(rewritten).toEqual([
      { path: `${target(remotes)}/${changed!.name}`, action: 'updated' },
      { path: `${target(remotes)}/${notExecutable!.name}`, action: 'updated' },
    ]);
  });

  it('--dry-run reads as a real run does and prints exactly the one write it would make', async () => {
    const present = TM_FILES.filter((f) => f.name !== 'ln');
    const r = recorder()
      .expect(userIdArgv, { ...R, stdout: '0\n' })
      .expect(fileModesArgv(target()), modes(present));
    for (const f of present) r.expect(catArgv(`${target()}/${f.name}`), { ...R, stdout: f.content });
    dsUnchanged(r).expect(catArgv(CONFIG_PATH), { ...R, stdout: frontendConfigFor('repo') });
    const dry = new DryRunRunner(r);
    const out = await install(session(dry), { role: 'frontend', users: [] });
    r.verify();
    expect(dry.planned.map((p) => p.argv)).toEqual([installFromStdinArgv(`${target()}/ln`, '0755')]);
    expect(out.files.filter((f) => f.action === 'installed')).toEqual([
      { path: `${target()}/ln`, action: 'installed' },
    ]);
  });

  it('replaces an earlier cowstack migrate action without taking it for the stock one', async () => {
    const old =
      '#!/bin/bash\n# OpenNebula VMM action "migrate" for KVM hosts whose VM disks are cowstack clones (README,\n';
    const r = recorder()
      .expect(userIdArgv, { ...R, stdout: '0\n' })
      .expect(fileModesArgv(target()), modes(TM_FILES));
    for (const f of TM_FILES) r.expect(catArgv(`${target()}/${f.name}`), { ...R, stdout: f.content });
    r.expect(fileModesArgv(dsTarget()), modes(DS_FILES));
    for (const f of DS_FILES) r.expect(catArgv(`${dsTarget()}/${f.name}`), { ...R, stdout: f.content });
    r.expect(fileModesArgv(vmmDir()), { ...R, stdout: 'migrate 755\nmigrate.stock 755\n' })
      .expect(catArgv(`${vmmDir()}/migrate`), { ...R, stdout: old })
      .expect(installFromStdinArgv(`${vmmDir()}/migrate`, '0755'), W)
      .expect(catArgv(CONFIG_PATH), { ...R, stdout: frontendConfigFor('repo') });
    const out = await install(session(r), { role: 'frontend', users: [] });
    r.verify();
    expect(out.files.slice(-3)).toEqual([
      { path: `${vmmDir()}/migrate.stock`, action: 'kept' },
      { path: `${vmmDir()}/migrate`, action: 'updated' },
      { path: CONFIG_PATH, action: 'kept' },
    ]);
  });

  it.each(['relative/remotes', '/var/lib/one/remotes/', '/var/lib/one/../one/remotes', '/var/lib/one remotes', ''])(
    'rejects the remotes directory %j before running anything, naming it',
    async (remotes) => {
      const r = recorder();
      const e = await rejectionOf(install(session(r), { role: 'frontend', users: [], remotes }), EXIT.USAGE);
      expect(e.message).toContain(`"${remotes}"`);
      r.verify();
    },
  );

  it("prints the README's oned.conf lines", () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n');
    const lines = (ONED_TM_STANZA + ONED_DS_STANZA)
      .trimEnd()
      .split('\n')
      .filter((l) => !l.startsWith('#'));
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(readme).toContain(line);
  });

  it('refuses to run as anyone but root, before writing anything', async () => {
    const r = recorder().expect(userIdArgv, { ...R, stdout: '9869\n' });
    const e = await rejectionOf(install(session(r), { role: 'frontend', users: [] }), EXIT.REFUSED);
    expect(e.message).toContain(REMOTES_DIR);
    r.verify();
  });
});
