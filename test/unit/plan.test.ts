import { describe, expect, it } from 'vitest';
import { defaultLockPolicy, runPlan, type LockPolicy, type Step } from '../../src/core/plan.js';
import { EXIT } from '../../src/exec/errors.js';
import { recorder, rejectionOf } from './support.js';

// SYNTHETIC: the lvmlockd error text is the one seen in the testbed under load
// ("LV repo/k1 lock failed: error -221" / "Failed to lock logical volume repo/k1.", exit 5).
const TRANSIENT = {
  kind: 'write' as const,
  exitCode: 5,
  stderr: '  LV repo/k1 lock failed: error -221\n  Failed to lock logical volume repo/k1.\n',
};
const REFUSED = {
  kind: 'write' as const,
  exitCode: 5,
  stderr: '  LV locked by other host: repo/k1\n  Failed to lock logical volume repo/k1.\n',
};
const step = (argv: string[], undo?: string[][]): Step => ({
  title: argv.join(' '),
  req: { argv, kind: 'write', root: true },
  ...(undo ? { undo: undo.map((u) => ({ argv: u, kind: 'write' as const, root: true })) } : {}),
});

describe('runPlan and transient lock manager errors', () => {
  const FAST: LockPolicy = { ...defaultLockPolicy, step: { ...defaultLockPolicy.step, pauseMs: 1 } };

  it('runs a step again after a lease I/O timeout, and goes on with the plan', async () => {
    const r = recorder()
      .expect(['lvchange', '-aey', 'repo/k1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/k1'], { kind: 'write' })
      .expect(['dmsetup', 'create', 'x'], { kind: 'write' });
    const retried: number[] = [];
    await runPlan(
      r,
      [step(['lvchange', '-aey', 'repo/k1']), step(['dmsetup', 'create', 'x'])],
      {
        retry: (_s, _e, n) => retried.push(n),
      },
      FAST,
    );
    r.verify();
    expect(retried).toEqual([1]);
  });

  it('gives up after the last attempt and undoes what was done', async () => {
    const r = recorder()
      .expect(['lvcreate', 'x'], { kind: 'write' })
      .expect(['lvchange', '-aey', 'repo/k1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/k1'], TRANSIENT)
      .expect(['lvchange', '-aey', 'repo/k1'], TRANSIENT)
      .expect(['lvremove', 'x'], { kind: 'write' });
    const e = await rejectionOf(
      runPlan(r, [step(['lvcreate', 'x'], [['lvremove', 'x']]), step(['lvchange', '-aey', 'repo/k1'])], {}, FAST),
      EXIT.FAILED,
    );
    r.verify();
    expect(`${e.message} ${(e as { stderr?: string }).stderr}`).toContain('error -221');
  });

  it('never retries a refusal by the lock manager (another host holds the lock)', async () => {
    const r = recorder().expect(['lvchange', '-aey', 'repo/k1'], REFUSED);
    const e = await rejectionOf(runPlan(r, [step(['lvchange', '-aey', 'repo/k1'])]), EXIT.FAILED);
    r.verify();
    expect(`${e.message} ${(e as { stderr?: string }).stderr}`).toContain('locked by other host');
  });
});
