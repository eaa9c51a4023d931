/**
 * More than one repository (README "Growing a site: several repositories"): config
 * `repositories` (datastore id -> VG) and its validation, which VG a TM request and a datastore
 * driver request act in, the refusal of an image of another repository, and `image copy`
 * between VGs against the recording runner. SYNTHETIC: LV rows and dm devices come from
 * repoFixtures; the driver arguments have the shapes oned passes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, repositoryVgs, vgOfDatastore, type Config } from '../../src/core/config.js';
import { copyImageToVg, copySteps } from '../../src/core/imageCopy.js';
import { runDs, type DsEnv } from '../../src/ds/actions.js';
import { parseDsArgs } from '../../src/ds/args.js';
import { dsRepository } from '../../src/ds/repository.js';
import { DryRunRunner } from '../../src/exec/dryRunRunner.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import { parseTmArgs } from '../../src/tm/args.js';
import { repositoryOf } from '../../src/tm/repository.js';
import {
  MiB,
  U,
  VG,
  ctxOf,
  expectObserve,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  lvcreateInactive,
  sealArgv,
} from './repoFixtures.js';
import { lvsArgv, lvsJson, recorder, rejectionOf, thrownBy } from './support.js';
import { SHA, rd, script, tm, wr, O, type Step } from './tmFixtures.js';

const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-repos-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** loadConfig of a config file with this text. */
function configOf(text: string): Config {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return loadConfig(file).config;
}

describe('config repositories', () => {
  it('maps datastore ids to VGs; an unmapped datastore and a config without it use repository.vg', () => {
    const c = configOf('repository: { vg: repo }\nrepositories: { 100: repo2, "101": repo2, 0: repo }\n');
    expect(c.repositories).toEqual({ '0': 'repo', '100': 'repo2', '101': 'repo2' });
    expect([vgOfDatastore(c, 101), vgOfDatastore(c, 1), vgOfDatastore(c, 0)]).toEqual(['repo2', 'repo', 'repo']);
    expect(repositoryVgs(c)).toEqual(['repo', 'repo2']);
    const plain = configOf('repository: { vg: repo }\n');
    expect([plain.repositories, vgOfDatastore(plain, 100), repositoryVgs(plain)]).toEqual([{}, 'repo', ['repo']]);
  });

  it.each([
    ['repositories: [repo2]', 'repositories must be a mapping of OpenNebula datastore ids to VG names'],
    ['repositories: { abc: repo2 }', 'repositories: datastore id "abc" is not a number'],
    ['repositories: { "-1": repo2 }', 'repositories: datastore id "-1" is not a number'],
    ['repositories: { "01": repo2 }', 'repositories: datastore id "01" is not a number'],
    ['repositories: { 100: "bad/vg" }', 'repositories.100: '],
    ['repositories: { 100: "-vg" }', 'repositories.100: '],
    ['repositories: { 100: [a, b] }', 'repositories.100 must be a VG name, got ["a","b"]'],
  ])('refuses %s, naming the bad value', (text, message) => {
    const e = thrownBy(() => configOf(`${text}\n`), EXIT.USAGE);
    expect(e.message).toContain(message);
  });
});

