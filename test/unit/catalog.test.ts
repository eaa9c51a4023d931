/**
 * The catalogue's effects, against the recording runner: what `catalog sync` runs for a
 * verified list (the node state, the approvals, a streamed import sealed only when its
 * sha512 matches, and nothing left when it does not), approve/revoke as VG tags, and the
 * clone gate. The lists are the real-minisign fixtures (test/fixtures/minisign-0.11).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { approve, revoke } from '../../src/core/catalog/approval.js';
import { parsePublicKey } from '../../src/core/catalog/minisign.js';
import { catalogStatus } from '../../src/core/catalog/status.js';
import { syncCatalog } from '../../src/core/catalog/sync.js';
import { createClone } from '../../src/core/clones.js';
import { nodeSession } from '../../src/core/node.js';
import { EXIT } from '../../src/exec/errors.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  MiB,
  U,
  VG,
  expectObserve,
  expectObserveRepo,
  imageRow,
  journalBegin,
  journalEnd,
  lvcreateArgv,
  markLiveArgv,
  markLiveLog,
  newImageLv,
  sealArgv,
  R,
  W,
  ctxOf,
  expectCache,
  replicaRow,
  REPLICA_SHA,
} from './repoFixtures.js';
import { ddInput, recorder, rejectionOf, vgsArgv, vgsJson } from './support.js';

const DIR = new URL('../fixtures/minisign-0.11/', import.meta.url).pathname;
const KEY = parsePublicKey(readFileSync(path.join(DIR, 'test.pub'), 'utf8'));
const GOOD = JSON.parse(readFileSync(path.join(DIR, 'good.json'), 'utf8')) as {
  images: Array<{ sha512: string; sha256: string }>;
};
const STATE = '/var/lib/cowstack/catalog/fixture-site.json';
const LV = 'tiny-1.0';
const UNTIL = Date.parse('2099-01-01T00:00:00Z') / 1000;
const ORIGIN = ['cowstack_catalog:fixture-site:tiny:1.0', `cowstack_sha512:${GOOD.images[0]!.sha512}`];
/** A hand-imported image: the repository is not empty (observe reads vgs only for an empty one). */
const BASE = imageRow('base', U.image);

/** `vgs vg` with these tags (SYNTHETIC, in lvm2 2.03.16's json shape). */
const vgTags = (r: RecordingRunner, tags: string[]) =>
  r.expect(vgsArgv(VG), { kind: 'read', stdout: vgsJson([{ vg_name: VG, vg_lock_type: 'sanlock', vg_tags: tags }]) });
const stateRead = (r: RecordingRunner, version?: number) =>
  r.expect(['cat', '--', STATE], {
    kind: 'read',
    ...(version === undefined
      ? { exitCode: 1, stderr: `cat: ${STATE}: No such file or directory` }
      : { stdout: JSON.stringify({ id: 'fixture-site', version, list: { images: [] } }) }),
  });
const stateWrite = (r: RecordingRunner) => r.expect(['install', '-D', '-m', '0644', '/proc/self/fd/0', STATE], W);

const DD = [
  'dd',
  `of=/dev/mapper/vg-tiny--1.0`,
  'bs=4M',
  'iflag=fullblock',
  'oflag=direct',
  'conv=fsync',
  'status=none',
];
const expectWrite = (r: RecordingRunner) =>
  r
    .expect(journalBegin(LV, 'import'), W)
    .expect(newImageLv(LV, 4 * MiB), W)
    .expect(['lvchange', '-aey', `vg/${LV}`], W)
    .expect(DD, W);

