/**
 * Races between nodes on a real kernel (issue 10): commands started at the same instant
 * on both nodes (Promise.all), repeated. A clone committed on node1 while node2 maps it is
 * never mapped writable and its COW never changes after the commit; a same-name create on
 * both nodes gives one clone and a clear answer to the loser; a commit killed while it
 * releases the ancestors leaves nothing behind once recover ran.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { clusterCli, type CliResult } from './cli.js';
import { REPO_VG } from './cluster.js';
import { MiB, pattern, writeAt } from './data.js';

let tb: Testbed;
const run = Date.now().toString(36).slice(-5);
const n = (s: string) => `${s}-${run}`;
const IMG = pattern(16 * MiB, 9);
const img = n('rimg');
const REPS = 3;

const cs = (node: string, args: string[], env?: Record<string, string>) => clusterCli(tb, node, args, env);
const say = (r: CliResult) => `${r.stdout}\n${r.stderr}`;
const ok = async (node: string, args: string[]) => {
  const r = await cs(node, args);
  expect(r.exitCode, `${node}: cowstack ${args.join(' ')}\n${say(r)}`).toBe(0);
  return r.json.result;
};
/** sha256 of an LV active on `node`, read there. */
async function lvSha(node: string, name: string): Promise<string> {
  const r = await tb.ssh(node, ['sha256sum', `/dev/mapper/${REPO_VG}-${name.replace(/-/g, '--')}`], {
    timeoutMs: 120_000,
  });
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout.split(/\s+/)[0]!;
}
/** sha256 of a clone's COW LV as the LUN holds it, read on `node` through a shared activation. */
async function cowSha(node: string, name: string): Promise<string> {
  await ok(node, ['activate', `${REPO_VG}/${name}`, '--shared']);
  const sha = await lvSha(node, name);
  await ok(node, ['deactivate', `${REPO_VG}/${name}`]);
  return sha;
}
async function noWritableOverCommitted(node: string): Promise<void> {
  const st = await ok(node, ['status']);
  expect(
    st.devices.filter((d: { problem?: string }) => d.problem),
    `${node}: ${JSON.stringify(st.devices)}`,
  ).toEqual([]);
}

beforeAll(async () => {
  tb = await attachMine();
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-races-'));
  await fsp.writeFile(path.join(dir, 'img.raw'), IMG);
  await ok('node1', ['image', 'import', img, path.join(dir, 'img.raw')]);
});

