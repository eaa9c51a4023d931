/**
 * COW clones on a real kernel, two nodes sharing one iSCSI LUN under lvmlockd + sanlock.
 * Every data check compares the sha256 of a whole device with the sha256 of the bytes the
 * host computed it must hold (image pattern + the writes made through each level).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { DeviceStatus } from '../../src/core/report.js';
import type { PlannedCommand } from '../../src/exec/dryRunRunner.js';
import type { Testbed } from '../testbed/index.js';
import { attachMine } from './testbeds.js';
import { clusterCli, cowstack } from './cli.js';
import { REPO_VG } from './cluster.js';
import { deviceSha, MiB, overlay, pattern, sha256, writeAt } from './data.js';

let tb: Testbed;
const run = Date.now().toString(36).slice(-5);
const n = (s: string) => `${s}-${run}`;
// 16 MiB: every level of the chain, the flatten and each check read it whole under TCG.
const IMG = pattern(16 * MiB, 1);
const IMG_SHA = sha256(IMG);
/** The image the compressed and qcow2 imports carry. */
const SMALL = pattern(4 * MiB, 7);
let work: string;

const cs = (node: string, args: string[], env?: Record<string, string>) => clusterCli(tb, node, args, env);
const ok = async (node: string, args: string[]) => {
  const r = await cs(node, args);
  expect(r.exitCode, `${node}: cowstack ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.json.result;
};

async function imageShaOn(node: string, name: string): Promise<string> {
  await ok(node, ['activate', `${REPO_VG}/${name}`, '--shared']);
  const sha = await deviceSha(tb, node, `/dev/mapper/${REPO_VG}-${name.replace(/-/g, '--')}`);
  await ok(node, ['deactivate', `${REPO_VG}/${name}`]);
  return sha;
}

/** Map a clone, check its whole content, unmap. */
async function checkOn(node: string, clone: string, expected: Buffer): Promise<void> {
  const m = await ok(node, ['clone', 'map', clone]);
  expect(await deviceSha(tb, node, m.device), `${clone} read on ${node}`).toBe(sha256(expected));
  await ok(node, ['clone', 'unmap', clone]);
}

async function ourDevices(node: string): Promise<string[]> {
  const r = await tb.ssh(node, ['dmsetup', 'info', '-c', '--noheadings', '-o', 'name,uuid']);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes('COWSTACK-'))
    .map((l) => l.split(':')[0]!.trim());
}

beforeAll(async () => {
  tb = await attachMine();
  work = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-it-'));
  await fsp.writeFile(path.join(work, 'img.raw'), IMG);
});

const img = n('img');
const expected: Record<string, Buffer> = {};

describe.sequential('images', () => {
  it("imports raw, gzip, zstd and qcow2 sources with the content's checksum", async () => {
    const raw = path.join(work, 'img.raw');
    // The other formats carry a smaller image: every decoder is proven with real bytes, without
    // moving 16 MiB through each (the test's time is the data's way through the emulated guests).
    const small = path.join(work, 'small.raw');
    await fsp.writeFile(small, SMALL);
    await fsp.writeFile(path.join(work, 'small.gz'), gzipSync(SMALL, { level: 1 }));
    await execa('zstd', ['-q', '-f', '-1', small, '-o', path.join(work, 'small.zst')]);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', small, path.join(work, 'small.qcow2')]);
    await execa('xz', ['-q', '-k', '-f', '-1', '-T1', small]);
    await execa('bzip2', ['-q', '-k', '-f', '-1', small]);
    const r = await ok('node1', ['image', 'import', img, raw]);
    expect(r).toMatchObject({
      action: 'imported',
      state: 'sealed',
      sha256: IMG_SHA,
      sourceSha256: IMG_SHA,
      sourceFormat: 'raw',
      sizeBytes: IMG.length,
    });
    // The same file again: done already.
    expect(await ok('node1', ['image', 'import', img, raw])).toMatchObject({
      action: 'none',
      sha256: IMG_SHA,
      sourceSha256: IMG_SHA,
    });
    const formats = [
      ['gz', 'small.gz', 'gzip'],
      ['zst', 'small.zst', 'zstd'],
      ['qcow2', 'small.qcow2', 'qcow2'],
      ['xz', 'small.raw.xz', 'xz'],
      ['bz2', 'small.raw.bz2', 'bzip2'],
    ] as const;
    for (const [fmt, file, format] of formats) {
      const name = n(`img${fmt}`);
      const x = await ok(fmt === 'zst' ? 'node2' : 'node1', ['image', 'import', name, path.join(work, file)]);
      // Two checksums, labelled: the file as given, and the image's content.
      expect(x, fmt).toMatchObject({
        sha256: sha256(SMALL),
        sourceFormat: format,
        sourceSha256: sha256(await fsp.readFile(path.join(work, file))),
      });
      expect((await ok('node2', ['image', 'rm', name])).action).toBe('removed');
    }
    expect(await imageShaOn('node2', img)).toBe(IMG_SHA);
  });

  it('refuses what is not a disk image; a raw file of odd extents gets both checksums', async () => {
    const text = path.join(work, 'notes.txt');
    await fsp.writeFile(text, 'this is not a disk image\n');
    const bad = await cs('node1', ['image', 'import', n('txt'), text]);
    expect(bad.exitCode, bad.stdout).toBe(2);
    expect(bad.json.message).toContain('is 25 bytes, not whole 512-byte sectors');
    await execa('qemu-img', [
      'convert',
      '-f',
      'raw',
      '-O',
      'vmdk',
      path.join(work, 'img.raw'),
      path.join(work, 'img.vmdk'),
    ]);
    const vmdk = await cs('node1', ['image', 'import', n('vmdk'), path.join(work, 'img.vmdk')]);
    expect(vmdk.exitCode, vmdk.stdout).toBe(2);
    expect(vmdk.json).toMatchObject({
      message: expect.stringContaining('is a VMDK disk image'),
      hint: expect.stringContaining('qemu-img convert -f vmdk -O raw'),
    });
    for (const name of [n('txt'), n('vmdk')]) expect((await cs('node1', ['image', 'show', name])).exitCode).toBe(7);
    // 1 MiB + 512 bytes that start like gzip: --format raw takes them as they are, padded to 4 MiB.
    const odd = pattern(MiB + 512, 9);
    odd[0] = 0x1f;
    odd[1] = 0x8b;
    await fsp.writeFile(path.join(work, 'odd.raw'), odd);
    const name = n('odd');
    const x = await ok('node1', ['image', 'import', name, path.join(work, 'odd.raw'), '--format', 'raw']);
    const padded = Buffer.concat([odd, Buffer.alloc(4 * MiB - odd.length)]);
    expect(x).toMatchObject({
      sourceFormat: 'raw',
      sourceSha256: sha256(odd),
      sha256: sha256(padded),
      sizeBytes: 4 * MiB,
    });
    expect(await imageShaOn('node1', name)).toBe(sha256(padded));
    await ok('node1', ['image', 'rm', name]);
  });

  it('lists, shows, renames and exports an image; the export is byte-exact', async () => {
    const list = await ok('node2', ['image', 'list']);
    expect(list).toContainEqual(
      expect.objectContaining({ name: img, state: 'sealed', sizeBytes: IMG.length, sha256: IMG_SHA }),
    );
    const other = n('imgx');
    await ok('node1', ['image', 'import', other, path.join(work, 'img.raw')]);
    expect((await ok('node1', ['image', 'rename', other, n('imgy')])).action).toBe('renamed');
    expect((await ok('node1', ['image', 'rename', other, n('imgy')])).action).toBe('none');
    const shown = await ok('node2', ['image', 'show', n('imgy')]);
    expect(shown).toMatchObject({ name: n('imgy'), state: 'sealed', sha256: IMG_SHA, readOnly: true, clones: [] });
    const out = path.join(work, 'export.raw');
    const exp = await ok('node2', ['image', 'export', n('imgy'), out]);
    expect(exp.action).toBe('exported');
    expect(sha256(await fsp.readFile(out))).toBe(IMG_SHA);
    expect(await ourDevices('node2')).toEqual([]);
    await ok('node1', ['image', 'rm', n('imgy')]);
    expect((await ok('node1', ['image', 'rm', n('imgy')])).action).toBe('none');
  });

  it('--dry-run prints the exact commands of a clone create and creates nothing', async () => {
    const name = n('dry');
    const r = await cs('node1', ['--dry-run', 'clone', 'create', name, '--from', img]);
    expect(r.exitCode, r.stderr).toBe(0);
    const argvs = r.json.dryRun.map((p: PlannedCommand) => p.argv);
    expect(argvs).toContainEqual(
      expect.arrayContaining([
        'lvcreate',
        '-aey',
        '-Zy',
        '--setautoactivation',
        'n',
        '-n',
        name,
        'cowstack_state:initializing',
      ]),
    );
    // Created, held and zeroed by the lvcreate; then marked live and released in one lvchange,
    // whose command log names the new LV's uuid.
    const live = ['-an', '--deltag', 'cowstack_state:initializing', '--addtag', 'cowstack_state:live'];
    const mark = argvs.find((a: string[]) => a[0] === 'lvchange');
    expect(mark.slice(0, 2)).toEqual(['lvchange', '--config']);
    expect(mark[2]).toContain('report_command_log = 1');
    expect(mark.slice(3)).toEqual(['--reportformat', 'json', ...live, `${REPO_VG}/${name}`]);
    expect(argvs.some((a: string[]) => a[0] === 'dd')).toBe(false);
    // The node lock a run takes, and the journal records as lines on its stdin (no file commands).
    expect(argvs[0].slice(0, 1)).toEqual(['flock']);
    const notes = r.json.dryRun.filter((p: PlannedCommand) => !p.argv.length).map((p: PlannedCommand) => p.title);
    expect(notes).toEqual([expect.stringContaining('"rec":"begin"'), expect.stringContaining('"rec":"end"')]);
    expect((await tb.ssh('node1', ['lvs', '--nolocking', `${REPO_VG}/${name}`])).exitCode).not.toBe(0);
    // With --map, as an admin reads it: the map is not "already so", it comes once the COW exists.
    const dryMap = ['--dry-run', 'clone', 'create', name, '--from', img, '--map', '--vg', REPO_VG];
    const human = await cowstack(tb, ['--host', 'node1', ...dryMap]);
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toContain(`${REPO_VG}/${name}: created on ${img}\n${REPO_VG}/${name}: mapped next`);
    expect(human.stdout).not.toContain('already so');
    expect((await tb.ssh('node1', ['lvs', '--nolocking', `${REPO_VG}/${name}`])).exitCode).not.toBe(0);
  });

  it('keeps sealed images read-only in the kernel', async () => {
    await ok('node1', ['activate', `${REPO_VG}/${img}`, '--shared']);
    const dev = `/dev/mapper/${REPO_VG}-${img.replace(/-/g, '--')}`;
    expect((await tb.ssh('node1', ['blockdev', '--getro', dev])).stdout.trim()).toBe('1');
    const w = await tb.ssh('node1', [
      'dd',
      'if=/dev/zero',
      `of=${dev}`,
      'bs=4096',
      'count=1',
      'oflag=direct',
      'status=none',
    ]);
    expect(w.exitCode).not.toBe(0);
    await ok('node1', ['deactivate', `${REPO_VG}/${img}`]);
  });
});

describe.sequential('recursive clones across nodes', () => {
  const c1 = n('c1');
  const c2 = n('c2');
  const c3 = n('c3');

  it('builds a 3-level chain, each level written on alternating nodes and committed', async () => {
    const steps: Array<[string, string, string, number, number]> = [
      [c1, img, 'node1', 1, 11],
      [c2, c1, 'node2', 8, 12],
      [c3, c2, 'node1', 0, 13],
    ];
    let base = IMG;
    for (const [name, from, node, offMiB, seed] of steps) {
      const created = await ok(node === 'node1' ? 'node2' : 'node1', [
        'clone',
        'create',
        name,
        '--from',
        from,
        '--cow-size',
        '16M',
      ]);
      expect(created).toMatchObject({ action: 'created', parent: from, chunkSectors: 8 });
      const m = await ok(node, ['clone', 'map', name]);
      expect(m).toMatchObject({ action: 'mapped', mode: 'rw' });
      expect(m.device).toMatch(/^\/dev\/mapper\/cowstack-rw-[A-Za-z0-9]{32}$/);
      const data = pattern(3 * MiB, seed);
      await writeAt(tb, node, m.device, offMiB, data);
      base = overlay(base, offMiB * MiB, data);
      expected[name] = base;
      expect(await deviceSha(tb, node, m.device)).toBe(sha256(base));
      expect((await ok(node, ['clone', 'commit', name])).action).toBe('committed');
      expect(await ourDevices(node)).toEqual([]);
    }
  });

  it('reads every level back exactly on either node, read-only, and the image never changed', async () => {
    for (const node of ['node1', 'node2']) {
      for (const name of [c1, c2, c3]) {
        const m = await ok(node, ['clone', 'map', name]);
        expect(m.mode).toBe('ro');
        expect(m.device).toMatch(/cowstack-ro-/);
        expect(await deviceSha(tb, node, m.device), `${name} on ${node}`).toBe(sha256(expected[name]!));
        if (name === c3) {
          // One write attempt per node (the top of the chain): each one makes udev probe the device.
          const w = await tb.ssh(node, [
            'dd',
            'if=/dev/zero',
            `of=${m.device}`,
            'bs=4096',
            'count=1',
            'oflag=direct',
            'status=none',
          ]);
          expect(w.exitCode, 'committed clones refuse writes').not.toBe(0);
        }
      }
      for (const name of [c3, c2, c1]) await ok(node, ['clone', 'unmap', name]);
      expect(await ourDevices(node)).toEqual([]);
      expect(await imageShaOn(node, img)).toBe(IMG_SHA);
    }
  });

  it('shows the lineage in tree', async () => {
    const t = await ok('node2', ['tree', img]);
    const root = t[0];
    expect(root).toMatchObject({ name: img, kind: 'image', state: 'sealed', sha256: IMG_SHA });
    expect(root.children[0]).toMatchObject({ name: c1, state: 'committed' });
    expect(root.children[0].children[0]).toMatchObject({ name: c2, state: 'committed' });
    expect(root.children[0].children[0].children[0]).toMatchObject({ name: c3, state: 'committed', children: [] });
  });

  it('is idempotent: create, commit, map and unmap again are no-op successes', async () => {
    expect((await ok('node1', ['clone', 'create', c1, '--from', img])).action).toBe('none');
    expect((await ok('node1', ['clone', 'commit', c1])).action).toBe('none');
    expect((await ok('node1', ['clone', 'map', c2])).action).toBe('mapped');
    expect((await ok('node1', ['clone', 'map', c2])).action).toBe('none');
    expect((await ok('node1', ['clone', 'unmap', c2])).action).toBe('unmapped');
    expect((await ok('node1', ['clone', 'unmap', c2])).action).toBe('none');
  });

  it('refuses to remove parents, and rejects bad input before touching anything', async () => {
    const rmImg = await cs('node1', ['image', 'rm', img]);
    expect(rmImg.exitCode).toBe(6);
    expect(rmImg.json.message).toContain(c1);
    const rmC1 = await cs('node1', ['clone', 'rm', c1]);
    expect(rmC1.exitCode).toBe(6);
    expect(rmC1.json.message).toContain(c2);
    const bad = await cs('node1', ['clone', 'create', 'bad name;x', '--from', img]);
    expect(bad.exitCode).toBe(2);
    expect(bad.json.message).toContain('bad name;x');
    const tiny = await cs('node1', ['clone', 'create', n('tiny'), '--from', img, '--cow-size', '2K']);
    expect(tiny.exitCode).toBe(2);
    expect(tiny.json.message).toMatch(/smaller than the chunk size/);
  });
});

describe.sequential('concurrency and the cluster lock', () => {
  const a = n('a');
  const b = n('b');
  it('two clones of one image written concurrently on two nodes do not interfere', async () => {
    await ok('node1', ['clone', 'create', a, '--from', img, '--cow-size', '8M']);
    // node2 creates and maps b as one operation (clone create --map) while node1 maps a.
    const [ma, mb] = await Promise.all([
      ok('node1', ['clone', 'map', a]),
      ok('node2', ['clone', 'create', b, '--from', img, '--cow-size', '8M', '--map']),
    ]);
    expect(mb).toMatchObject({ created: 'created', action: 'mapped', mode: 'rw', parent: img });
    const pa = pattern(4 * MiB, 21);
    const pb = pattern(4 * MiB, 22);
    await Promise.all([writeAt(tb, 'node1', ma.device, 2, pa), writeAt(tb, 'node2', mb.device, 2, pb)]);
    expected[a] = overlay(IMG, 2 * MiB, pa);
    expected[b] = overlay(IMG, 2 * MiB, pb);
    const [sa, sb] = await Promise.all([deviceSha(tb, 'node1', ma.device), deviceSha(tb, 'node2', mb.device)]);
    expect(sa).toBe(sha256(expected[a]!));
    expect(sb).toBe(sha256(expected[b]!));
  });

  it('a live clone mapped on node1 cannot be mapped on node2; after commit it maps read-only there', async () => {
    const r = await cs('node2', ['clone', 'map', a]);
    expect(r.exitCode).toBe(4);
    expect(r.json.message).toContain(`${REPO_VG}/${a}`);
    expect(r.json.message).toContain('node1');
    expect(await ourDevices('node2')).toHaveLength(1); // only b's device: the refused map left nothing
    await ok('node1', ['clone', 'commit', a]);
    await checkOn('node2', a, expected[a]!);
    expect((await ok('node2', ['clone', 'discard', b])).action).toBe('discarded');
    expect(await ourDevices('node2')).toEqual([]);
    expect(await imageShaOn('node1', img)).toBe(IMG_SHA);
  });

  it('refuses to commit or unmap a clone that is open, naming the holder', async () => {
    const d = n('d');
    await ok('node1', ['clone', 'create', d, '--from', img, '--cow-size', '8M']);
    const m = await ok('node1', ['clone', 'map', d]);
    await tb.sh('node1', `nohup sh -c 'exec 3<${m.device}; exec sleep 120' >/dev/null 2>&1 &`);
    await new Promise((res) => setTimeout(res, 1000));
    for (const verb of ['commit', 'unmap']) {
      const r = await cs('node1', ['clone', verb, d]);
      expect(r.exitCode, verb).toBe(6);
      expect(r.json.message).toMatch(/in use/);
      expect(r.json.message).toMatch(/sleep|pid/);
    }
    await tb.sh('node1', `pkill -f 'sleep 120' || true`);
    await new Promise((res) => setTimeout(res, 1000));
    expect((await ok('node1', ['clone', 'discard', d])).action).toBe('discarded');
  });
});

describe.sequential('COW space', () => {
  it('a too-small COW overflows; status and tree report it and the image is untouched', async () => {
    const o = n('ovf');
    await ok('node1', ['clone', 'create', o, '--from', img, '--cow-size', '4M']);
    const m = await ok('node1', ['clone', 'map', o]);
    const w = await tb.ssh('node1', [
      'dd',
      'if=/dev/urandom',
      `of=${m.device}`,
      'bs=1M',
      'count=8',
      'oflag=direct',
      'status=none',
    ]);
    expect(w.exitCode, 'writes beyond the COW fail').not.toBe(0);
    const st = await ok('node1', ['status']);
    const dev = st.devices.find((x: DeviceStatus) => x.clone === o);
    expect(dev.usage.state).toBe('overflow');
    expect(st.warnings.join('\n')).toContain(o);
    const t = await ok('node1', ['tree', o]);
    expect(t[0].usage.state).toBe('overflow');
    expect((await ok('node1', ['clone', 'discard', o])).action).toBe('discarded');
    expect(await imageShaOn('node2', img)).toBe(IMG_SHA);
  });

  it('grows a live COW while mapped and the data stays exact', async () => {
    const g = n('grow');
    await ok('node1', ['clone', 'create', g, '--from', img, '--cow-size', '4M']);
    const m = await ok('node1', ['clone', 'map', g]);
    const p1 = pattern(2 * MiB, 31);
    await writeAt(tb, 'node1', m.device, 0, p1);
    const grown = await ok('node1', ['clone', 'grow', g, '--cow-size', '24M']);
    expect(grown).toMatchObject({ action: 'grown', cowBytes: 24 * MiB });
    // 2 + 10 MiB of exceptions: three times the COW it was created with.
    const p2 = pattern(10 * MiB, 32);
    await writeAt(tb, 'node1', m.device, 5, p2);
    const st = await ok('node1', ['status']);
    expect(st.devices.find((x: DeviceStatus) => x.clone === g).usage.state).toBe('active');
    expect(await deviceSha(tb, 'node1', m.device)).toBe(sha256(overlay(overlay(IMG, 0, p1), 5 * MiB, p2)));
    await ok('node1', ['clone', 'discard', g]);
  });
});

describe.sequential('flatten', () => {
  it('copies a committed chain into a standalone sealed image', async () => {
    const c3 = n('c3');
    const flat = n('flat');
    const r = await ok('node2', ['clone', 'flatten', c3, '--to', flat]);
    expect(r).toMatchObject({ action: 'flattened', sha256: sha256(expected[c3]!) });
    expect(await imageShaOn('node1', flat)).toBe(sha256(expected[c3]!));
    expect(await ourDevices('node2')).toEqual([]);
    await ok('node1', ['image', 'rm', flat]);
  });
});
