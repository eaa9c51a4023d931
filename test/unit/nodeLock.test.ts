/**
 * The node lock (core/nodeLock.ts, issue 10 item 4): taken through the runner with the
 * exact argv sudoers/cowstack allows, held while the operation runs, released after it
 * also when it fails, never under --dry-run; a waiter that gives up names the holder.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { beginStep, endStep, setOperationId } from '../../src/core/journal.js';
import { acquireNodeLock, withNodeLock, withNodeLocks } from '../../src/core/nodeLock.js';
import { CowstackError, EXIT } from '../../src/exec/errors.js';
import { RecordingRunner } from '../../src/exec/recordingRunner.js';
import type { RunRequest } from '../../src/exec/types.js';
import { hostsToLock } from '../../src/tm/lockHosts.js';
import { parseTmArgs } from '../../src/tm/args.js';
import { rejectionOf } from './support.js';

const DIR = ['install', '-d', '-m', '0700', '/run/lock/cowstack'];
const HOLD = (wait = 120) => ['flock', '-w', String(wait), '-E', '75', '/run/lock/cowstack/repo.lock', 'cat'];
const HOLDER = ['install', '-m', '0600', '/proc/self/fd/0', '/run/lock/cowstack/repo.holder'];
const HELD = 'cowstack node lock held\n';

afterEach(() => setOperationId(undefined));

/** The recorded requests of the lock, in order (argv checked by the runner). */
const held = (r: RecordingRunner, vg = 'repo') => {
  r.expect(DIR, { kind: 'write' }).expect(HOLD(), { stdout: HELD, kind: 'write' });
  r.expect(
    HOLDER.map((a) => a.replace('repo', vg)),
    { kind: 'write' },
  );
  return r;
};

