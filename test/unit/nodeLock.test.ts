/**
 * The node lock (core/nodeLock.ts, issue 10 item 4): taken through the runner with the
 * exact argv sudoers/cowstack allows, held while the operation runs, released after it
 * also when it fails, never under --dry-run; a waiter that gives up names the holder.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { beginStep, endStep, inFlight, setOperationId } from '../../src/core/journal.js';
import { runPlan } from '../../src/core/plan.js';
import { acquireNodeLock, inVgNameOrder, withNodeLock, withNodeLocks } from '../../src/core/nodeLock.js';
import { CowstackError, EXIT } from '../../src/exec/errors.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import { RecordingRunner } from '../../src/exec/recordingRunner.js';
import type { RunRequest } from '../../src/exec/types.js';
import { hostsToLock } from '../../src/tm/lockHosts.js';
import { parseTmArgs } from '../../src/tm/args.js';
import { rejectionOf } from './support.js';

const J = '/var/lib/cowstack/journal';
const DIR = ['install', '-d', '-m', '0700', J];
const HOLD = (wait = 120, vg = 'repo') => [
  'flock',
  '-w',
  String(wait),
  '-E',
  '75',
  `${J}/${vg}.lock`,
  'tee',
  '-a',
  `${J}/${vg}.log`,
];

afterEach(() => setOperationId(undefined));

/** The log's lines without the newlines the keeper sends after each record (see holdReq). */
const recordsOf = (log: string) => log.split('\n').filter((l) => l !== '');

/** The lock: one keeper, which echoes (and appends to the log) every line written to it. */
const held = (r: RecordingRunner, vg = 'repo') => r.expect(HOLD(120, vg), { echoStdin: true, kind: 'write' });

