import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RawOutcome } from '../../src/exec/baseRunner.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import { CommandError, CowstackError, EXIT } from '../../src/exec/errors.js';
import { LocalRunner } from '../../src/exec/localRunner.js';
import type { RunRequest, SudoPolicy } from '../../src/exec/types.js';
import { recorder, rejectionOf } from './support.js';

describe('RecordingRunner fails closed', () => {
  it('answers expected commands in order with the scripted output', async () => {
    const r = recorder()
      .expect(['lvs', 'repo'], { kind: 'read', stdout: 'out', stderr: 'warn' })
      .expect(['lvchange', '-an', 'repo/x'], { kind: 'write' });
    expect(await r.run({ argv: ['lvs', 'repo'], kind: 'read' })).toMatchObject({
      argv: ['lvs', 'repo'],
      exitCode: 0,
      stdout: 'out',
      stderr: 'warn',
    });
    expect(await r.run({ argv: ['lvchange', '-an', 'repo/x'], kind: 'write' })).toMatchObject({
      exitCode: 0,
      stdout: '',
    });
    expect(r.calls.map((c) => c.argv)).toEqual([
      ['lvs', 'repo'],
      ['lvchange', '-an', 'repo/x'],
    ]);
    r.verify();
  });

  it('throws on a command with a different argv, showing both', async () => {
    const r = recorder().expect(['lvchange', '-aey', 'repo/x'], { kind: 'write' });
    await expect(r.run({ argv: ['lvchange', '-ay', 'repo/x'], kind: 'write' })).rejects.toThrow(
      'RecordingRunner: unexpected command\n  got:      ["lvchange","-ay","repo/x"]\n' +
        '  expected: ["lvchange","-aey","repo/x"]',
    );
  });

  it('compares argv element by element (no joining that hides a split word)', async () => {
    const r = recorder().expect(['dmsetup', 'create', 'x', '--table', '0 8 linear /dev/sdb 0'], { kind: 'write' });
    await expect(
      r.run({ argv: ['dmsetup', 'create', 'x', '--table', '0', '8', 'linear', '/dev/sdb', '0'], kind: 'write' }),
    ).rejects.toThrow('unexpected command');
  });

  it('throws on a command with the wrong read/write tag', async () => {
    const r = recorder().expect(['lvchange', '-an', 'repo/x'], { kind: 'write' });
    await expect(r.run({ argv: ['lvchange', '-an', 'repo/x'], kind: 'read' })).rejects.toThrow(
      '["lvchange","-an","repo/x"] was tagged read, expected write',
    );
  });

  it('throws on any command once the script is used up, and with no script at all', async () => {
    const r = recorder();
    await expect(r.run({ argv: ['rm', '-rf', '/'], kind: 'write' })).rejects.toThrow(
      'unexpected command ["rm","-rf","/"] (no more commands expected)',
    );
  });

  it('verify() reports expected commands that never ran', async () => {
    const r = recorder().expect(['lvs'], { kind: 'read' }).expect(['vgs'], { kind: 'read' });
    await r.run({ argv: ['lvs'], kind: 'read' });
    expect(() => r.verify()).toThrow('RecordingRunner: 1 expected command(s) never ran, first: ["vgs"]');
  });

  it('verify() still fails when the code under test swallowed the mismatch', async () => {
    const r = recorder().expect(['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock'], { kind: 'read' });
    await r.run({ argv: ['sanlock', 'client', 'status'], kind: 'read' }).catch(() => undefined);
    expect(() => r.verify()).toThrow('unexpected command');
  });

  it('a scripted non-zero exit throws CommandError unless the request allows failure', async () => {
    const r = recorder()
      .expect(['false'], { kind: 'read', exitCode: 1, stderr: 'nope\n' })
      .expect(['false'], { kind: 'read', exitCode: 1, stderr: 'nope\n' });
    const e = await r.run({ argv: ['false'], kind: 'read' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CommandError);
    expect(e).toMatchObject({ argv: ['false'], commandExitCode: 1, stderr: 'nope\n', exitCode: EXIT.FAILED });
    expect(await r.run({ argv: ['false'], kind: 'read', allowFailure: true })).toMatchObject({
      exitCode: 1,
      stderr: 'nope\n',
    });
    r.verify();
  });
});

describe('DryRunRunner', () => {
  it('runs reads for real and records writes with host, argv, root and title', async () => {
    const inner = recorder('node1').expect(['lvs', 'repo'], { kind: 'read', stdout: '{"report":[]}' });
    const dry = new DryRunRunner(inner);
    expect(dry.target).toBe('node1');
    expect((await dry.run({ argv: ['lvs', 'repo'], kind: 'read', root: true })).stdout).toBe('{"report":[]}');
    const w = await dry.run({
      argv: ['lvchange', '-aey', 'repo/x'],
      kind: 'write',
      root: true,
      title: 'activate repo/x exclusive',
    });
    expect(w).toEqual({
      argv: ['lvchange', '-aey', 'repo/x'],
      exitCode: 0,
      stdout: '',
      stderr: '',
      skipped: true,
      durationMs: 0,
    });
    await dry.run({ argv: ['dmsetup', 'remove', '--retry', 'x'], kind: 'write' });
    expect(dry.planned).toEqual([
      { host: 'node1', argv: ['lvchange', '-aey', 'repo/x'], root: true, title: 'activate repo/x exclusive' },
      { host: 'node1', argv: ['dmsetup', 'remove', '--retry', 'x'], root: false, title: undefined },
    ]);
    // the inner runner saw the read only: a write reaching it would have failed the script
    expect(inner.calls.map((c) => c.argv)).toEqual([['lvs', 'repo']]);
    inner.verify();
  });

  it('passes read failures through', async () => {
    const inner = recorder().expect(['lvs', 'repo/x'], { kind: 'read', exitCode: 5, stderr: 'boom' });
    await expect(new DryRunRunner(inner).run({ argv: ['lvs', 'repo/x'], kind: 'read' })).rejects.toBeInstanceOf(
      CommandError,
    );
    inner.verify();
  });
});

describe('LocalRunner against real programs', () => {
  const local = new LocalRunner('never');

  it('true succeeds', async () => {
    const r = await local.run({ argv: ['true'], kind: 'read' });
    expect(r).toMatchObject({ argv: ['true'], exitCode: 0, stdout: '', stderr: '' });
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('false is a CommandError with argv, exit code and stderr', async () => {
    const e = await rejectionOf(local.run({ argv: ['false'], kind: 'read' }), EXIT.FAILED);
    expect(e).toBeInstanceOf(CommandError);
    expect(e).toMatchObject({ argv: ['false'], commandExitCode: 1, target: 'local' });
    expect(e.message).toBe('false exited with 1');
  });

  it('keeps stderr and the exact exit code of a failing program', async () => {
    const e = (await rejectionOf(
      local.run({ argv: ['sh', '-c', 'echo "  Failed to find logical volume" >&2; exit 5'], kind: 'read' }),
      EXIT.FAILED,
    )) as CommandError;
    expect(e.commandExitCode).toBe(5);
    expect(e.stderr).toBe('  Failed to find logical volume\n');
    expect(e.message).toContain('exited with 5: Failed to find logical volume');
  });

  it('allowFailure returns the result instead', async () => {
    expect(
      await local.run({ argv: ['sh', '-c', 'printf out; exit 3'], kind: 'read', allowFailure: true }),
    ).toMatchObject({ exitCode: 3, stdout: 'out' });
  });

  it('a missing program is MISSING (3) and names the program', async () => {
    const e = await rejectionOf(local.run({ argv: ['cowstack-no-such-program', '--x'], kind: 'read' }), EXIT.MISSING);
    expect(e.message).toBe('program "cowstack-no-such-program" is not installed');
    expect(e.data).toEqual({ argv: ['cowstack-no-such-program', '--x'], host: 'local' });
  });

  it('a command that outlives its timeout is killed and reported as TIMEOUT (5)', async () => {
    const started = Date.now();
    const e = await rejectionOf(local.run({ argv: ['sleep', '30'], kind: 'read', timeoutMs: 200 }), EXIT.TIMEOUT);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(e.message).toBe('sleep 30 did not finish within 0.2s (timeout override)');
  });

  it('runs with LC_ALL=C plus the request environment, and feeds input on stdin', async () => {
    const r = await local.run({
      argv: ['sh', '-c', 'printf "%s|%s|" "$LC_ALL" "$COWSTACK_T"; cat'],
      kind: 'read',
      env: { COWSTACK_T: 'a b' },
      input: 'stdin-data',
    });
    expect(r.stdout).toBe('C|a b|stdin-data');
  });

  const reopened =
    'input can be reopened through /proc/self/fd/0, as install does to write journal entries and configs';
  it(reopened, async () => {
    // Node's stdin "pipe" is a socketpair, which /proc/self/fd/0 cannot reopen (ENXIO): issue 10 item 3.
    const dir = await mkdtemp(join(tmpdir(), 'cowstack-t-'));
    try {
      const file = join(dir, 'sub', 'entry.json');
      await local.run({
        argv: ['install', '-D', '-m', '0600', '/proc/self/fd/0', file],
        kind: 'write',
        input: 'secret\n',
      });
      expect(await readFile(file, 'utf8')).toBe('secret\n');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      // Programs that read fd 0 as a stream (dd, tee) get it from the start too.
      expect((await local.run({ argv: ['dd', 'status=none'], kind: 'read', input: Buffer.from('abc') })).stdout).toBe(
        'abc',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives programs no stdin when there is no input (nothing can block on a terminal)', async () => {
    expect((await local.run({ argv: ['sh', '-c', 'cat; echo done'], kind: 'read' })).stdout).toBe('done\n');
  });
});

/** A BaseRunner whose transport records the final argv instead of spawning. */
class SpyRunner extends LocalRunner {
  readonly spawned: string[][] = [];
  constructor(
    sudo: SudoPolicy,
    private readonly root: boolean,
    private readonly outcome: Partial<RawOutcome> = {},
    onCommand?: (target: string, argv: readonly string[], kind: string) => void,
  ) {
    super(sudo, { onCommand });
  }
  protected override async isRoot(): Promise<boolean> {
    return this.root;
  }
  protected override async spawn(argv: readonly string[], _req: RunRequest, _timeoutMs: number): Promise<RawOutcome> {
    this.spawned.push([...argv]);
    return { exitCode: 0, stdout: '', stderr: '', timedOut: false, notFound: false, ...this.outcome };
  }
}

describe('BaseRunner sudo policy', () => {
  const rootReq: RunRequest = { argv: ['lvchange', '-aey', 'repo/x'], kind: 'write', root: true };
  const plainReq: RunRequest = { argv: ['uname', '-n'], kind: 'read' };

  it.each([
    ['always', false, rootReq, ['sudo', '-n', 'lvchange', '-aey', 'repo/x']],
    ['always', true, rootReq, ['sudo', '-n', 'lvchange', '-aey', 'repo/x']],
    ['always', false, plainReq, ['uname', '-n']],
    ['auto', false, rootReq, ['sudo', '-n', 'lvchange', '-aey', 'repo/x']],
    ['auto', true, rootReq, ['lvchange', '-aey', 'repo/x']],
    ['never', false, rootReq, ['lvchange', '-aey', 'repo/x']],
  ] as const)('sudo=%s, running as root=%s: %j -> %j', async (sudo, isRoot, req, spawned) => {
    const seen: Array<readonly string[]> = [];
    const runner = new SpyRunner(sudo, isRoot, {}, (_t, argv) => seen.push(argv));
    const r = await runner.run(req);
    expect(runner.spawned).toEqual([spawned]);
    expect(seen).toEqual([spawned]); // verbose output shows what really runs
    expect(r.argv).toEqual(req.argv); // results and errors speak of the program, not of sudo
  });

  it('a sudo refusal is PERMISSION (8) with a hint about the sudoers file', async () => {
    const runner = new SpyRunner('always', false, { exitCode: 1, stderr: 'sudo: a password is required\n' });
    const e = await rejectionOf(runner.run(rootReq), EXIT.PERMISSION);
    expect(e.message).toBe('sudo refused to run lvchange: sudo: a password is required');
    expect(e.hint).toContain('sudoers');
  });

  it('the same stderr without sudo in front is an ordinary failure', async () => {
    const runner = new SpyRunner('never', false, { exitCode: 1, stderr: 'sudo: a password is required\n' });
    await rejectionOf(runner.run(rootReq), EXIT.FAILED);
  });

  it('maps transport outcomes: unreachable (9), timed out (5), not found (3)', async () => {
    expect(
      (
        await rejectionOf(
          new SpyRunner('never', true, {
            exitCode: 255,
            unreachable: true,
            stderr: 'ssh: connect to host x port 22: Connection refused',
          }).run(plainReq),
          EXIT.UNREACHABLE,
        )
      ).message,
    ).toBe('cannot reach host local over ssh: ssh: connect to host x port 22: Connection refused');
    expect(
      (
        await rejectionOf(
          new SpyRunner('never', true, { exitCode: 124, timedOut: true }).run({ ...rootReq, timeout: 'change' }),
          EXIT.TIMEOUT,
        )
      ).message,
    ).toBe('lvchange -aey repo/x did not finish within 180s (timeout "change")');
    await rejectionOf(new SpyRunner('never', true, { exitCode: 127, notFound: true }).run(plainReq), EXIT.MISSING);
  });

  it('errors are CowstackErrors that serialise for --json', async () => {
    const e = await new SpyRunner('never', true, { exitCode: 2, stderr: 'x\ny\n' })
      .run(rootReq)
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CowstackError);
    expect((e as CowstackError).toJSON()).toEqual({
      error: 'failed',
      exitCode: 1,
      message: 'lvchange -aey repo/x exited with 2: x | y',
      data: { argv: ['lvchange', '-aey', 'repo/x'], exitCode: 2, stderr: 'x\ny', host: 'local' },
    });
  });
});
