/**
 * tm/cowstack/<action>: thin sh wrappers. They must hand oned's arguments to `cowstack tm`
 * byte for byte (no eval, no word splitting), take the datastore id from the right place,
 * refuse a non-numeric one before locking, and hold one flock per datastore.
 * And `cowstack tm` itself: commander must pass cpds's "-1" through as an argument.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DS_ACTIONS } from '../../src/ds/args.js';
import { TM_ACTIONS } from '../../src/tm/args.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const TM = join(ROOT, 'tm/cowstack');
const DSD = join(ROOT, 'datastore/cowstack');

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

  it("restore locks the VM directory's system datastore and says where OpenNebula's remotes are", () => {
    const f = fakeCowstack();
    // The fake records the environment it ran with too.
    writeFileSync(
      f.bin,
      `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${f.log}'\n` +
        `echo "$COWSTACK_ONE_REMOTES" >> '${f.log}'\n`,
    );
    const args = ['node2:/var/lib/one//datastores/104/7', '7', '12', '-1', '-1'];
    const r = runScript('restore', args, { COWSTACK_BIN: f.bin, COWSTACK_TM_LOCK_DIR: f.dir });
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(f.dir)).toContain('cowstack-ds-104.lock');
    // Two levels above tm/cowstack/restore, as OpenNebula's own restore finds datastore/<DS_MAD>/ls.
    expect(readFileSync(f.log, 'utf8')).toBe(
      [...['tm', '--', 'restore', ...args], ROOT.replace(/\/$/, '')].join('\n') + '\n',
    );
  });

  it("monitor passes cowstack's output and exit code through; with OpenNebula's scripts it sends the VM lines", () => {
    const f = fakeCowstack();
    const out = 'USED_MB=1\nFREE_MB=2\nTOTAL_MB=3\nVM=[ID=7,MONITOR="QUJD"]\nVM=[ID=8,MONITOR="REVG"]\n';
    // A cowstack that prints a monitor answer, and an OpenNebula whose send_to_monitor records its arguments.
    writeFileSync(f.bin, `#!/bin/sh\ncat > '${f.log}'\nprintf '%s' '${out}'\n`);
    const one = join(f.dir, 'one');
    mkdirSync(join(one, 'lib/sh'), { recursive: true });
    writeFileSync(join(one, 'lib/sh/scripts_common.sh'), `send_to_monitor() { printf '%s|' "$@" > '${one}/sent'; }\n`);
    const env = { COWSTACK_BIN: f.bin, COWSTACK_TM_LOCK_DIR: f.dir };
    const monitor = (extra: Record<string, string>) =>
      spawnSync(join(TM, 'monitor'), ['0'], {
        encoding: 'utf8',
        input: 'PERBVEE+',
        env: { PATH: process.env.PATH!, ...env, ...extra },
      });

    const without = monitor({ ONE_LOCATION: join(f.dir, 'nowhere') });
    expect(without.status, without.stderr).toBe(0);
    expect(without.stdout).toBe(out);
    expect(readFileSync(f.log, 'utf8')).toBe('PERBVEE+'); // the XML reached cowstack
    expect(existsSync(join(one, 'sent'))).toBe(false);

    const withOne = monitor({ ONE_LOCATION: one });
    expect(withOne.stdout).toBe(out);
    const vms = out
      .split('\n')
      .filter((l) => l.startsWith('VM='))
      .join('\n');
    expect(readFileSync(join(one, 'sent'), 'utf8')).toBe(`MONITOR_VM|0|-1|${vms}|`);

    writeFileSync(f.bin, '#!/bin/sh\necho "cowstack: error: x" >&2\nexit 7\n');
    rmSync(join(one, 'sent'));
    const failed = monitor({ ONE_LOCATION: one });
    expect([failed.status, failed.stdout]).toEqual([7, '']);
    expect(existsSync(join(one, 'sent'))).toBe(false);
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

describe('datastore/cowstack scripts', () => {
  it('exist and are executable for every action', () => {
    for (const a of DS_ACTIONS) expect(statSync(join(DSD, a)).mode & 0o111, `${a} is executable`).not.toBe(0);
  });

  it.each([
    ['OpenNebula >= 6.8: ID, the XML on stdin', ['42']],
    ['before 6.8: DRV_ACTION ID', ['PERTX0RSSVZFUl9BQ1RJT05fREFUQS8+', '42']],
    ['hostile words, one argument each', ["--config=x;$(id)'`", '4 2']],
  ])('%s: arguments and stdin reach cowstack ds untouched', (_what, args) => {
    const f = fakeCowstack();
    writeFileSync(f.bin, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${f.log}'\ncat > '${f.log}.in'\n`);
    const r = spawnSync(join(DSD, 'cp'), args, {
      encoding: 'utf8',
      input: 'PERTX0RSSVZFUl9BQ1RJT05fREFUQS8+',
      env: { PATH: process.env.PATH!, COWSTACK_BIN: f.bin },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(f.log, 'utf8')).toBe(['ds', '--', 'cp', ...args].join('\n') + '\n');
    expect(readFileSync(`${f.log}.in`, 'utf8')).toBe('PERTX0RSSVZFUl9BQ1RJT05fREFUQS8+');
  });
});

// Each spawns node with tsx: seconds on a loaded machine, more than vitest's default 5 s.
describe('cowstack tm (the CLI from source)', { timeout: 30_000 }, () => {
  const cli = (args: string[], driver = 'tm', input = '') =>
    spawnSync('node', ['--import', 'tsx', join(ROOT, 'src/index.ts'), driver, ...args], {
      encoding: 'utf8',
      input,
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

  it('cowstack ds takes an option-shaped id as data and refuses it, before reading any config or host', () => {
    const r = cli(['cp', '--config=/etc/shadow'], 'ds', 'PERTX0RSSVZFUl9BQ1RJT05fREFUQS8+');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^ERROR: cp: ds cp: argument 1 "--config=\/etc\/shadow" looks like an option/m);
    expect(r.stdout).toBe('');
  });
});