describe('catalog sync', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-catalog-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts the list, skips what is not approved, and imports nothing then', async () => {
    const r = stateRead(recorder());
    stateWrite(r);
    expectObserve(r, [BASE]);
    vgTags(r, []);
    const { result, error } = await syncCatalog(ctxOf(r), { source: path.join(DIR, 'good.json'), key: KEY });
    expect(error).toBeUndefined();
    expect(result.list).toEqual({
      id: 'fixture-site',
      version: 5,
      expires: '2099-01-01T00:00:00Z',
      endorser: 'cowstack test endorser',
      previous: undefined,
    });
    expect(result.images).toEqual([{ name: 'tiny', version: '1.0', lv: LV, approved: false, action: 'not-approved' }]);
    const saved = JSON.parse(String(r.calls[1]!.input));
    expect(saved).toMatchObject({ id: 'fixture-site', version: 5, keyId: KEY.keyId, list: { id: 'fixture-site' } });
    expect(r.calls[1]).toMatchObject({ root: true, kind: 'write' });
    r.verify();
  });

  it('refuses (6) a list older than the one this node accepted, before changing anything', async () => {
    const r = stateRead(recorder(), 7);
    const e = await rejectionOf(syncCatalog(ctxOf(r), { source: path.join(DIR, 'good.json'), key: KEY }), EXIT.REFUSED);
    expect(e.message).toMatch(/is version 5, older than version 7 accepted before: refusing a rollback/);
    r.verify();
  });

  it('streams an approved image through gunzip into the LV and seals it with the list sha512 and sha256', async () => {
    const r = stateRead(recorder(), 5);
    stateWrite(r);
    expectObserve(r, [BASE]);
    vgTags(r, ['cowstack_approved:tiny:1.0']);
    expectWrite(r)
      .expect(
        sealArgv(`vg/${LV}`, 'initializing', GOOD.images[0]!.sha256, [...ORIGIN, `cowstack_endorsed:${UNTIL}`]),
        W,
      )
      .expect(['lvchange', '-an', `vg/${LV}`], W)
      .expect(journalEnd(LV, 'import'), W);
    const progress: number[] = [];
    const done = syncCatalog(ctxOf(r), {
      source: path.join(DIR, 'good.json'),
      key: KEY,
      onProgress: (_what, n) => progress.push(n),
    });
    const written = await ddInput(r);
    const { result, error } = await done;
    expect(error).toBeUndefined();
    const raw = gunzipSync(readFileSync(path.join(DIR, 'tiny.raw.gz')));
    expect(written.length).toBe(4 * MiB);
    expect(written.subarray(0, MiB).equals(raw), 'the raw disk first').toBe(true);
    expect(written.subarray(MiB).equals(Buffer.alloc(3 * MiB)), 'then zeros to the extent').toBe(true);
    expect(result.images[0]).toMatchObject({
      lv: LV,
      approved: true,
      action: 'imported',
      sha256: GOOD.images[0]!.sha256,
    });
    expect(progress.at(-1)).toBe(MiB);
    r.verify();
  });

  it('never seals an image whose bytes do not match the sha512: the LV is removed again (6)', async () => {
    // The signed list as published, beside an image file that changed after signing.
    for (const f of ['good.json', 'good.json.minisig']) copyFileSync(path.join(DIR, f), path.join(dir, f));
    const raw = gunzipSync(readFileSync(path.join(DIR, 'tiny.raw.gz')));
    raw[1000] = raw[1000]! ^ 1;
    writeFileSync(path.join(dir, 'tiny.raw.gz'), gzipSync(raw));
    const r = stateRead(recorder(), 5);
    stateWrite(r);
    expectObserve(r, [BASE]);
    vgTags(r, ['cowstack_approved:tiny:1.0']);
    expectWrite(r)
      .expect(['lvchange', '-an', `vg/${LV}`], W)
      .expect(['lvremove', '-y', `vg/${LV}`], W)
      .expect(journalEnd(LV, 'import'), W);
    const done = syncCatalog(ctxOf(r), { source: path.join(dir, 'good.json'), key: KEY });
    await ddInput(r);
    const { result, error } = await done;
    expect(error?.exitCode).toBe(EXIT.REFUSED);
    expect(result.images[0]).toMatchObject({ action: 'failed' });
    expect(result.images[0]!.error).toMatch(
      /^tiny@1.0 from list fixture-site was not imported: its bytes do not match the list's sha512/,
    );
    expect(r.calls.some((c) => c.argv.includes('cowstack_state:sealed'))).toBe(false);
    r.verify();
  });

  it('stops a source longer than the list says at the list size, and seals nothing', async () => {
    writeFileSync(path.join(dir, 'tiny.raw.gz'), gzipSync(Buffer.alloc(2 * MiB, 1)));
    const r = stateRead(recorder(), 5);
    stateWrite(r);
    expectObserve(r, [BASE]);
    vgTags(r, ['cowstack_approved:tiny:1.0']);
    expectWrite(r)
      .expect(['lvchange', '-an', `vg/${LV}`], W)
      .expect(['lvremove', '-y', `vg/${LV}`], W)
      .expect(journalEnd(LV, 'import'), W);
    const done = syncCatalog(ctxOf(r), { source: path.join(dir, 'good.json'), key: KEY });
    // The stream dd reads ends in an error at the list's size: no byte beyond it was passed on.
    await expect(ddInput(r)).rejects.toThrow("more than the list's 1048576 bytes");
    const { result } = await done;
    expect(result.images[0]!.error).toMatch(/its source failed: more than the list's 1048576 bytes/);
    r.verify();
  });

  it('under --dry-run reads, plans the state write, and imports nothing', async () => {
    const r = stateRead(recorder(), 5);
    expectObserve(r, [BASE]);
    vgTags(r, ['cowstack_approved:tiny:1.0']);
    const dry = new DryRunRunner(r);
    const ctx = nodeSession({ runner: dry, vg: VG, dryRun: true });
    const { result, error } = await syncCatalog(ctx, { source: path.join(DIR, 'good.json'), key: KEY });
    expect(error).toBeUndefined();
    expect(result.images[0]).toMatchObject({ lv: LV, approved: true, action: 'would-import' });
    expect(dry.planned.map((p) => p.argv)).toEqual([['install', '-D', '-m', '0644', '/proc/self/fd/0', STATE]]);
    r.verify();
  });

  it('keeps a present image, renews nothing that is current, and prunes a revoked one nothing depends on', async () => {
    const present = imageRow(LV, U.img2, { size: 4 * MiB, tags: [...ORIGIN, `cowstack_endorsed:${UNTIL}`] });
    const r = stateRead(recorder(), 5);
    stateWrite(r);
    expectObserve(r, [present]);
    vgTags(r, []);
    r.expect(['lvremove', '-y', `vg/${LV}`], W);
    const { result } = await syncCatalog(ctxOf(r), { source: path.join(DIR, 'good.json'), key: KEY });
    expect(result.images[0]).toMatchObject({ action: 'present', approved: false });
    expect(result.pruned).toEqual([{ lv: LV, why: 'not-approved', action: 'removed' }]);
    expect(result.endorsementUpdates).toEqual([]);
    r.verify();
  });
});