describe('node lock', () => {
  it('is one command: flock held by a keeper whose stdin is ours, the holder its first record', async () => {
    const r = held(new RecordingRunner()).expect(['dmsetup', 'create', 'x']);
    let log = '';
    const out = await withNodeLock(r, 'repo', { command: 'clone map vm1' }, async () => {
      await r.run({ argv: ['dmsetup', 'create', 'x'], kind: 'write' });
      return 'done';
    });
    expect(out).toBe('done');
    r.verify();
    const hold = r.calls[0]!;
    // The keeper lives as long as the operation: no timeout, its stdin a stream, root through sudo.
    expect(hold).toMatchObject({ root: true, timeoutMs: 0, allowFailure: true });
    expect(hold.stdin).toBeDefined();
    log = r.echoed.get(0) ?? '';
    const holder = JSON.parse(log.split('\n')[0]!);
    expect(holder).toMatchObject({ rec: 'lock', pid: process.pid, command: 'clone map vm1' });
    expect(Date.parse(holder.since)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('--dry-run takes no lock but plans it, and shows each journal record as a line on its stdin', async () => {
    const inner = new RecordingRunner(); // a dry run runs no write: nothing may reach the node
    const dry = new DryRunRunner(inner);
    const begin = beginStep({ op: 'map', vg: 'repo', name: 'c1' });
    await withNodeLock(dry, 'repo', { command: 'clone map c1', dryRun: true }, () =>
      runPlan(dry, [begin, { title: 'create', req: { argv: ['dmsetup', 'create', 'x'], kind: 'write' } }]),
    );
    inner.verify();
    expect(dry.planned.map((p) => p.argv)).toEqual([HOLD(), [], ['dmsetup', 'create', 'x']]);
    expect(dry.planned[1]!.title).toMatch(/^journal record on the lock's stdin: \{"rec":"begin","op":"map"/);
    // The sink goes with the operation: a later plan writes its record by its own command again.
    await runPlan(dry, [begin]);
    expect(dry.planned[3]!.argv[0]).toBe('install');
  });

  it('a fresh node: flock cannot open the lock file (66), the directory is made, then the lock', async () => {
    const r = new RecordingRunner().expect(HOLD(), { exitCode: 66, stderr: 'flock: cannot open lock file' });
    r.expect(DIR, { kind: 'write' });
    // Synchronous before its first record; a file system without the attribute does not stop the node.
    r.expect(['chattr', '+S', '--', J], { kind: 'write', exitCode: 1 });
    held(r);
    const lock = await acquireNodeLock(r, 'repo', { command: 'x' });
    await lock.release();
    r.verify();
  });

  it("closes the keeper's stdin on release, also when the operation fails", async () => {
    const r = held(new RecordingRunner());
    const e = await withNodeLock(r, 'repo', { command: 'clone map vm1' }, async () => {
      throw new CowstackError(EXIT.REFUSED, 'no');
    }).catch((x: unknown) => x);
    expect((e as CowstackError).exitCode).toBe(EXIT.REFUSED);
    const stdin = r.calls[0]!.stdin as NodeJS.ReadableStream & { writableEnded: boolean };
    expect(stdin.writableEnded).toBe(true);
    r.verify();
  });

  it('is not taken under --dry-run', async () => {
    const r = new RecordingRunner();
    expect(await withNodeLock(r, 'repo', { command: 'clone map vm1', dryRun: true }, async () => 7)).toBe(7);
    r.verify();
  });

  it('gives up after the configured wait, naming the holder from the log: pid, host, command, since', async () => {
    const since = '2026-11-30T02:00:00.000Z';
    const holder = { rec: 'lock', pid: 4242, host: 'frontend1', command: 'clone map vm2', since, opId: 'x' };
    const older = { ...holder, pid: 1, command: 'clone map old' };
    const tail = `map","vg":"repo","name":"a"}\n${JSON.stringify(older)}\n${JSON.stringify(holder)}\n`;
    const r = new RecordingRunner('node1')
      .expect(HOLD(5), { exitCode: 75 })
      .expect(['tail', '-c', '65536', '--', `${J}/repo.log`], { stdout: tail });
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
    expect(e.data).toMatchObject({ lock: `${J}/repo.lock`, host: 'node1', waitSeconds: 5 });
    r.verify();
  });

  it('a holder that has not recorded itself yet is still reported as a timeout', async () => {
    const r = new RecordingRunner().expect(HOLD(), { exitCode: 75 });
    r.expect(['tail', '-c', '65536', '--', `${J}/repo.log`], { exitCode: 1 });
    const e = await rejectionOf(acquireNodeLock(r, 'repo', { command: 'x' }), EXIT.TIMEOUT);
    expect(e.message).toContain(`an operation that has not recorded itself in ${J}/repo.log`);
  });

  it("a keeper that fails otherwise (a read-only file system) is a failure with flock's words", async () => {
    const stderr = 'flock: cannot open lock file: Read-only file system\n';
    const r = new RecordingRunner().expect(HOLD(), { exitCode: 71, stderr });
    const e = await rejectionOf(acquireNodeLock(r, 'repo', { command: 'x' }), EXIT.FAILED);
    expect(e.message).toBe(`could not take the node lock ${J}/repo.lock: flock exited with 71: ${stderr.trim()}`);
  });

  it('under the lock, journal records go through the keeper: a plan runs no journal command', async () => {
    const r = held(new RecordingRunner()).expect(['dmsetup', 'create', 'x'], { kind: 'write' });
    const lock = await acquireNodeLock(r, 'repo', { command: 'clone map vm1' });
    const entry = { op: 'map' as const, vg: 'repo', name: 'vm1' };
    await runPlan(r, [
      beginStep(entry),
      { title: 'x', req: { argv: ['dmsetup', 'create', 'x'], kind: 'write' } },
      endStep(entry),
    ]);
    await lock.release();
    r.verify();
    const log = r.echoed.get(0) ?? '';
    const recs = recordsOf(log).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(recs.map((x) => x.rec)).toEqual(['lock', 'begin', 'end']);
    expect(recs[1]).toMatchObject({ op: 'map', vg: 'repo', name: 'vm1', opId: lock.opId });
    // Read back: begun and ended, so nothing is in flight.
    expect(inFlight(`${J}/repo.log`, log)).toEqual([]);
  });

  it('an undone plan ends its entry through the keeper too; a killed one leaves it in flight', async () => {
    const r = held(new RecordingRunner()).expect(['dmsetup', 'create', 'x'], { kind: 'write', exitCode: 1 });
    const lock = await acquireNodeLock(r, 'repo', { command: 'clone map vm1' });
    const entry = { op: 'map' as const, vg: 'repo', name: 'vm1' };
    const step = { title: 'x', req: { argv: ['dmsetup', 'create', 'x'], kind: 'write' as const } };
    await expect(runPlan(r, [beginStep(entry), step, endStep(entry)])).rejects.toThrow();
    await lock.release();
    const log = r.echoed.get(0) ?? '';
    expect(recordsOf(log).map((l) => (JSON.parse(l) as { rec: string }).rec)).toEqual(['lock', 'begin', 'end']);
    const killed = recordsOf(log).slice(0, 2).join('\n');
    expect(inFlight(`${J}/repo.log`, `${killed}\n`)).toMatchObject([{ op: 'map', name: 'vm1', fromLog: true }]);
    // recover ends it by appending to that log; without the lock, by its own tee -a.
    const end = endStep(inFlight(`${J}/repo.log`, `${killed}\n`)[0]!);
    expect(end.req.argv).toEqual(['tee', '-a', `${J}/repo.log`]);
    expect(inFlight(`${J}/repo.log`, `${killed}\n${end.record}`)).toEqual([]);
  });

  it('a record counts as written once tee read the newline sent after its echo (after the log write)', async () => {
    // A keeper whose echoes the test releases one by one: tee echoes what it read, then writes
    // the log, then reads again; only the newline's echo says the record's write returned.
    const echoes: Array<() => void> = [];
    let onStdout: ((c: string) => void) | undefined;
    const sent: string[] = [];
    const runner = {
      target: 'node1',
      run: (req: RunRequest) =>
        new Promise<never>(() => {
          onStdout = req.onStdout;
          (req.stdin as NodeJS.ReadableStream).on('data', (c: Buffer | string) => {
            sent.push(String(c));
            echoes.push(() => onStdout!(String(c)));
          });
        }),
      close: async () => {},
    };
    const tick = () => new Promise((res) => setImmediate(res));
    const lock = acquireNodeLock(runner, 'repo', { command: 'x' });
    let held = false;
    void lock.then(() => (held = true));
    await tick();
    expect(sent).toHaveLength(1); // the holder record, and nothing more before its echo
    echoes.shift()!();
    await tick();
    expect(sent).toEqual([sent[0], '\n']);
    expect(held).toBe(false);
    echoes.shift()!();
    await tick();
    expect(held).toBe(true);
  });

  it('without the lock an entry is a file of its own, and a re-run overwrites what a killed run left', async () => {
    const begin = beginStep({ op: 'map', vg: 'repo', name: 'vm1' });
    const file = `${J}/repo.vm1.map.json`;
    expect(begin.req.argv).toEqual(['install', '-D', '-m', '0600', '/proc/self/fd/0', file]);
    expect(begin.undo![0]!.argv).toEqual(['rm', '-f', '--', file]);
    expect(endStep({ op: 'map', vg: 'repo', name: 'vm1' }).req.argv).toEqual(['rm', '-f', '--', file]);
    // recover: an entry of an earlier release (op id in its file name) goes by the file it came from.
    const old = `${J}/repo.vm1.map.x1.json`;
    const end = endStep({ op: 'map', vg: 'repo', name: 'vm1', file: old });
    expect(end.req.argv).toEqual(['rm', '-f', '--', old]);
    expect(end.record).toBeUndefined();
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
    expect((c.calls[0]!.stdin as unknown as { writableEnded: boolean }).writableEnded).toBe(true);
  });

  it('several VGs on one node: locked in name order whatever order they are given, each once', async () => {
    const r = held(held(new RecordingRunner('node1'), 'alpha'), 'zeta');
    const lockOne = <T>(vg: string, fn: () => Promise<T>) => withNodeLock(r, vg, { command: 'image copy' }, fn);
    expect(await inVgNameOrder(['zeta', 'alpha', 'zeta'], lockOne, async () => 'copied')).toBe('copied');
    r.verify();
    expect(r.calls.map((c) => c.argv.at(-1))).toEqual([`${J}/alpha.log`, `${J}/zeta.log`]);
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
