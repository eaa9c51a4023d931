import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exec/errors.js';
import { shellJoin, shellQuote } from '../../src/exec/quote.js';
import { SshRunner } from '../../src/exec/sshRunner.js';
import { rejectionOf } from './support.js';

/** Arguments that would do damage, or just change meaning, if a shell interpreted them. */
const HOSTILE = [
  "'; rm -rf /",
  '$(id)',
  '`id`',
  '${HOME}',
  '$HOME',
  'two words',
  '  leading and trailing  ',
  "it's",
  "''",
  '"double"',
  '\'"mixed"\'',
  '',
  'line1\nline2',
  '\n',
  'tab\there',
  'a;b',
  'a && b',
  'a | b',
  '> /tmp/cowstack-should-not-exist',
  '< /etc/passwd',
  '*',
  '?',
  '[ab]',
  '~',
  '~root',
  '#not-a-comment',
  '!event',
  'back\\slash',
  '\\',
  '-n',
  '--',
  'x=y',
  'plain-word_1.2:3,4=5@6%7+8/9',
  '{a,b}',
  'ünïcödé',
];

/** Run a command line the way a remote login shell does (ssh hands it to `sh -c`). */
const sh = (commandLine: string): string =>
  execFileSync('sh', ['-c', commandLine], {
    cwd: tmpdir(),
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' },
  });

describe('shellQuote', () => {
  it('leaves plain words alone and quotes everything else', () => {
    expect(shellQuote('lvchange')).toBe('lvchange');
    expect(shellQuote('repo/img-1.2')).toBe('repo/img-1.2');
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('$(id)')).toBe("'$(id)'");
    expect(shellQuote('~')).toBe("'~'");
  });

  it('shellJoin keeps word boundaries', () => {
    expect(shellJoin(['dmsetup', 'create', 'x', '--table', '0 8 linear /dev/sdb 0'])).toBe(
      "dmsetup create x --table '0 8 linear /dev/sdb 0'",
    );
  });

  it.each(HOSTILE.map((w) => [JSON.stringify(w), w]))('round-trips %s through sh -c', (_label, word) => {
    expect(sh(`printf '%s\\n' ${shellQuote(word)}`)).toBe(`${word}\n`);
  });

  it('round-trips all hostile words at once, one line each', () => {
    expect(sh(`printf '%s\\n' ${shellJoin(HOSTILE)}`)).toBe(HOSTILE.map((w) => `${w}\n`).join(''));
  });

  it('keeps word boundaries exactly (NUL-separated, so embedded newlines cannot hide a split)', () => {
    const out = sh(`printf '%s\\0' ${shellJoin(HOSTILE)}`);
    expect(out.split('\0').slice(0, -1)).toEqual(HOSTILE);
  });
});

describe('SshRunner.remoteCommand', () => {
  it('sets LC_ALL=C, execs the quoted program and quotes every word', () => {
    expect(SshRunner.remoteCommand(['lvs', 'repo/a b'])).toBe("LC_ALL=C exec 'lvs' 'repo/a b'");
    expect(SshRunner.remoteCommand(['true'], { DM_DISABLE_UDEV: '1' })).toBe("LC_ALL=C DM_DISABLE_UDEV=1 exec 'true'");
  });

  it('never reads the program as a keyword, an assignment or a function', () => {
    // Looked up as programs (not found: 127), not parsed as a keyword (a syntax error: 2)
    // nor taken as an assignment (0), by dash and bash alike; a function of that name is not run.
    for (const shell of ['sh', 'bash'])
      for (const argv of [['if', 'x'], ['A=1', 'x'], ['f']]) {
        const r = spawnSync(shell, ['-c', `f() { echo function; }; ${SshRunner.remoteCommand(argv)}`], {
          encoding: 'utf8',
        });
        expect([shell, argv[0], r.status, r.stdout]).toEqual([shell, argv[0], 127, '']);
      }
    expect(() => SshRunner.remoteCommand([])).toThrow(/no program/);
    expect(() => SshRunner.remoteCommand(['true'], { 'A B': '1' })).toThrow(/A B/);
  });

  it('delivers hostile argv to the remote program word for word', () => {
    const line = SshRunner.remoteCommand(['printf', '%s\\0', ...HOSTILE]);
    expect(sh(line).split('\0').slice(0, -1)).toEqual(HOSTILE);
  });

  it('delivers hostile environment values literally and sets LC_ALL=C', () => {
    const value = "$(id); echo 'pwned' `id`\nsecond line";
    expect(sh(SshRunner.remoteCommand(['printenv', 'COWSTACK_T'], { COWSTACK_T: value }))).toBe(`${value}\n`);
    expect(sh(SshRunner.remoteCommand(['printenv', 'LC_ALL']))).toBe('C\n');
  });
});

