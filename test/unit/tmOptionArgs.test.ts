/**
 * Issue 10 item 2: oned's arguments come from VM templates; one shaped like an option
 * (--config=evil.yaml, --dry-run, --help, --vg=other, -h, --version) must reach the TM
 * argument validator as data and be refused there, naming it, for every action and in
 * every position. The whole chain: tm/cowstack/<action> (with a fake cowstack that records
 * its argv) and then that exact argv through the CLI's main() in this process, with the
 * driver itself (runTmWithRetry) replaced by a recorder so nothing can run, and the node
 * locks (withNodeLocks, tested in nodeLock.test.ts) passed through.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const calls = vi.hoisted(() => [] as Array<{ vg: string; req: { action: string } }>);
vi.mock('../../src/tm/actions.js', async (orig) => ({
  ...(await orig<typeof import('../../src/tm/actions.js')>()),
  runTmWithRetry: vi.fn(async (env: { vg: string }, req: { action: string }) => {
    calls.push({ vg: env.vg, req });
  }),
}));

// The node locks the action would take over ssh are not this test's subject: run the action.
vi.mock('../../src/core/nodeLock.js', async (orig) => ({
  ...(await orig<typeof import('../../src/core/nodeLock.js')>()),
  withNodeLocks: vi.fn(async (_nodes: unknown, _vg: string, _opts: unknown, fn: () => Promise<unknown>) => fn()),
}));

const { main } = await import('../../src/cli/main.js');
const { TM_ACTIONS } = await import('../../src/tm/args.js');

const ROOT = new URL('../../', import.meta.url).pathname;
const D = 'node1:/var/lib/one/datastores/0/42/disk.0';
/** A valid argument list per action, as oned passes it. */
const VALID: Record<string, string[]> = {
  clone: ['fe:repo/img', D, '42', '0'],
  ln: ['fe:repo/img', D, '42', '0'],
  mvds: [D, 'fe:repo/img', '42', '0'],
  cpds: [D, 'fe:repo/img', '-1', '42', '0'],
  mv: [D, 'node2:/var/lib/one/datastores/0/42/disk.0', '42', '0'],
  delete: [D, '42', '0'],
  mkimage: ['64', 'raw', D, '42', '0'],
  mkswap: ['64', D, '42', '0'],
  context: ['/etc/hostname', D, '42', '0'],
  resize: [D, '128', '42', '0'],
  premigrate: ['node1', 'node2', '/var/lib/one/datastores/0/42', '42', '0'],
  postmigrate: ['node1', 'node2', '/var/lib/one/datastores/0/42', '42', '0'],
  failmigrate: ['node1', 'node2', '/var/lib/one/datastores/0/42', '42', '0'],
  monitor: ['0'],
  snap_create: [D, '1', '42', '0'],
  snap_create_live: [D, '1', '42', '0'],
  snap_delete: [D, '1', '42', '0'],
  snap_revert: [D, '1', '42', '0'],
  activate: ['node1'],
  prebackup: ['node1:/var/lib/one//datastores/0/42', '0:1', 'one-42', '-', '42', '0'],
  prebackup_live: ['node1:/var/lib/one//datastores/0/42', '0', 'one-42', '7', '42', '0'],
  postbackup: ['node1:/var/lib/one//datastores/0/42', '0:1', 'one-42', '-', '42', '0'],
  postbackup_live: ['node1:/var/lib/one//datastores/0/42', '1', 'one-42', '7', '42', '0'],
  restore: ['node1:/var/lib/one//datastores/0/42', '42', '12', '-1', '-1'],
};
/** The backup actions' job id is "-" for a VM's own backup: that one value, in that one place, is data. */
const BACKUP = /^(pre|post)backup(_live)?$/;
const jobIdDash = (action: string, args: string[]) => BACKUP.test(action) && args.length === 6 && args[3] === '-';
const HOSTILE = ['--config=evil.yaml', '--dry-run', '--help', '--vg=other', '-h', '--version', '--json', '--', '-'];

let dir: string;
let out: string;
let err: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cowstack-tmopt-'));
  out = err = '';
  calls.length = 0;
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  // migrate hooks and monitor read oned's base64 XML on stdin: give them none.
  vi.spyOn(process, 'stdin', 'get').mockImplementation(() => Readable.from([]) as unknown as typeof process.stdin);
  process.env.COWSTACK_CONFIG = '/dev/null';
});
afterEach(() => {
  vi.restoreAllMocks();
  delete process.env.COWSTACK_CONFIG;
  rmSync(dir, { recursive: true, force: true });
});

