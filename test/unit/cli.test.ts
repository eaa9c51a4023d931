import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { EXIT, EXIT_NAMES } from '../../src/exec/errors.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The built CLI as a user runs it. Only invocations that fail validation before any
 * command runs are used here, so nothing touches the machine running the tests.
 */
function cowstack(...args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.COWSTACK_CONFIG;
  delete env.FORCE_COLOR;
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'index.js'), ...args], {
    cwd: ROOT,
    env,
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** stdout must be exactly one JSON document (plus the final newline). */
function onlyJson(stdout: string): Record<string, unknown> {
  expect(stdout.endsWith('}\n')).toBe(true);
  return JSON.parse(stdout) as Record<string, unknown>;
}

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'pipe' });
}, 120_000);

describe('cowstack CLI', () => {
  it('--json on a usage error prints one JSON document with ok:false and exits 2', () => {
    const r = cowstack('--json', 'activate', 'repo/x');
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout)).toEqual({
      ok: false,
      error: 'usage',
      exitCode: 2,
      message: 'say --exclusive or --shared',
      hint: 'exclusive for a writer (a running clone), shared for images and committed clones',
    });
  });

  it('activate without --exclusive/--shared exits 2 with the error on stderr and nothing on stdout', () => {
    const r = cowstack('activate', 'repo/x');
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'cowstack: error: say --exclusive or --shared\n  what to do: exclusive for a writer (a running clone), ' +
        'shared for images and committed clones\n',
    );
  });

  it('activate with both --exclusive and --shared exits 2', () => {
    expect(cowstack('activate', 'repo/x', '--exclusive', '--shared').code).toBe(EXIT.USAGE);
  });

  it('rejects a bad LV name with exit 2, quoting it, before running anything', () => {
    const r = cowstack('--json', 'activate', 'repo/a;b', '--exclusive');
    expect(r.code).toBe(EXIT.USAGE);
    const doc = onlyJson(r.stdout);
    expect(doc).toMatchObject({ ok: false, error: 'usage', exitCode: 2 });
    expect(doc.message).toContain('"a;b"');
  });

  it('--sudo bogus exits 2', () => {
    const r = cowstack('--sudo', 'bogus', 'doctor');
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain("argument 'bogus' is invalid");
  });

  it('--json --sudo bogus still prints one JSON document', () => {
    const r = cowstack('--json', '--sudo', 'bogus', 'doctor');
    expect(r.code).toBe(EXIT.USAGE);
    const doc = onlyJson(r.stdout);
    expect(doc).toMatchObject({ ok: false, error: 'usage', exitCode: 2 });
    expect(doc.message).toContain("'bogus'");
  });

  it.each([
    [['--json', 'catalog', 'sync', 'l.json', '--seed', 'node1'], '--seed goes with --hosts'],
    [['--json', 'catalog', 'sync', 'l.json', '--hosts', 'node1,node2'], '--hosts goes with --replicas'],
    [['--json', 'catalog', 'sync', 'l.json', '--no-web-seed'], '--no-web-seed goes with --replicas'],
    [
      ['--json', 'catalog', 'sync', 'l.json', '--replicas', '--hosts', 'node1,node2', '--seed', 'node1:6881'],
      "--seed node1:6881 is the port of node1's own pull in --hosts",
    ],
  ])('--json %j: pull mode options out of place are refused before anything runs', (args, message) => {
    const r = cowstack(...args);
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout)).toMatchObject({ ok: false, error: 'usage', exitCode: 2, message });
  });

  it.each([
    [['--json', 'no-such-command'], "unknown command 'no-such-command'"],
    [['--json', 'activate'], "missing required argument 'vg/lv'"],
    [['--json', 'activate', 'repo/x', '--exclusiv'], "unknown option '--exclusiv'\n(Did you mean --exclusive?)"],
  ])('--json %j: commander usage errors are JSON too', (args, message) => {
    const r = cowstack(...args);
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout)).toEqual({ ok: false, error: 'usage', exitCode: 2, message });
  });

  it.each([
    [['--json', 'clone'], 'a command is missing: the usage is on stderr'],
    [['cache', '--json'], 'a command is missing: the usage is on stderr'],
    [['doctor', '--bogus', '--json'], "unknown option '--bogus'"],
    [['--bogus', '--json', 'doctor'], "unknown option '--bogus'"],
    [['clone', 'create', 'a', '--json'], "required option '--from <parent>' not specified"],
    [['image', 'create', 'a', '--bogus', '--json'], "required option '--size <size>' not specified"],
    [['--json', 'tm', '--bogus', 'monitor', '0'], "unknown option '--bogus'"],
  ])('%j: commander errors with --json anywhere among the options: one JSON document, exit 2', (args, message) => {
    const r = cowstack(...args);
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout)).toEqual({ ok: false, error: 'usage', exitCode: 2, message });
  });

  it('a "--json" among oned\'s TM arguments is data: no JSON, the ERROR: line for oned', () => {
    const r = cowstack('tm', 'monitor', '--json');
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('ERROR: monitor: tm monitor: argument 1 "--json" looks like an option');
    const j = cowstack('--json', 'tm', 'monitor', '--json');
    expect(j.code).toBe(EXIT.USAGE);
    expect(onlyJson(j.stdout)).toMatchObject({
      ok: false,
      error: 'usage',
      message: expect.stringContaining('argument 1 "--json"'),
    });
  });

  it('--help exits 0 and lists the exit-code table', () => {
    const r = cowstack('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: cowstack [options] [command]');
    const table = Object.entries(EXIT).map(
      ([name, code]) => `  ${String(code).padStart(2)}  ${name.toLowerCase().replace(/_/g, '-')}`,
    );
    expect(table).toHaveLength(10);
    expect(r.stdout).toContain(`Exit codes:\n${table.join('\n')}\n`);
    expect(Object.values(EXIT_NAMES)).toEqual([
      'ok',
      'failed',
      'usage',
      'missing',
      'lock-conflict',
      'timeout',
      'refused',
      'not-found',
      'permission',
      'unreachable',
    ]);
  });

  it('completion bash prints the script (what bash sources), nothing else; --json wraps it', () => {
    const r = cowstack('completion', 'bash');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^# bash completion for cowstack/);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('complete -F _cowstack cowstack');
    const j = onlyJson(cowstack('--json', 'completion', 'bash').stdout);
    expect(j).toMatchObject({ ok: true, result: { shell: 'bash', script: r.stdout } });
  });

  it('completion for a shell it cannot complete for is a usage error naming it', () => {
    const r = cowstack('--json', 'completion', 'zsh');
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout).message).toContain("'zsh'");
  });

  it.each([
    [['install'], 'say --node, --server or --frontend'],
    [['install', '--node', '--frontend'], 'say one of --node, --server, --frontend, not --node and --frontend'],
    [['install', '--server', '--remotes', '/srv/remotes'], '--remotes "/srv/remotes" is for --frontend only'],
  ])('%j: install needs exactly one role, before anything runs (exit 2)', (args, message) => {
    const r = cowstack('--json', ...args);
    expect(r.code).toBe(EXIT.USAGE);
    expect(onlyJson(r.stdout)).toMatchObject({ ok: false, error: 'usage', message });
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = cowstack('--version');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });
});
