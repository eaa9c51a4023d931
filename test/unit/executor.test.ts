/**
 * The node session (core/node.ts) and the one executor (core/executor.ts, core/plan.ts): the
 * factory every entry point uses, and the lock-error policy: transient lock manager errors are
 * tried again with the policy's pause and attempts, a refusal becomes a lock conflict (exit 4),
 * anything else is thrown at once.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { createContext } from '../../src/cli/context.js';
import { runGuarded } from '../../src/core/executor.js';
import { nodeSession, session } from '../../src/core/node.js';
import { defaultLockPolicy, withLockRetry, type LockPolicy, type Step } from '../../src/core/plan.js';
import type { TargetSession } from '../../src/core/target.js';
import { CowstackError, EXIT, notFound } from '../../src/exec/errors.js';
import { runTmWithRetry, type TmEnv } from '../../src/tm/actions.js';
import { parseTmArgs } from '../../src/tm/args.js';
import type { Runner } from '../../src/exec/types.js';
import {
  capture,
  conflictStderr,
  deltaDumpArgv,
  leaseDump,
  lvsArgv,
  recorder,
  rejectionOf,
  vgsArgv,
  T1_UUID,
  t1,
} from './support.js';

// SYNTHETIC: the lvmlockd error text seen in the testbed under load (as in plan.test.ts).
const TRANSIENT = {
  kind: 'write' as const,
  exitCode: 5,
  stderr: '  LV repo/t1 lock failed: error -221\n  Failed to lock logical volume repo/t1.\n',
};
// The REAL refusal (lvchange-aey-conflict.stderr) with the LV name changed.
const REFUSED = { kind: 'write' as const, exitCode: 5, stderr: conflictStderr().replace(/repo\/probe/g, 'repo/t1') };

const UUID = T1_UUID;
// SYNTHETIC: `lvs repo/t1`, inactive, with its lock args (the lease's offset).
const T1 = t1();

/** Short pauses, the default numbers of attempts. */
const FAST: LockPolicy = {
  step: { ...defaultLockPolicy.step, pauseMs: 1 },
  action: { ...defaultLockPolicy.action, pauseMs: 1 },
  ownRelease: { ...defaultLockPolicy.ownRelease, pauseMs: 1 },
};

const activateT1: Step = {
  title: 'activate repo/t1 exclusive',
  req: { argv: ['lvchange', '-aey', 'repo/t1'], kind: 'write', root: true },
};

describe('nodeSession', () => {
  it('names the node after the runner and takes the default lock policy', () => {
    const r = recorder();
    const s = nodeSession({ runner: r, vg: 'repo', scope: { devices: ['/dev/sdb'] }, cacheVg: 'fast', dryRun: true });
    expect(s).toMatchObject({ runner: r, vg: 'repo', scope: { devices: ['/dev/sdb'] }, cacheVg: 'fast', dryRun: true });
    expect(s.node).toBe(r.target);
    expect(s.lockPolicy).toBe(defaultLockPolicy);
  });

  it('keeps a policy the caller gives (tests shorten the pauses)', () => {
    expect(nodeSession({ runner: recorder(), vg: 'repo', lockPolicy: FAST }).lockPolicy).toBe(FAST);
  });

  it('makes a session on no VG for the target side', () => {
    const runner = { target: 'server1' } as unknown as Runner;
    const s = session<TargetSession>({ runner, backend: 'lio' });
    expect(s).toEqual({ runner, backend: 'lio', node: 'server1', lockPolicy: defaultLockPolicy });
  });

  it("is what a CLI command's context hands to core, from the config and the global options", () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-session-'));
    const file = path.join(dir, 'cowstack.yaml');
    writeFileSync(
      file,
      'repository:\n  vg: repo\n  devices: [/dev/sdb]\ncache:\n  vg: fast\n  map: [replica]\n  lazySize: 1G\n',
    );
    const program = new Command().option('--config <file>').option('--dry-run').option('--sudo <policy>');
    const cmd = program.command('probe').action(() => undefined);
    program.parse(['--config', file, '--dry-run', '--sudo', 'never', 'probe'], { from: 'user' });
    const ctx = createContext(cmd);
    const s = ctx.op();
    expect(s).toMatchObject({
      runner: ctx.runner,
      node: 'local',
      vg: 'repo',
      scope: { devices: ['/dev/sdb'] },
      dryRun: true,
      cacheVg: 'fast',
      cacheMap: ['replica'],
      cacheLazySize: '1G',
      observer: ctx.progress,
      lockPolicy: defaultLockPolicy,
    });
    expect(ctx.op('other').vg).toBe('other');
  });

  it('documents the default numbers (changing them changes how long an operation can wait)', () => {
    expect(defaultLockPolicy).toEqual({
      step: { attempts: 3, pauseMs: 3_000 },
      action: { attempts: 3, pauseMs: 5_000 },
      ownRelease: { attempts: 4, pauseMs: 5_000 },
    });
  });
});