describe('the VG of a TM request: its system datastore, from the path', () => {
  const c = configOf('repository: { vg: repo }\nrepositories: { 100: repo2, 101: repo2 }\n');
  const vgOf = (ds: number) => vgOfDatastore(c, ds);
  const D = (ds: number, disk = 0) => `node1:/var/lib/one/datastores/${ds}/7/disk.${disk}`;
  const vgOfReq = (action: string, args: string[], stdin = '') => repositoryOf(parseTmArgs(action, args, stdin), vgOf);

  it('clone and ln: the system datastore in D, not the image datastore oned passes last', () => {
    expect(vgOfReq('clone', ['fe:repo2/one-img-3', D(101), '7', '1'])).toBe('repo2');
    expect(vgOfReq('ln', ['fe:repo/one-img-3', D(0), '7', '100'])).toBe('repo');
  });

  it('actions without a SOURCE: the datastore of their path or argument; activate spans every VG', () => {
    expect(vgOfReq('delete', [D(101), '7', '101'])).toBe('repo2');
    expect(vgOfReq('mkimage', ['64', 'raw', D(101, 1), '7', '101'])).toBe('repo2');
    expect(vgOfReq('snap_create', [D(0), '3', '7', '0'])).toBe('repo');
    expect(vgOfReq('mvds', [D(101), 'fe:repo2/one-img-3', '7', '100'])).toBe('repo2');
    expect(vgOfReq('monitor', ['101'])).toBe('repo2');
    expect(vgOfReq('monitor', ['0'])).toBe('repo');
    expect(vgOfReq('mv', [D(101), 'node2:/var/lib/one/datastores/100/7/disk.0', '7', '101'])).toBe('repo2');
    expect(vgOfReq('restore', ['node1:/var/lib/one//datastores/101/7', '7', '5', '-1', '-1'])).toBe('repo2');
    expect(vgOfReq('activate', ['node1'])).toBeUndefined();
  });

  it('a move between system datastores of two repositories is refused before anything runs', () => {
    const e = thrownBy(
      () => vgOfReq('mv', [D(0), 'node2:/var/lib/one/datastores/101/7/disk.0', '7', '0']),
      EXIT.REFUSED,
    );
    expect(e.message).toBe(
      'tm mv of VM 7 from datastore 0 (VG repo) to datastore 101 (VG repo2) would move its disks between repositories',
    );
  });

  it("clone of another repository's image is refused, saying how to copy it; nothing runs", async () => {
    const r = recorder('node1');
    const args = ['fe:repo2/one-img-3', 'node1:/var/lib/one/datastores/0/7/disk.0', '7', '100'];
    const e = await rejectionOf(tm('clone', args, { node1: r }), EXIT.USAGE);
    expect(e.message).toBe(
      'image SOURCE repo2/one-img-3 is not in VG vg, the repository of system datastore 0 that VM 7 is deployed on',
    );
    expect(e.hint).toContain('cowstack image copy one-img-3 --vg repo2 --to-vg vg');
  });
});

/** The datastore driver action (base64) for image `id` in datastore `ds`. */
const dsXml = (ds: number, image: string, id = 7) =>
  Buffer.from(
    `<DS_DRIVER_ACTION_DATA><IMAGE><ID>${id}</ID>${image}</IMAGE>` +
      `<DATASTORE><ID>${ds}</ID><TEMPLATE><BRIDGE_LIST>node1</BRIDGE_LIST></TEMPLATE></DATASTORE>` +
      '</DS_DRIVER_ACTION_DATA>',
  ).toString('base64');

describe('the VG of a datastore driver request', () => {
  const c = configOf('repository: { vg: repo }\nrepositories: { 100: repo2 }\n');
  const vgOfDs = (action: string, ds: number, image: string) => {
    const req = parseDsArgs(action, ['7'], dsXml(ds, image));
    return dsRepository(req, vgOfDatastore(c, req.ds.id), repositoryVgs(c));
  };

  it('cp, mkfs and clone make the image in the VG of DATASTORE/ID', () => {
    expect(vgOfDs('cp', 100, '<PATH>/srv/img.raw</PATH>')).toBe('repo2');
    expect(vgOfDs('cp', 1, '<PATH>/srv/img.raw</PATH>')).toBe('repo');
    expect(vgOfDs('mkfs', 100, '<SIZE>8</SIZE><FORMAT>raw</FORMAT>')).toBe('repo2');
    expect(vgOfDs('clone', 100, '<PATH>repo/one-img-3</PATH>')).toBe('repo2');
  });

  it("rm and export act where the SOURCE is, when that is a configured repository; else the datastore's", () => {
    expect(vgOfDs('rm', 100, '<SOURCE>repo/one-img-7</SOURCE>')).toBe('repo');
    expect(vgOfDs('export', 1, '<SOURCE>repo2/one-img-7</SOURCE>')).toBe('repo2');
    expect(vgOfDs('rm', 100, '<SOURCE>other/one-img-7</SOURCE>')).toBe('repo2');
  });
});

// ---- image copy -----------------------------------------------------------------------------------