describe.sequential('two nodes at the same instant', () => {
  it(`commit on node1 against map on node2 (${REPS} times): never a writable map of a committed clone`, async () => {
    // The clone stands on a committed parent and is mapped (and written) on node1, as a VM
    // disk is before its sync-back: commit then holds the COW from the start and releases it
    // at its end, while node2's map has the parent's layer to build before it asks for the COW.
    const parent = n('rp');
    await ok('node1', ['clone', 'create', parent, '--from', img, '--cow-size', '8M']);
    await ok('node1', ['clone', 'commit', parent]);
    const outcomes: string[] = [];
    for (let i = 0; i < REPS; i++) {
      const repStarted = Date.now();
      const c = n(`rc${i}`);
      await ok('node1', ['clone', 'create', c, '--from', parent, '--cow-size', '8M']);
      const m = await ok('node1', ['clone', 'map', c]);
      await writeAt(tb, 'node1', m.device, 1, pattern(MiB, 60 + i));
      const [commit, map] = await Promise.all([cs('node1', ['clone', 'commit', c]), cs('node2', ['clone', 'map', c])]);
      const mode = map.exitCode === 0 ? map.json.result.mode : `exit ${map.exitCode}`;
      outcomes.push(`commit exit ${commit.exitCode}, map ${mode}`);
      if (commit.exitCode === 0) {
        // node2 either lost (the lock was held, or the clone was committed when it got it) or mapped it read-only.
        const rw = map.exitCode === 0 && map.json.result.mode === 'rw';
        // The COW as the commit left it (node2 holds it exclusively only in the bug: read it there).
        const after = rw ? await lvSha('node2', c) : await cowSha('node1', c);
        // The bug: a write through a writable map lands in the committed COW.
        if (rw) await writeAt(tb, 'node2', map.json.result.device, 2, pattern(MiB, 80 + i));
        if (map.exitCode !== 0) expect.soft([4, 6], say(map)).toContain(map.exitCode);
        else expect.soft(map.json.result.mode, say(map)).toBe('ro');
        if (!rw) await noWritableOverCommitted('node2');
        if (map.exitCode === 0) await ok('node2', ['clone', 'unmap', c]);
        expect(await cowSha('node1', c), 'the committed COW changed after the commit').toBe(after);
      } else {
        // node2 took the COW first: the clone is live, mapped writable there, and commit was refused by the lock.
        expect(commit.exitCode, say(commit)).toBe(4);
        expect(map.exitCode, say(map)).toBe(0);
        expect(map.json.result.mode).toBe('rw');
        await ok('node2', ['clone', 'unmap', c]);
        await ok('node1', ['clone', 'commit', c]);
      }
      await noWritableOverCommitted('node1');
      await ok('node1', ['clone', 'rm', c]);
      // One line per round in the CI log: a round far slower than its ~70 s points at a stall.
      process.stderr.write(
        `[races] round ${i + 1}: ${outcomes[i]} (${((Date.now() - repStarted) / 1000).toFixed(0)} s)\n`,
      );
    }
    console.log(`commit/map race outcomes: ${outcomes.join('; ')}`);
    await ok('node1', ['clone', 'rm', parent]);
  }, 900_000); // ~40 commands on two nodes; under a loaded CI machine one run took over 600 s

  it('a same-name clone create on both nodes: one clone, the loser told clearly (no raw lvcreate error)', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const c = n(`sn${i}`);
      const rs = await Promise.all(
        ['node1', 'node2'].map((node) => cs(node, ['clone', 'create', c, '--from', img, '--cow-size', '8M'])),
      );
      outcomes.push(rs.map((r) => (r.exitCode === 0 ? r.json.result.action : `exit ${r.exitCode}`)).join('/'));
      expect(
        rs.filter((r) => r.exitCode === 0 && r.json.result.action === 'created'),
        rs.map(say).join('\n'),
      ).toHaveLength(1);
      for (const r of rs) {
        if (r.exitCode === 0) continue;
        expect(r.exitCode, say(r)).toBe(6);
        expect(r.json.message).toContain('already exists');
      }
      const t = await ok('node1', ['tree', c]);
      expect(t[0]).toMatchObject({ name: c, state: 'live' });
      await ok('node1', ['clone', 'rm', c]);
    }
    console.log(`same-name create outcomes: ${outcomes.join('; ')}`);
  });
});

describe.sequential('a commit killed while releasing the ancestors', () => {
  it('leaves its journal entry; recover releases the parent device and the shared activations', async () => {
    const p = n('kp');
    const c = n('kc');
    await ok('node1', ['clone', 'create', p, '--from', img, '--cow-size', '8M']);
    await ok('node1', ['clone', 'commit', p]);
    await ok('node1', ['clone', 'create', c, '--from', p, '--cow-size', '8M']);
    await ok('node1', ['clone', 'map', c]);
    // Steps: journal, unmap, mark committed and release the COW, unmap the parent's snapshot, <killed>
    // (before this fix the journal entry was already gone here and nothing released the rest).
    const r = await cs('node1', ['clone', 'commit', c], { COWSTACK_FAULT_AFTER_STEP: '4' });
    expect(r.exitCode, `expected a kill: ${say(r)}`).not.toBe(0);
    expect(r.stdout, 'killed before printing a result').toBe('');
    const rec = await ok('node1', ['recover']);
    expect(rec.actions).toContainEqual(expect.objectContaining({ op: 'commit', name: c, decision: 'finished' }));
    const st = await ok('node1', ['status']);
    expect(st.inFlight).toEqual([]);
    expect(st.devices).toEqual([]);
    expect(st.activeLvs).toEqual([]);
    // Nothing on node1 holds a shared lock any more: node2 can remove the whole chain.
    await ok('node2', ['clone', 'rm', c]);
    await ok('node2', ['clone', 'rm', p]);
  });
});