describe('withLockRetry', () => {
  const transient = () => {
    const e = new CowstackError(EXIT.FAILED, 'lvchange failed');
    Object.assign(e, { stderr: TRANSIENT.stderr });
    return e;
  };
  const conflict = () => new CowstackError(EXIT.LOCK_CONFLICT, 'repo/t1 is locked by another host');

  it('tries a transient lock manager error again, attempts in all, pausing in between', async () => {
    const policy: LockPolicy = { ...FAST, step: { attempts: 3, pauseMs: 30 } };
    let calls = 0;
    const heard: Array<[number, number]> = [];
    const t0 = Date.now();
    const e = await rejectionOf(
      withLockRetry(
        { lockPolicy: policy },
        async () => {
          calls++;
          throw transient();
        },
        { on: 'step', onRetry: (_e, next, attempts) => heard.push([next, attempts]) },
      ),
      EXIT.FAILED,
    );
    expect(e.message).toBe('lvchange failed');
    expect(calls).toBe(3);
    expect(heard).toEqual([
      [2, 3],
      [3, 3],
    ]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
  });

  it('returns what the first attempt that succeeds returns', async () => {
    let calls = 0;
    const v = await withLockRetry(
      { lockPolicy: FAST },
      async () => {
        if (++calls < 3) throw transient();
        return 'done';
      },
      { on: 'action' },
    );
    expect([v, calls]).toEqual(['done', 3]);
  });

  it('does not retry other errors, nor a conflict unless it follows an own release', async () => {
    for (const make of [() => notFound('no such LV'), conflict]) {
      let calls = 0;
      await expect(
        withLockRetry(
          { lockPolicy: FAST },
          async () => {
            calls++;
            throw make();
          },
          { on: 'step' },
        ),
      ).rejects.toBeInstanceOf(CowstackError);
      expect(calls).toBe(1);
    }
  });

  it('asks again after an own release on a lock conflict, ownRelease.attempts in all', async () => {
    let calls = 0;
    await rejectionOf(
      withLockRetry(
        { lockPolicy: FAST },
        async () => {
          calls++;
          throw conflict();
        },
        { on: 'own-release' },
      ),
      EXIT.LOCK_CONFLICT,
    );
    expect(calls).toBe(4);
  });
});

describe('runGuarded', () => {
  it("retries a step's transient lock error per the session's policy and goes on", async () => {
    const r = recorder()
      .expect(['lvchange', '-aey', 'repo/t1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/t1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/t1'], { kind: 'write' });
    const retried: number[] = [];
    const s = nodeSession({
      runner: r,
      vg: 'repo',
      lockPolicy: FAST,
      observer: { retry: (_s, _e, n) => retried.push(n) },
    });
    await runGuarded(s, [activateT1], { vg: 'repo', name: 't1', uuid: UUID });
    r.verify();
    expect(retried).toEqual([1, 2]);
  });

  it('gives up after the policy says so, with the lock manager error', async () => {
    const r = recorder()
      .expect(['lvchange', '-aey', 'repo/t1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/t1'], TRANSIENT);
    const s = nodeSession({ runner: r, vg: 'repo', lockPolicy: { ...FAST, step: { attempts: 2, pauseMs: 1 } } });
    const e = await rejectionOf(runGuarded(s, [activateT1], { vg: 'repo', name: 't1', uuid: UUID }), EXIT.FAILED);
    r.verify();
    expect((e as { stderr?: string }).stderr).toContain('error -221');
  });

  it('maps a refusal to a lock conflict (exit 4) naming the LV and its holder, without retrying', async () => {
    const r = recorder()
      .expect(['lvchange', '-aey', 'repo/t1'], REFUSED)
      .expect(lvsArgv('repo/t1'), { kind: 'read', stdout: T1 })
      .expect(['sanlock', 'direct', 'dump', '/dev/mapper/repo-lvmlock:70254592:1048576'], {
        kind: 'read',
        stdout: leaseDump({ offset: 70254592, vg: 'repo', uuid: UUID, owner: 2, timestamp: 10398, lver: 3 }),
      })
      .expect(vgsArgv('repo'), { kind: 'read', stdout: capture('vgs-repo.json') })
      .expect(deltaDumpArgv('repo'), { kind: 'read', stdout: capture('sanlock-dump-delta.txt') });
    const s = nodeSession({ runner: r, vg: 'repo', lockPolicy: FAST });
    const e = await rejectionOf(
      runGuarded(s, [activateT1], { vg: 'repo', name: 't1', uuid: UUID }),
      EXIT.LOCK_CONFLICT,
    );
    r.verify();
    expect(e.message).toBe('repo/t1 is locked by another host (held by node2, sanlock host_id 2)');
  });

  it('leaves a refusal as it is when the plan names no LV to blame', async () => {
    const r = recorder().expect(['lvchange', '-aey', 'repo/t1'], REFUSED);
    await rejectionOf(runGuarded(nodeSession({ runner: r, vg: 'repo', lockPolicy: FAST }), [activateT1]), EXIT.FAILED);
    r.verify();
  });
});

describe('runTmWithRetry', () => {
  it('runs a TM action again on a transient lock error, saying so, lockPolicy.action attempts in all', async () => {
    const info: string[] = [];
    let runs = 0;
    const runner = {
      target: 'node1',
      run: async () => {
        runs++;
        throw Object.assign(new CowstackError(EXIT.FAILED, 'LV repo/one-7-0 lock failed: error -221'), {
          stderr: TRANSIENT.stderr,
        });
      },
    } as unknown as Runner;
    const env: TmEnv = {
      vg: 'repo',
      scope: {},
      runnerFor: () => runner,
      hosts: [],
      cowPercent: 25,
      chunk: '4K',
      frontends: ['fe'],
      info: (m) => info.push(m),
      out: () => undefined,
      lockPolicy: FAST,
    };
    const req = parseTmArgs('resize', ['node1:/var/lib/one/datastores/0/7/disk.0', '2048', '7', '0'], '');
    await rejectionOf(runTmWithRetry(env, req), EXIT.FAILED);
    expect(info).toEqual([
      'transient lock manager error (LV repo/one-7-0 lock failed: error -221); running the action again (2/3)',
      'transient lock manager error (LV repo/one-7-0 lock failed: error -221); running the action again (3/3)',
    ]);
    expect(runs).toBeGreaterThanOrEqual(3);
  });
});