describe('catalog approve / revoke', () => {
  const accepted = (r: RecordingRunner) =>
    r
      .expect(['ls', '-1', '-A', '--', '/var/lib/cowstack/catalog'], { kind: 'read', stdout: 'fixture-site.json\n' })
      .expect(['cat', '--', STATE], {
        kind: 'read',
        stdout: JSON.stringify({
          id: 'fixture-site',
          version: 5,
          list: JSON.parse(readFileSync(path.join(DIR, 'good.json'), 'utf8')),
        }),
      });

  it('approves the one endorsed version of NAME as a tag on the repository VG; again is a no-op', async () => {
    const r = vgTags(accepted(recorder()), []);
    r.expect(['vgchange', '--addtag', 'cowstack_approved:tiny:1.0', VG], W);
    expect(await approve(ctxOf(r), ['tiny'])).toEqual([{ name: 'tiny', versions: ['1.0'], action: 'approved' }]);
    const again = vgTags(accepted(recorder()), ['cowstack_approved:tiny:1.0']);
    expect((await approve(ctxOf(again), ['tiny@1.0']))[0]!.action).toBe('none');
    r.verify();
    again.verify();
  });

  it('refuses (7) to approve what no accepted list endorses, and (2) a malformed name', async () => {
    const r = accepted(recorder());
    const e = await rejectionOf(approve(ctxOf(r), ['tiny', 'tiny@2.0']), EXIT.NOT_FOUND);
    expect(e.message).toBe('tiny@2.0 is in no current list this node accepted');
    await rejectionOf(approve(ctxOf(recorder()), ['tiny', 'tiny@1@2']), EXIT.USAGE);
    r.verify();
  });

  it('revokes every approved version of each NAME, in one VG change', async () => {
    const r = vgTags(recorder(), ['cowstack_host:1:node1', 'cowstack_approved:tiny:1.0', 'cowstack_approved:tiny:0.9']);
    r.expect(['vgchange', '--deltag', 'cowstack_approved:tiny:1.0', '--deltag', 'cowstack_approved:tiny:0.9', VG], W);
    expect(await revoke(ctxOf(r), ['tiny', 'gone'])).toEqual([
      { name: 'tiny', versions: ['1.0', '0.9'], action: 'revoked' },
      { name: 'gone', versions: [], action: 'none' },
    ]);
    r.verify();
  });

  it('lists endorsed, approved, present and clonable', async () => {
    const present = imageRow(LV, U.img2, { size: 4 * MiB, tags: [...ORIGIN, `cowstack_endorsed:${UNTIL}`] });
    const r = vgTags(accepted(recorder()), ['cowstack_approved:tiny:1.0', 'cowstack_approved:other:2']);
    expectObserve(r, [present]);
    expectCache(r, []);
    const s = await catalogStatus(ctxOf(r));
    expect(s.lists).toEqual([expect.objectContaining({ id: 'fixture-site', version: 5, expired: false, images: 1 })]);
    expect(s.images).toEqual([
      {
        name: 'other',
        version: '2',
        lv: 'other-2',
        endorsed: false,
        approved: true,
        present: false,
        clonable: false,
        replicated: false,
      },
      expect.objectContaining({
        lv: LV,
        list: 'fixture-site',
        endorsed: true,
        approved: true,
        present: true,
        clonable: true,
        replicated: false,
      }),
    ]);
    r.verify();
  });

  it('says replicated only for a complete replica of this LV with its sha256', async () => {
    const sha = 'cd'.repeat(32);
    const present = imageRow(LV, U.img2, { size: 4 * MiB, sha, tags: [...ORIGIN, `cowstack_endorsed:${UNTIL}`] });
    const listed = async (replicas: Array<Record<string, unknown>>) => {
      const r = vgTags(accepted(recorder()), ['cowstack_approved:tiny:1.0']);
      expectObserve(r, [present]);
      expectCache(r, replicas);
      const row = (await catalogStatus(ctxOf(r))).images.find((i) => i.lv === LV);
      r.verify();
      return row?.replicated;
    };
    expect(await listed([replicaRow({ origin: U.img2, sha })])).toBe(true);
    expect(await listed([replicaRow({ origin: U.img2, sha, state: 'copying', copied: MiB })])).toBe(false);
    expect(await listed([replicaRow({ origin: U.img2, sha: REPLICA_SHA })])).toBe(false);
    expect(await listed([replicaRow({ sha })])).toBe(false); // another LV's
  });
});

