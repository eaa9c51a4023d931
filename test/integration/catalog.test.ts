/**
 * The image catalogue on a real cluster: a list signed by `catalog publish` (with the
 * committed minisign test key) is served over http from the host, synced on node1, and
 * only the approved image is imported; its sealed LV's sha256, read on the node, is the
 * one the list endorsed. A byte flipped in an image after signing is refused and leaves no
 * LV; an older list is refused as a rollback; an unapproved image cannot be cloned, and
 * node2 sees the same approval (a VG tag).
 */
import { promises as fsp } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { clusterCli, cowstack, ROOT } from './cli.js';
import { REPO_VG } from './cluster.js';
import { serveDir } from './serveDir.js';
import { MiB, pattern, sha256 } from './data.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/minisign-0.11');
const KEY = path.join(FIXTURES, 'test.key');
const PUB = path.join(FIXTURES, 'test.pub');
const EXIT_REFUSED = 6;
const run = Date.now().toString(36).slice(-5);
const LIST_ID = `it-${run}`;
const GOOD = `cat${run}`;
const BAD = `bad${run}`;
const RAW = pattern(3 * MiB, 141);
const EXTENT = 4 * MiB;

let tb: Testbed;
let dir: string;
let server: Server;
let base: string;
let node1: string;
let node2: string;

const ok = async (node: string, args: string[]) => {
  const r = await clusterCli(tb, node, args);
  expect(r.exitCode, `${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.json.result;
};

/** `catalog publish` on the host: LIST and LIST.minisig in the served directory. */
async function publish(file: string, version: number): Promise<void> {
  const images = [`${GOOD}@1=${path.join(dir, 'good.raw.gz')}`, `${BAD}@1=${path.join(dir, 'bad.raw')}`];
  const args = ['--json', 'catalog', 'publish', path.join(dir, file), ...images];
  const r = await cowstack(tb, [...args, '--key', KEY, '--id', LIST_ID, '--list-version', String(version)]);
  expect(r.exitCode, r.stdout + r.stderr).toBe(0);
}

beforeAll(async () => {
  tb = await attachMine();
  [node1, node2] = tb.nodes.map((n) => n.name) as [string, string];
  dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-catalog-'));
  await fsp.writeFile(path.join(dir, 'good.raw.gz'), gzipSync(RAW, { level: 1 }));
  await fsp.writeFile(path.join(dir, 'bad.raw'), pattern(MiB, 142));
  await publish('old.json', 1);
  await publish('list.json', 2);
  // Tampered after signing: the list still says what the endorser published.
  const bad = await fsp.readFile(path.join(dir, 'bad.raw'));
  bad[MiB / 2] = bad[MiB / 2]! ^ 0xff;
  await fsp.writeFile(path.join(dir, 'bad.raw'), bad);
  ({ server, base } = await serveDir(dir));
}, 120_000);

// One shell per node (not cowstack calls): what this file made goes, so a later file on the cluster sees none of it.
afterAll(async () => {
  server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
  if (!tb) return;
  const vgTags = [GOOD, BAD].map((n) => `--deltag cowstack_approved:${n}:1`).join(' ');
  await tb.sh(
    node1,
    `vgchange ${vgTags} ${REPO_VG}; lvremove -y ${REPO_VG}/${GOOD}-1; ` +
      `rm -f /var/lib/cowstack/catalog/${LIST_ID}.json`,
  );
});

describe('catalog', () => {
  const syncsApproved =
    "syncs only approved images, verified: the sealed LV has the list's sha256; a tampered one leaves nothing";
  it(syncsApproved, async () => {
    const sync = ['catalog', 'sync', `${base}/list.json`, '--pubkey', PUB];
    const first = await ok(node1, sync);
    expect(first.list).toMatchObject({ id: LIST_ID, version: 2 });
    expect(first.images.map((i: { action: string }) => i.action)).toEqual(['not-approved', 'not-approved']);

    expect(await ok(node1, ['catalog', 'approve', GOOD, `${BAD}@1`])).toEqual([
      { name: GOOD, versions: ['1'], action: 'approved' },
      { name: BAD, versions: ['1'], action: 'approved' },
    ]);
    const second = await clusterCli(tb, node1, sync);
    expect(second.exitCode, second.stdout + second.stderr).toBe(EXIT_REFUSED);
    const [good, bad] = second.json.result.images;
    expect(good).toMatchObject({ lv: `${GOOD}-1`, action: 'imported' });
    expect(bad).toMatchObject({ lv: `${BAD}-1`, action: 'failed' });
    expect(bad.error).toMatch(/sha512/);

    // The image as sealed, read on the node without cowstack: the raw disk zero-padded to an extent.
    const lv = `${REPO_VG}/${GOOD}-1`;
    const expected = sha256(Buffer.concat([RAW, Buffer.alloc(EXTENT - RAW.length)]));
    expect(good.sha256).toBe(expected);
    const read = await tb.sh(
      node1,
      `lvchange -asy ${lv} && sha256sum /dev/${lv}; lvchange -an ${lv}; ` +
        `lvs --noheadings -o lv_name,lv_tags,lv_attr ${REPO_VG}`,
    );
    expect(read.exitCode, read.stderr).toBe(0);
    expect(read.stdout.split(/\s+/).filter(Boolean)[0]).toBe(expected);
    expect(read.stdout).toMatch(new RegExp(`${GOOD}-1 .*cowstack_state:sealed`));
    expect(read.stdout).toMatch(/cowstack_sha512:[0-9a-f]{128}/);
    expect(read.stdout, 'nothing of the tampered image').not.toContain(`${BAD}-1`);
  });

  it('refuses a rolled-back list (verify and sync), on the node that accepted the newer one', async () => {
    for (const cmd of ['verify', 'sync']) {
      const r = await clusterCli(tb, node1, ['catalog', cmd, `${base}/old.json`, '--pubkey', PUB]);
      expect(r.exitCode, r.stdout + r.stderr).toBe(EXIT_REFUSED);
      expect(r.json.message).toMatch(/version 1, older than version 2 .*rollback/);
    }
  });

  it('refuses to clone an unapproved catalogue image; node2 sees the approval as node1 left it', async () => {
    await ok(node1, ['catalog', 'revoke', GOOD]);
    const refused = await clusterCli(tb, node2, ['clone', 'create', `c${run}`, '--from', `${GOOD}-1`]);
    expect(refused.exitCode, refused.stdout + refused.stderr).toBe(EXIT_REFUSED);
    expect(refused.json.message).toMatch(/not approved by this site/);

    await ok(node1, ['catalog', 'approve', `${GOOD}@1`]);
    const status = await ok(node2, ['catalog', 'list']);
    const row = status.images.find((r: { lv: string }) => r.lv === `${GOOD}-1`);
    // clonable: clone create accepts it now (the unit tests run that create).
    expect(row).toMatchObject({ endorsed: true, approved: true, present: true, clonable: true });
  });
});
