/**
 * Progress lines: plain without colour (listr2 is not needed for them), listr2's logger with
 * colour once loadProgressRenderer() has loaded it (main() does, before any command runs).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createProgress, loadProgressRenderer } from '../../src/cli/progress.js';
import type { Step } from '../../src/core/plan.js';
import type { RunResult } from '../../src/exec/types.js';

const step = { title: 'create repo/c1' } as Step;
const ok: RunResult = { argv: ['true'], exitCode: 0, stdout: '', stderr: '', durationMs: 1 };

function stderrOf(fn: () => void): string {
  const lines: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    lines.push(String(s));
    return true;
  });
  try {
    fn();
  } finally {
    spy.mockRestore();
  }
  return lines.join('');
}

afterEach(() => vi.unstubAllEnvs());

describe('createProgress', () => {
  it('writes plain lines without colour', () => {
    vi.stubEnv('NO_COLOR', '1');
    const p = createProgress({ quiet: false, verbose: true, isTTY: false });
    const out = stderrOf(() => {
      p.start!(step, 0, 2);
      p.done!(step, ok);
      p.failed!(step, new Error('x'));
      p.command('node1', ['lvs', '-o', 'lv_name'], 'read');
    });
    expect(out).toBe(
      '... [1/2] create repo/c1\ndone create repo/c1\nfailed create repo/c1\n- [node1] > lvs -o lv_name\n',
    );
  });

  it("draws with listr2's logger in colour once it is loaded", async () => {
    vi.stubEnv('NO_COLOR', '');
    vi.stubEnv('FORCE_COLOR', '1');
    await loadProgressRenderer(true);
    // listr2 keeps the stream's write method when the logger is made: make it under the spy.
    const out = stderrOf(() => createProgress({ quiet: false, verbose: false, isTTY: true }).done!(step, ok));
    expect(out).toContain('create repo/c1');
    expect(out).not.toMatch(/^done /);
  });

  it('prints nothing with quiet', () => {
    const p = createProgress({ quiet: true, verbose: true, isTTY: false });
    expect(stderrOf(() => p.done!(step, ok))).toBe('');
  });
});