/** What tm/cowstack/<action> hands to cowstack, or undefined when the script refused first. */
function viaScript(action: string, args: string[]): string[] | undefined {
  const bin = join(dir, 'cowstack');
  const log = join(dir, 'argv');
  rmSync(log, { force: true });
  writeFileSync(bin, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${log}'\n`);
  chmodSync(bin, 0o755);
  const r = spawnSync(join(ROOT, 'tm/cowstack', action), args, {
    encoding: 'utf8',
    env: { PATH: process.env.PATH!, COWSTACK_BIN: bin, COWSTACK_TM_LOCK_DIR: dir },
  });
  if (!existsSync(log)) {
    // Only a non-numeric datastore id stops the script itself.
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/datastore id/);
    return undefined;
  }
  expect(r.status, r.stderr).toBe(0);
  const argv = readFileSync(log, 'utf8').split('\n').slice(0, -1);
  expect(argv).toEqual(['tm', '--', action, ...args]);
  return argv;
}

const cli = (argv: string[]) => main(['node', 'cowstack', ...argv]);

describe('cowstack tm: option-shaped arguments are data, refused by the validator', () => {
  it.each(TM_ACTIONS)(
    '%s: valid arguments reach the driver through the script, directly and after global options',
    async (action) => {
      const args = VALID[action]!;
      const argv = viaScript(action, args)!;
      expect(await cli(argv), err).toBe(0);
      expect(await cli(['tm', action, ...args]), err).toBe(0);
      const cfg = join(dir, 'c.yaml');
      writeFileSync(cfg, 'repository:\n  vg: fromcfg\n');
      expect(await cli(['--verbose', '--config', cfg, '--sudo', 'never', ...argv]), err).toBe(0);
      expect(await cli([`--config=${cfg}`, 'tm', '--vg', 'other', '--', action, ...args]), err).toBe(0);
      expect(calls.map((c) => [c.req.action, c.vg])).toEqual([
        [action, 'cowstack'],
        [action, 'cowstack'],
        [action, 'fromcfg'],
        [action, 'other'],
      ]);
    },
  );

  it.each(TM_ACTIONS)('%s: every option-shaped value, inserted or replacing, in every position', async (action) => {
    const base = VALID[action]!;
    // [args, through the script too]: the script only adds "--" (checked by viaScript), so
    // one value per inserted position goes through it (spawning is slow); all go direct.
    const cases: Array<[string[], boolean]> = [];
    HOSTILE.forEach((h, k) => {
      for (let i = 0; i <= base.length; i++)
        cases.push([[...base.slice(0, i), h, ...base.slice(i)], i % HOSTILE.length === k]);
      for (let i = 0; i < base.length; i++) cases.push([[...base.slice(0, i), h, ...base.slice(i + 1)], false]);
    });
    for (const [args, script] of cases) {
      if (jobIdDash(action, args) && args.filter((a) => HOSTILE.includes(a)).length === 1) continue;
      const at = args.findIndex((a, i) => HOSTILE.includes(a) && !(jobIdDash(action, args) && i === 3));
      const h = args[at]!;
      const pos = at + 1;
      for (const argv of [script ? viaScript(action, args) : undefined, ['tm', action, ...args]]) {
        if (!argv) continue;
        out = err = '';
        const code = await cli(argv);
        const what = `${argv.join(' ')}\n${err}`;
        expect(code, what).toBe(2);
        expect(err, what).toContain(`ERROR: ${action}: tm ${action}: argument ${pos} "${h}" looks like an option`);
        expect(out, what).toBe('');
        expect(calls, what).toEqual([]);
      }
    }
  });

  it('cpds keeps -1 as the snapshot id, but nowhere else', async () => {
    expect(await cli(['tm', 'cpds', D, 'fe:repo/img', '-1', '42', '0']), err).toBe(0);
    expect(calls).toHaveLength(1);
    expect(await cli(['tm', 'cpds', '-1', 'fe:repo/img', '3', '42', '0'])).toBe(2);
    expect(err).toContain('argument 1 "-1" looks like an option');
  });

  it('the backup actions keep "-" as the job id, but nowhere else', async () => {
    const dir42 = 'node1:/var/lib/one/datastores/0/42';
    expect(await cli(['tm', 'prebackup', dir42, '0', 'one-42', '-', '42', '0']), err).toBe(0);
    expect(calls).toHaveLength(1);
    expect(await cli(['tm', 'prebackup', dir42, '0', '-', '3', '42', '0'])).toBe(2);
    expect(err).toContain('argument 3 "-" looks like an option');
    err = '';
    expect(await cli(['tm', 'postbackup', dir42, '0', 'one-42', '-', '-', '42', '0'])).toBe(2);
    expect(err).toContain('argument 4 "-" looks like an option');
  });

  it('tm options go before the action only; an unknown one there is a usage error', async () => {
    expect(await cli(['tm', '--bogus', 'monitor', '0'])).toBe(2);
    expect(err).toContain("unknown option '--bogus'");
    expect(calls).toEqual([]);
  });
});
