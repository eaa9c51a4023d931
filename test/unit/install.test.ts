import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_PATH,
  SUDOERS_PATH,
  UDEV_RULE_PATH,
  configFor,
  install,
  packageRoot,
  sudoersFor,
  udevRuleFor,
} from '../../src/core/install.js';
import { nodeSession } from '../../src/core/node.js';
import { EXIT } from '../../src/exec/errors.js';
import { recorder, rejectionOf } from './support.js';

const ROOT = packageRoot()!;
const SUDOERS = readFileSync(path.join(ROOT, 'sudoers/cowstack'), 'utf8');
const RULE = readFileSync(path.join(ROOT, 'cluster-conf/99-cowstack.rules'), 'utf8');
const R = { kind: 'read' as const };
const W = { kind: 'write' as const };

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
      .expect(['cat', '--', CONFIG_PATH], { ...R, exitCode: 1 })
      .expect(['install', '-D', '-m', '0644', '/proc/self/fd/0', CONFIG_PATH], W);
    const out = await install(nodeSession({ runner: r, vg: 'repo' }), { role: 'node', users: ['oneadmin'] });
    expect(out.files).toEqual([
      { path: SUDOERS_PATH, action: 'installed' },
      { path: UDEV_RULE_PATH, action: 'unchanged' },
      { path: CONFIG_PATH, action: 'installed' },
    ]);
    expect(r.calls[2]!.input).toBe(sudoersFor(SUDOERS, ['oneadmin']));
    expect(r.calls[7]!.input).toBe(configFor('repo'));
    r.verify();
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