describe('node lock', () => {
  it('is taken before fn runs and released after it: flock held by a keeper whose stdin is ours', async () => {
    const r = held(new RecordingRunner()).expect(['dmsetup', 'create', 'x']);
    const out = await withNodeLock(r, 'repo', { command: 'clone map vm1' }, async () => {
      await r.run({ argv: ['dmsetup', 'create', 'x'], kind: 'write' });
      return 'done';
    });
    expect(out).toBe('done');
    r.verify();
    const hold = r.calls[1]!;
    // The keeper lives as long as the operation: no timeout, its stdin a stream, root through sudo.
    expect(hold).toMatchObject({ root: true, timeoutMs: 0, allowFailure: true });
    expect(hold.stdin).toBeDefined();
    const holder = JSON.parse(String(r.calls[2]!.input));
    expect(holder).toMatchObject({ pid: process.pid, command: 'clone map vm1' });
    expect(Date.parse(holder.since)).toBeGreaterThan(Date.now() - 60_000);
    expect(r.calls[2]!.root).toBe(true);
  });

  it("closes the keeper's stdin on release, also when the operation fails", async () => {
    const r = held(new RecordingRunner());
    const e = await withNodeLock(r, 'repo', { command: 'clone map vm1' }, async () => {
      throw new CowstackError(EXIT.REFUSED, 'no');
    }).catch((x: unknown) => x);
    expect((e as CowstackError).exitCode).toBe(EXIT.REFUSED);
    const stdin = r.calls[1]!.stdin as NodeJS.ReadableStream & { writableEnded: boolean };
    expect(stdin.writableEnded).toBe(true);
    r.verify();
  });

  it('is not taken under --dry-run', async () => {
    const r = new RecordingRunner();
    expect(await withNodeLock(r, 'repo', { command: 'clone map vm1', dryRun: true }, async () => 7)).toBe(7);
    r.verify();
  });

  it('gives up after the configured wait, naming the holder: pid, host, command, since', async () => {
    const since = '2026-11-30T02:00:00.000Z';
    const holder = { pid: 4242, host: 'frontend1', command: 'clone map vm2', since, opId: 'x' };
    const r = new RecordingRunner('node1')
      .expect(DIR)
      .expect(HOLD(5), { exitCode: 75 })
      .expect(['cat', '--', '/run/lock/cowstack/repo.holder'], { stdout: `${JSON.stringify(holder)}\n` });
    let ran = false;
    const e = await rejectionOf(
      withNodeLock(r, 'repo', { command: 'clone map vm1', waitSeconds: 5 }, async () => {
        ran = true;
      }),
      EXIT.TIMEOUT,
    );
    expect(ran).toBe(false);
    expect(e.message).toBe(
      'another cowstack operation holds the node lock of VG repo on node1: ' +
        'pid 4242 on frontend1 ("cowstack clone map vm2", since 2026-11-30T02:00:00.000Z); gave up after 5s',
    );
    expect(e.data).toMatchObject({ lock: '/run/lock/cowstack/repo.lock', host: 'node1', holder, waitSeconds: 5 });
    r.verify();
  });

  it('a holder that has not recorded itself yet is still reported as a timeout', async () => {
    const r = new RecordingRunner().expect(DIR).expect(HOLD(), { exitCode: 75 });
    r.expect(['cat', '--', '/run/lock/cowstack/repo.holder'], { exitCode: 1 });
    const e = await rejectionOf(acquireNodeLock(r, 'repo', { command: 'x' }), EXIT.TIMEOUT);
    expect(e.message).toContain('an operation that has not recorded itself in /run/lock/cowstack/repo.holder yet');
  });

  it("a keeper that fails otherwise (flock missing the file system) is a failure with flock's words", async () => {
    const stderr = 'flock: cannot open lock file: Read-only file system\n';
    const r = new RecordingRunner().expect(DIR).expect(HOLD(), { exitCode: 71, stderr });
    const e = await rejectionOf(acquireNodeLock(r, 'repo', { command: 'x' }), EXIT.FAILED);
    const lock = '/run/lock/cowstack/repo.lock';
    expect(e.message).toBe(`could not take the node lock ${lock}: flock exited with 71: ${stderr.trim()}`);
  });

  it('records the operation id in the entry; an entry read back is removed by its own file', async () => {
    const r = held(new RecordingRunner());
    const lock = await acquireNodeLock(r, 'repo', { command: 'clone map vm1' });
    const begin = beginStep({ op: 'map', vg: 'repo', name: 'vm1' });
    const file = '/var/lib/cowstack/journal/repo.vm1.map.json';
    expect(begin.req.argv).toEqual(['install', '-D', '-m', '0600', '/proc/self/fd/0', file]);
    expect(JSON.parse(String(begin.req.input))).toMatchObject({ op: 'map', vg: 'repo', name: 'vm1', opId: lock.opId });
    expect(begin.undo![0]!.argv).toEqual(['rm', '-f', '--', file]);
    expect(endStep({ op: 'map', vg: 'repo', name: 'vm1' }).req.argv).toEqual(['rm', '-f', '--', file]);
    // recover: an entry of an earlier release (op id in its file name) goes by the file it came from.
    const old = `/var/lib/cowstack/journal/repo.vm1.map.${lock.opId}.json`;
    expect(endStep({ op: 'map', vg: 'repo', name: 'vm1', file: old }).req.argv).toEqual(['rm', '-f', '--', old]);
    await lock.release();
    await lock.release();
    r.verify();
  });

  // The node lock keeps live operations apart; what a killed run left must be what the re-run
  // of that operation overwrites and closes, or a later recover would undo the re-run's work.
  const rerun = 'a re-run of an operation writes and closes the entry a killed run of it left (ids differ)';
  it(rerun, async () => {
    const files = new Set<string>();
    const ids = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const r = held(new RecordingRunner());
      const lock = await acquireNodeLock(r, 'repo', { command: 'clone map vm1' });
      const begin = beginStep({ op: 'map', vg: 'repo', name: 'vm1' });
      files.add(begin.req.argv.at(-1)!);
      ids.add((JSON.parse(String(begin.req.input)) as { opId: string }).opId);
      await lock.release();
    }
    expect(files).toEqual(new Set(['/var/lib/cowstack/journal/repo.vm1.map.json']));
    expect(ids.size).toBe(2);
  });

  it('several nodes: locked in the order given, released in reverse; an unreachable one may be skipped', async () => {
    const a = held(new RecordingRunner('node1'));
    const unreachable = new CowstackError(EXIT.UNREACHABLE, 'cannot reach host node2 over ssh');
    const b = {
      target: 'node2',
      run: async (_req: RunRequest) => {
        throw unreachable;
      },
      close: async () => {},
    };
    const nodes = [{ runner: a }, { runner: b, unreachableOk: true }];
    expect(await withNodeLocks(nodes, 'repo', { command: 'tm delete' }, async () => 'ok')).toBe('ok');
    a.verify();
    const c = held(new RecordingRunner('node1'));
    const both = withNodeLocks([{ runner: c }, { runner: b }], 'repo', { command: 'tm mv' }, async () => 'ok');
    await expect(both).rejects.toBe(unreachable);
    // The lock already taken on node1 was released.
    expect((c.calls[1]!.stdin as unknown as { writableEnded: boolean }).writableEnded).toBe(true);
  });
});

describe('TM actions lock the nodes they change', () => {
  const fe = ['frontend'];
  it('in name order, without the front-end, none for monitor and the migrate hooks', () => {
    const dir = '/var/lib/one/datastores/0/5';
    const mv = parseTmArgs('mv', [`node2:${dir}/disk.0`, `node1:${dir}/disk.0`, '5', '0']);
    expect(hostsToLock(mv, fe)).toEqual(['node1', 'node2']);
    expect(hostsToLock(parseTmArgs('mv', [`node2:${dir}`, `frontend:${dir}`, '5', '0']), fe)).toEqual(['node2']);
    const clone = parseTmArgs('clone', ['frontend:repo/img', `node1:${dir}/disk.0`, '5', '100']);
    expect(hostsToLock(clone, fe)).toEqual(['node1']);
    expect(hostsToLock(parseTmArgs('delete', [`node2:${dir}`, '5', '0']), fe)).toEqual(['node2']);
    expect(hostsToLock({ action: 'monitor', dsId: 0, xml: '' }, fe)).toEqual([]);
    expect(hostsToLock({ action: 'activate', host: 'node1' }, fe)).toEqual(['node1']);
  });
});