describe('clone create from a catalogue image', () => {
  const image = (tags: string[]) => imageRow('image', U.image, { tags: [...ORIGIN, ...tags] });
  const endorsed = `cowstack_endorsed:${UNTIL}`;

  it('refuses (6) one that is endorsed but not approved, before anything is created', async () => {
    const r = vgTags(expectObserveRepo(recorder(), [image([endorsed])]), []);
    const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
    expect(e.message).toBe('catalogue image image (tiny@1.0) is not approved by this site: refusing to clone it');
    expect(e.hint).toBe('cowstack catalog approve tiny@1.0, or --force (logged)');
    r.verify();
  });

  it('refuses (6) one approved whose endorsement expired or was withdrawn', async () => {
    for (const tags of [['cowstack_endorsed:1700000000'], []]) {
      const r = vgTags(expectObserveRepo(recorder(), [image(tags)]), ['cowstack_approved:tiny:1.0']);
      const e = await rejectionOf(createClone(ctxOf(r), { name: 'n1', from: 'image' }), EXIT.REFUSED);
      expect(e.message).toMatch(/is not endorsed by a current list: refusing/);
      r.verify();
    }
  });

  it('clones one endorsed and approved', async () => {
    const r = vgTags(expectObserveRepo(recorder(), [image([endorsed])]), ['cowstack_approved:tiny:1.0']);
    r.expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * MiB, 8), W)
      .expect(markLiveArgv('vg/n1'), { kind: 'write', stdout: markLiveLog('vg/n1', U.n1) })
      .expect(journalEnd('n1', 'create-clone'), W);
    expect(await createClone(ctxOf(r), { name: 'n1', from: 'image' })).toMatchObject({ action: 'created', uuid: U.n1 });
    r.verify();
  });

  it('with --force clones anyway, and logs it to syslog', async () => {
    const r = vgTags(expectObserveRepo(recorder(), [image([])]), []);
    const warning =
      'catalogue image image (tiny@1.0) is not endorsed by a current list and not approved by this site: ' +
      'clone n1 created anyway (--force)';
    r.expect(['logger', '-t', 'cowstack', '-p', 'auth.warning', '--', warning], W)
      .expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * MiB, 8), W)
      .expect(markLiveArgv('vg/n1'), { kind: 'write', stdout: markLiveLog('vg/n1', U.n1) })
      .expect(journalEnd('n1', 'create-clone'), W);
    const res = await createClone(ctxOf(r), { name: 'n1', from: 'image', force: true });
    expect(res).toMatchObject({ action: 'created', warnings: [warning] });
    r.verify();
  });

  it('does not judge a hand-imported image (no catalogue tag): no VG read, as before', async () => {
    const r = expectObserveRepo(recorder(), [imageRow('image', U.image)]);
    r.expect(journalBegin('n1', 'create-clone'), W)
      .expect(lvcreateArgv('n1', U.image, 16 * MiB, 8), W)
      .expect(markLiveArgv('vg/n1'), { kind: 'write', stdout: markLiveLog('vg/n1', U.n1) })
      .expect(journalEnd('n1', 'create-clone'), W);
    expect((await createClone(ctxOf(r), { name: 'n1', from: 'image' })).action).toBe('created');
    expect(R.kind).toBe('read');
    r.verify();
  });
});
