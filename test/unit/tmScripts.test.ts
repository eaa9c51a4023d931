/**
 * tm/cowstack/<action>: thin sh wrappers. They must hand oned's arguments to `cowstack tm`
 * byte for byte (no eval, no word splitting), take the datastore id from the right place,
 * refuse a non-numeric one before locking, and hold one flock per datastore.
 * And `cowstack tm` itself: commander must pass cpds's "-1" through as an argument.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TM_ACTIONS } from '../../src/tm/args.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const TM = join(ROOT, 'tm/cowstack');

function fakeCowstack(): { dir: string; bin: string; log: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cowstack-tm-'));
  const bin = join(dir, 'cowstack');
  const log = join(dir, 'argv');
  // Prints each argument on its own line, NUL-free: what cowstack would have received.
  writeFileSync(bin, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${log}'\n`);
  chmodSync(bin, 0o755);
  return { dir, bin, log };
}

const runScript = (action: string, args: string[], env: Record<string, string>) =>
  spawnSync(join(TM, action), args, { encoding: 'utf8', env: { PATH: process.env.PATH!, ...env } });

describe('tm/cowstack scripts', () => {
  it('exist and are executable for every action', () => {
    const files = readdirSync(TM);
    for (const a of TM_ACTIONS) {
      expect(files).toContain(a);
      expect(statSync(join(TM, a)).mode & 0o111, `${a} is executable`).not.toBe(0);
    }
  });

  it('pass hostile arguments through untouched, as one argument each', () => {
    const f = fakeCowstack();
    const args = ['fe:repo/img', "node1:/x y;$(id)'`", '42', '7'];
    const r = runScript('clone', args, { COWSTACK_BIN: f.bin, COWSTACK_TM_LOCK_DIR: f.dir });
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(f.log, 'utf8')).toBe(['tm', '--', 'clone', ...args].join('\n') + '\n');
    expect(readdirSync(f.dir)).toContain('cowstack-ds-7.lock');
  });

  it('monitor takes the datastore id from its first argument', () => {
    const f = fakeCowstack();
    const r = runScript('monitor', ['103'], { COWSTACK_BIN: f.bin, COWSTACK_TM_LOCK_DIR: f.dir });
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(f.dir)).toContain('cowstack-ds-103.lock');
  });

  it.each([['0;id'], ['../x'], [''], ['$(id)']])('refuse datastore id %j before running anything', (ds) => {
    const f = fakeCowstack();
    const r = runScript('delete', ['node1:/var/lib/one/datastores/0/42/', '42', ds], {
      COWSTACK_BIN: f.bin,
      COWSTACK_TM_LOCK_DIR: f.dir,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^ERROR: delete: datastore id/m);
    expect(readdirSync(f.dir).filter((n) => n.endsWith('.lock'))).toEqual([]);
    expect(readdirSync(f.dir)).not.toContain('argv');
  });
});

// Each spawns node with tsx: seconds on a loaded machine, more than vitest's default 5 s.
describe('cowstack tm (the CLI from source)', { timeout: 30_000 }, () => {
  const cli = (args: string[]) =>
    spawnSync('node', ['--import', 'tsx', join(ROOT, 'src/index.ts'), 'tm', ...args], {
      encoding: 'utf8',
      env: { ...process.env, COWSTACK_CONFIG: '/dev/null' },
    });

  it("takes cpds's -1 as the snapshot id and names the bad datastore id", () => {
    const r = cli(['cpds', 'node1:/var/lib/one/datastores/0/42/disk.0', 'fe:repo/x', '-1', '42', 'x']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^ERROR: cpds: datastore id "x" is invalid/m);
    expect(r.stdout).toBe('');
  });

  it('refuses a hostile path with a usage error and an ERROR: line', () => {
    const r = cli(['delete', 'node1:/var/lib/one/datastores/0/42/../../../../etc', '42', '0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /^ERROR: delete: path "node1:\/var\/lib\/one\/datastores\/0\/42\/..\/..\/..\/..\/etc" is invalid/m,
    );
  });
});