describe('image copy between repository VGs', () => {
  const VG2 = 'vg2';
  const SIZE = 1536 * MiB; // two copy ranges: 1 GiB and 512 MiB
  const MARK = `cowstack_copied_from:${U.image}`;
  const DIRECT = ['iflag=direct', 'oflag=direct', 'conv=fsync,notrunc', 'status=none'];
  const FROM = '/dev/mapper/vg-img';
  const to = (lv: string) => `/dev/mapper/vg2-${lv.replace(/-/g, '--')}`;
  const source = (active?: 'shared') => imageRow('img', U.image, { sha: SHA, size: SIZE, active, minor: 3 });
  const copyRow = (state: 'initializing' | 'sealed', lv = 'img') => ({
    ...imageRow(lv, U.img2, { sha: state === 'sealed' ? SHA : undefined, size: SIZE, state, vg: VG2 }),
    lv_tags: [
      'cowstack_role:image',
      `cowstack_state:${state}`,
      ...(state === 'sealed' ? [`cowstack_sha256:${SHA}`] : []),
      MARK,
    ],
  });
  /** dd of blocks [at, at + n) of 4 MiB, each at its place. */
  const range = (at: number, n: number, lv = 'img') =>
    ['dd', `if=${FROM}`, `of=${to(lv)}`, 'bs=4M', `skip=${at}`, `seek=${at}`, `count=${n}`].concat(DIRECT);
  /** Another image already in the target VG (an empty VG is checked with vgs as well). */
  const base = imageRow('base', U.c1, { vg: VG2 });
  /** Both observations: the source VG, then the target VG. */
  const observeBoth = (r: RecordingRunner, target: Array<Record<string, unknown>>) => {
    expectObserve(r, [source()]);
    expectObserve(r, [base, ...target], [], VG2);
  };
  /** From the source's shared activation to the copy's checksum (answered with `sha`). */
  const copyUpToChecksum = (sha: string, lv = 'img'): Step[] => [
    wr(['lvchange', '-asy', 'vg/img']),
    wr(journalBegin(lv, 'flatten', VG2)),
    wr(lvcreateInactive(lv, SIZE, ['cowstack_role:image', 'cowstack_state:initializing', MARK], VG2)),
    wr(['lvchange', '-aey', `vg2/${lv}`]),
    wr(range(0, 256, lv)),
    wr(range(256, 128, lv)),
    rd(['sha256sum', to(lv)], { stdout: `${sha}  ${to(lv)}\n` }),
  ];
  /** The source released again: the activation this copy made. */
  const releaseSource: Step[] = [O, wr(['lvchange', '-an', 'vg/img'])];
  const released = { rows: [source('shared')], devs: [lvDev('img', U.image, 3, 0, true)] };

  /** A whole copy into vg2/`lv`: observations, copy, seal, re-read, the source released. */
  const copyAll = (r: RecordingRunner, lv: string) => {
    observeBoth(r, []);
    script(r, [released], [...copyUpToChecksum(SHA, lv), wr(sealArgv(`vg2/${lv}`, 'initializing', SHA))]);
    script(r, [released], [wr(['lvchange', '-an', `vg2/${lv}`]), wr(journalEnd(lv, 'flatten', VG2))]);
    r.expect(lvsArgv(`vg2/${lv}`), { kind: 'read', stdout: lvsJson([copyRow('sealed', lv)]) });
    return script(r, [released], releaseSource);
  };

  it('streams the sealed image in 1 GiB ranges, checks its sha256, seals it, releases the source', async () => {
    const r = copyAll(recorder('node1'), 'img');
    const res = await copyImageToVg(ctxOf(r), ctxOf(r, { vg: VG2 }), 'img');
    r.verify();
    expect(res).toEqual({
      name: 'img',
      image: 'img',
      vg: VG2,
      fromVg: VG,
      uuid: U.img2,
      sizeBytes: SIZE,
      sha256: SHA,
      action: 'copied',
    });
  });

  it('again: the copy is found by its marker and nothing runs', async () => {
    const r = recorder('node1');
    observeBoth(r, [copyRow('sealed')]);
    const res = await copyImageToVg(ctxOf(r), ctxOf(r, { vg: VG2 }), 'img');
    r.verify();
    expect(res).toMatchObject({ action: 'none', vg: VG2, fromVg: VG, sha256: SHA });
  });

  it('a copy that reads another checksum is removed, never sealed, and the copy fails', async () => {
    const r = recorder('node1');
    observeBoth(r, []);
    const other = 'b'.repeat(64);
    const undo: Step[] = [
      wr(['lvchange', '-an', 'vg2/img']),
      wr(['lvremove', '-y', 'vg2/img']),
      wr(journalEnd('img', 'flatten', VG2)),
    ];
    script(r, [released], [...copyUpToChecksum(other), ...undo, ...releaseSource]);
    const e = await rejectionOf(copyImageToVg(ctxOf(r), ctxOf(r, { vg: VG2 }), 'img'), EXIT.FAILED);
    r.verify();
    expect(e.message).toBe(`vg2/img read sha256 ${other} after the copy, not ${SHA}: removed it`);
  });

  it('refuses an unsealed source, a half-made copy, a catalogue image, the same VG: nothing changes', async () => {
    const writable = recorder('node1');
    expectObserve(writable, [imageRow('img', U.image, { state: 'writable' })]);
    const w = await rejectionOf(copyImageToVg(ctxOf(writable), ctxOf(writable, { vg: VG2 }), 'img'), EXIT.REFUSED);
    expect(w.message).toBe('vg/img is writable; only a sealed image has stable content to copy');
    const half = recorder('node1');
    observeBoth(half, [copyRow('initializing')]);
    const h = await rejectionOf(copyImageToVg(ctxOf(half), ctxOf(half, { vg: VG2 }), 'img'), EXIT.REFUSED);
    expect(h.hint).toContain('cowstack recover --vg vg2');
    const listed = recorder('node1');
    const tags = ['cowstack_catalog:site:debian:12.5'];
    expectObserve(listed, [imageRow('img', U.image, { sha: SHA, tags })]);
    const c = await rejectionOf(copyImageToVg(ctxOf(listed), ctxOf(listed, { vg: VG2 }), 'img'), EXIT.REFUSED);
    expect([c.message, c.hint]).toEqual([
      'vg/img is catalogue image debian@12.5 of list site: its endorsement and approval do not follow a copy',
      'import it into vg2 from the signed list: cowstack catalog sync LIST --vg vg2',
    ]);
    const same = recorder('node1');
    await rejectionOf(copyImageToVg(ctxOf(same), ctxOf(same), 'img'), EXIT.USAGE);
    for (const x of [writable, half, listed, same]) x.verify();
  });

  it('--dry-run plans the exact commands and changes nothing (the reads run)', async () => {
    const inner = recorder('node1');
    observeBoth(inner, []);
    const dry = new DryRunRunner(inner);
    await copyImageToVg(ctxOf(dry, { dryRun: true }), ctxOf(dry, { vg: VG2, dryRun: true }), 'img', 'img');
    inner.verify();
    expect(dry.planned.map((p) => p.argv)).toEqual([
      ['lvchange', '-asy', 'vg/img'],
      journalBegin('img', 'flatten', VG2),
      lvcreateInactive('img', SIZE, ['cowstack_role:image', 'cowstack_state:initializing', MARK], VG2),
      ['lvchange', '-aey', 'vg2/img'],
      range(0, 256),
      range(256, 128),
      sealArgv('vg2/img', 'initializing', ''),
      ['lvchange', '-an', 'vg2/img'],
      journalEnd('img', 'flatten', VG2),
    ]);
  });

  it("ds clone onto a datastore of another repository copies the image across, under both VGs' locks", async () => {
    const r = copyAll(recorder('node1'), 'one-img-9');
    const out: string[] = [];
    const locks: Array<string | undefined> = [];
    const env: DsEnv = {
      vg: VG2,
      scope: {},
      runnerFor: () => r,
      hosts: [],
      repositories: [VG, VG2],
      locked: (_host, _change, fn, also) => (locks.push(also), fn()),
      info: () => {},
      out: (t) => out.push(t),
    };
    await runDs(env, parseDsArgs('clone', ['9'], dsXml(101, '<PATH>vg/img</PATH>', 9)));
    r.verify();
    expect([out.join(''), locks]).toEqual(['vg2/one-img-9 raw\n', [VG]]);
  });

  it('copySteps: one dd per 1 GiB range, the last one short, titled with the progress', () => {
    const steps = copySteps('/dev/a', '/dev/b', 2560 * MiB + 4 * MiB, 'copy');
    expect(steps.map((s) => s.req.argv.filter((a) => /^(skip|count)=/.test(a)))).toEqual([
      ['skip=0', 'count=256'],
      ['skip=256', 'count=256'],
      ['skip=512', 'count=129'],
    ]);
    expect(steps.map((s) => s.title)).toEqual([
      'copy (1 GiB of 2.5 GiB)',
      'copy (2 GiB of 2.5 GiB)',
      'copy (2.5 GiB of 2.5 GiB)',
    ]);
  });
});