/**
 * The whole ssh transport with a stand-in `ssh` on PATH: it drops the options and host, and
 * hands the remote command line to `sh -c` as sshd does. Exit code and stderr pass through.
 */
describe('SshRunner through a stand-in ssh', () => {
  let dir: string;
  let savedPath: string | undefined;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cowstack-fake-ssh-'));
    const script = [
      '#!/bin/sh',
      '# stand-in for ssh: [options] HOST -- COMMAND, or [options] -O exit HOST',
      'case " $* " in *" -O exit "*) exit 0;; esac',
      'case " $* " in *" unreachable-host -- "*) echo "ssh: connect to host unreachable-host port 22: ' +
        'No route to host" >&2; exit 255;; esac',
      'while [ "$1" != "--" ]; do shift; done; shift',
      'exec sh -c "$1"',
      '',
    ].join('\n');
    writeFileSync(join(dir, 'ssh'), script);
    chmodSync(join(dir, 'ssh'), 0o755);
    savedPath = process.env.PATH;
    process.env.PATH = `${dir}:${savedPath}`;
  });
  afterAll(() => {
    process.env.PATH = savedPath;
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the argv on the "remote" side unchanged', async () => {
    const runner = new SshRunner('node1', 'never');
    const r = await runner.run({ argv: ['printf', '%s\\0', ...HOSTILE], kind: 'read' });
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(HOSTILE);
    expect(r.argv).toEqual(['printf', '%s\\0', ...HOSTILE]);
    await runner.close();
  });

  it('passes stdin through', async () => {
    const runner = new SshRunner('node1', 'never');
    const r = await runner.run({ argv: ['cat'], kind: 'read', input: 'local {\n\thost_id = 2\n}\n' });
    expect(r.stdout).toBe('local {\n\thost_id = 2\n}\n');
  });

  it('reports a missing remote program as MISSING, naming the host', async () => {
    const runner = new SshRunner('node1', 'never');
    const e = await rejectionOf(runner.run({ argv: ['cowstack-no-such-program'], kind: 'read' }), EXIT.MISSING);
    expect(e.message).toBe('program "cowstack-no-such-program" is not installed on node1');
  });

  it('reports a failed remote program as a CommandError with its exit code and stderr', async () => {
    const runner = new SshRunner('node1', 'never');
    const e = await rejectionOf(
      runner.run({ argv: ['sh', '-c', 'echo boom >&2; exit 4'], kind: 'write' }),
      EXIT.FAILED,
    );
    expect(e.data).toMatchObject({
      argv: ['sh', '-c', 'echo boom >&2; exit 4'],
      exitCode: 4,
      stderr: 'boom',
      host: 'node1',
    });
  });

  it('reports an ssh failure as UNREACHABLE', async () => {
    const runner = new SshRunner('unreachable-host', 'never');
    const e = await rejectionOf(runner.run({ argv: ['true'], kind: 'read' }), EXIT.UNREACHABLE);
    expect(e.message).toContain('unreachable-host');
    expect(e.message).toContain('No route to host');
  });

  it('builds its ssh options from the config file and a per-host control socket', () => {
    const args = new SshRunner('node1', 'never', { configFile: '/tmp/ssh_config', connectTimeout: 5 }).sshArgs();
    expect(args.slice(0, 6)).toEqual(['-F', '/tmp/ssh_config', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5']);
    expect(args).toContain('ControlMaster=auto');
    const path = args.find((a) => a.startsWith('ControlPath='))!;
    expect(path.length).toBeLessThan(100);
    expect(new SshRunner('node2', 'never', { configFile: '/tmp/ssh_config' }).sshArgs()).not.toContain(path);
  });
});
