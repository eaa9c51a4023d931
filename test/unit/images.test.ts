import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { detectFormat, prepareSource } from '../../src/core/imageSource.js';
import { createImage, importImage, removeImage, renameImage, sealImage } from '../../src/core/images.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  MiB,
  U,
  VG,
  chainRows,
  cloneRow,
  expectObserve,
  foreignRow,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  newImageLv,
  sealArgv,
  ctxOf,
} from './repoFixtures.js';
import { ddInput, lvsArgv, lvsJson, recorder, rejectionOf } from './support.js';

// SYNTHETIC: LV rows come from repoFixtures; sha256sum, realpath and fuser outputs are hand-written
// in those tools' formats.

const W = { kind: 'write' } as const;
const SHA = '9f2c1b7e4a6d3c5b8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f';

describe('createImage', () => {
  const expectCreate = (r: RecordingRunner, zero: boolean) => {
    r.expect(journalBegin('img2', 'create-image'), W)
      .expect(newImageLv('img2', 12 * MiB), W)
      .expect(['lvchange', '-aey', 'vg/img2'], W);
    if (zero)
      r.expect(
        [
          'dd',
          'if=/dev/zero',
          'of=/dev/mapper/vg-img2',
          'bs=4M',
          'count=3',
          'oflag=direct',
          'conv=fsync',
          'status=none',
        ],
        W,
      );
    return r
      .expect(['lvchange', '-an', 'vg/img2'], W)
      .expect(
        ['lvchange', '--deltag', 'cowstack_state:initializing', '--addtag', 'cowstack_state:writable', 'vg/img2'],
        W,
      )
      .expect(journalEnd('img2', 'create-image'), W)
      .expect(lvsArgv('vg/img2'), {
        kind: 'read',
        stdout: lvsJson([imageRow('img2', U.img2, { state: 'writable', size: 12 * MiB })]),
      });
  };

  const createZeroesAndMarks =
    'creates, zeroes with synchronous direct dd writes and marks the image writable, under a journal entry';
  it(createZeroesAndMarks, async () => {
    const r = expectCreate(expectObserve(recorder(), chainRows()), true);
    expect(await createImage(ctxOf(r), 'img2', '10M')).toEqual({
      name: 'img2',
      vg: VG,
      uuid: U.img2,
      sizeBytes: 12 * MiB,
      state: 'writable',
      action: 'created',
    });
    expect(r.calls[5]).toMatchObject({ root: true, timeout: 'data' }); // the dd
    expect(JSON.parse(String(r.calls[2]!.input))).toMatchObject({ op: 'create-image', vg: VG, name: 'img2' });
    r.verify();
  });

  it('skips the zeroing with zero: false', async () => {
    const r = expectCreate(expectObserve(recorder(), chainRows()), false);
    expect((await createImage(ctxOf(r), 'img2', '12M', { zero: false })).action).toBe('created');
    r.verify();
  });

  it('is idempotent for an existing image', async () => {
    const r = expectObserve(recorder(), [imageRow('img2', U.img2, { state: 'writable', size: 12 * MiB })]);
    expect(await createImage(ctxOf(r), 'img2', '12M')).toEqual({
      name: 'img2',
      vg: VG,
      uuid: U.img2,
      sizeBytes: 12 * MiB,
      state: 'writable',
      action: 'none',
    });
    r.verify();
  });

  it('refuses (6) an image left initializing by an interrupted create', async () => {
    const r = expectObserve(recorder(), [imageRow('img2', U.img2, { state: 'initializing' })]);
    expect((await rejectionOf(createImage(ctxOf(r), 'img2', '12M'), EXIT.REFUSED)).hint).toContain('cowstack recover');
    r.verify();
  });

  it.each([
    [foreignRow('img2'), 'vg/img2 already exists and is not managed by cowstack'],
    [cloneRow('img2', U.img2, U.image), 'vg/img2 already exists (a clone)'],
  ])('refuses (6) a name taken by another LV', async (row, message) => {
    const r = expectObserve(recorder(), [imageRow('image', U.image), row]);
    expect((await rejectionOf(createImage(ctxOf(r), 'img2', '12M'), EXIT.REFUSED)).message).toBe(message);
    r.verify();
  });

  it('refuses (6) an image larger than the VG has free, before the journal entry or any write', async () => {
    const r = expectObserve(recorder(), [{ ...imageRow('image', U.image), vg_free: 8 * MiB, vg_mda_free: 3_000_000 }]);
    const e = await rejectionOf(createImage(ctxOf(r), 'img2', '12M'), EXIT.REFUSED);
    expect(e.message).toBe('vg has 8 MiB free, image img2 needs 12 MiB');
    expect(r.calls.every((c) => c.kind === 'read')).toBe(true);
    r.verify();
  });

  it('rejects (2) a bad size before running anything', async () => {
    const r = recorder();
    await rejectionOf(createImage(ctxOf(r), 'img2', '12Q'), EXIT.USAGE);
    expect(r.calls).toEqual([]);
    r.verify();
  });
});

describe('sealImage', () => {
  const SEAL = sealArgv('vg/image', 'writable', SHA);

  it('holds the image exclusively, records its sha256, makes it read-only and releases it', async () => {
    const r = expectObserve(recorder(), [imageRow('image', U.image, { state: 'writable' })])
      .expect(['lvchange', '-aey', 'vg/image'], W)
      .expect(['sha256sum', '/dev/mapper/vg-image'], { kind: 'read', stdout: `${SHA}  /dev/mapper/vg-image\n` })
      .expect(SEAL, W)
      .expect(['lvchange', '-an', 'vg/image'], W);
    expect(await sealImage(ctxOf(r), 'image')).toEqual({
      name: 'image',
      vg: VG,
      uuid: U.image,
      sha256: SHA,
      state: 'sealed',
      action: 'sealed',
    });
    expect(r.calls[3]).toMatchObject({ root: true, timeout: 'data' }); // the sha256sum
    r.verify();
  });

  it('uses an exclusive activation that is already there', async () => {
    const r = expectObserve(
      recorder(),
      [imageRow('image', U.image, { state: 'writable', active: 'exclusive', minor: 3 })],
      [lvDev('image', U.image, 3, 0)],
    )
      .expect(['sha256sum', '/dev/mapper/vg-image'], { kind: 'read', stdout: `${SHA}  /dev/mapper/vg-image\n` })
      .expect(SEAL, W)
      .expect(['lvchange', '-an', 'vg/image'], W);
    expect((await sealImage(ctxOf(r), 'image')).sha256).toBe(SHA);
    r.verify();
  });

  it('is idempotent for a sealed image', async () => {
    const r = expectObserve(recorder(), [imageRow('image', U.image, { sha: SHA })]);
    expect(await sealImage(ctxOf(r), 'image')).toEqual({
      name: 'image',
      vg: VG,
      uuid: U.image,
      sha256: SHA,
      state: 'sealed',
      action: 'none',
    });
    r.verify();
  });

  it('refuses (6) an image open on this node, naming who holds it', async () => {
    const r = expectObserve(
      recorder(),
      [imageRow('image', U.image, { state: 'writable', active: 'exclusive', open: true, minor: 3 })],
      [lvDev('image', U.image, 3, 1)],
    )
      .expect(['realpath', '-e', '--', '/dev/mapper/vg-image'], { kind: 'read', stdout: '/dev/dm-3\n' })
      .expect(['ls', '-1', '-A', '--', '/sys/class/block/dm-3/holders'], { kind: 'read', stdout: '' })
      .expect(['fuser', '/dev/mapper/vg-image'], { kind: 'read', stdout: '  3101', stderr: '/dev/mapper/vg-image:' })
      .expect(['ps', '-o', 'pid=,user=,comm=', '-p', '3101'], { kind: 'read', stdout: '   3101 root     qemu-img\n' });
    const e = await rejectionOf(sealImage(ctxOf(r), 'image'), EXIT.REFUSED);
    expect(e.message).toBe(
      'vg/image is open on this node (process qemu-img (pid 3101, user root)); refusing to seal it',
    );
    r.verify();
  });

  it('refuses (6) an image active shared here', async () => {
    const r = expectObserve(
      recorder(),
      [imageRow('image', U.image, { state: 'writable', active: 'shared', minor: 3 })],
      [lvDev('image', U.image, 3, 0)],
    );
    expect((await rejectionOf(sealImage(ctxOf(r), 'image'), EXIT.REFUSED)).message).toBe(
      'vg/image is active shared on this node',
    );
    r.verify();
  });

  it('refuses (6) an initializing image and rejects (2) a clone', async () => {
    const r = expectObserve(recorder(), [imageRow('image', U.image, { state: 'initializing' })]);
    expect((await rejectionOf(sealImage(ctxOf(r), 'image'), EXIT.REFUSED)).hint).toContain('cowstack recover');
    expectObserve(r, chainRows());
    await rejectionOf(sealImage(ctxOf(r), 'c1'), EXIT.USAGE);
    r.verify();
  });
});

describe('removeImage', () => {
  it('refuses (6) an image with clones', async () => {
    const r = expectObserve(recorder(), [...chainRows(), cloneRow('d1', U.d1, U.image)]);
    const e = await rejectionOf(removeImage(ctxOf(r), 'image'), EXIT.REFUSED);
    expect(e.message).toBe('image vg/image has 2 clone(s): c1, d1');
    expect(e.data).toEqual({ children: ['c1', 'd1'] });
    r.verify();
  });

  it('removes an inactive image', async () => {
    const r = expectObserve(recorder(), [imageRow('img2', U.img2)]).expect(['lvremove', '-y', 'vg/img2'], W);
    expect(await removeImage(ctxOf(r), 'img2')).toEqual({ name: 'img2', vg: VG, uuid: U.img2, action: 'removed' });
    r.verify();
  });

  it('deactivates an active, unopened image first', async () => {
    const r = expectObserve(
      recorder(),
      [imageRow('img2', U.img2, { active: 'shared', minor: 3 })],
      [lvDev('img2', U.img2, 3, 0, true)],
    )
      .expect(['lvchange', '-an', 'vg/img2'], W)
      .expect(['lvremove', '-y', 'vg/img2'], W);
    expect((await removeImage(ctxOf(r), 'img2')).action).toBe('removed');
    r.verify();
  });

  it('refuses (6) an image open here', async () => {
    const r = expectObserve(
      recorder(),
      [imageRow('img2', U.img2, { active: 'shared', open: true, minor: 3 })],
      [lvDev('img2', U.img2, 3, 1, true)],
    );
    expect((await rejectionOf(removeImage(ctxOf(r), 'img2'), EXIT.REFUSED)).message).toBe(
      'image vg/img2 is open on this node',
    );
    r.verify();
  });

  it('is a no-op for an image that does not exist, and rejects (2) a clone', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect(await removeImage(ctxOf(r), 'gone')).toEqual({ name: 'gone', vg: VG, action: 'none' });
    expectObserve(r, chainRows());
    expect((await rejectionOf(removeImage(ctxOf(r), 'c3'), EXIT.USAGE)).hint).toBe('use cowstack clone rm c3');
    r.verify();
  });
});

describe('renameImage', () => {
  it('renames with lvrename VG OLD NEW (children keep pointing at the uuid)', async () => {
    const r = expectObserve(recorder(), chainRows()).expect(['lvrename', 'vg', 'image', 'deb12'], W);
    expect(await renameImage(ctxOf(r), 'image', 'deb12')).toEqual({
      name: 'deb12',
      vg: VG,
      uuid: U.image,
      action: 'renamed',
    });
    r.verify();
  });

  it('is idempotent once renamed', async () => {
    const r = expectObserve(recorder(), [imageRow('deb12', U.image)]);
    expect(await renameImage(ctxOf(r), 'image', 'deb12')).toEqual({
      name: 'deb12',
      vg: VG,
      uuid: U.image,
      action: 'none',
    });
    r.verify();
  });

  it('refuses (6) a taken name', async () => {
    const r = expectObserve(recorder(), [...chainRows(), foreignRow('deb12')]);
    expect((await rejectionOf(renameImage(ctxOf(r), 'image', 'deb12'), EXIT.REFUSED)).message).toBe(
      'vg/deb12 already exists',
    );
    r.verify();
  });
});

describe('detectFormat', () => {
  const head = (...bytes: number[]) => Buffer.concat([Buffer.from(bytes), Buffer.alloc(512 - bytes.length)]);
  it.each([
    ['gzip', gzipSync(Buffer.from('hello')).subarray(0, 512), 'gzip'],
    ['zstd', head(0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x05), 'zstd'],
    ['qcow2', head(0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03), 'qcow2'],
    ['zeros', Buffer.alloc(512), 'raw'],
    ['an MBR', Buffer.concat([Buffer.alloc(510), Buffer.from([0x55, 0xaa])]), 'raw'],
    ['a near-miss zstd magic', head(0x28, 0xb5, 0x2f, 0xfe), 'raw'],
    ['a near-miss qcow2 magic', head(0x51, 0x46, 0x49, 0xfa), 'raw'],
    ['half a gzip magic', head(0x1f, 0x00), 'raw'],
  ])('%s', (_what, buf, format) => {
    const padded = buf.length < 512 ? Buffer.concat([buf, Buffer.alloc(512 - buf.length)]) : buf;
    expect(detectFormat(padded)).toBe(format);
  });
});

describe('importImage', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-unit-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // 5 MiB of a non-zero pattern: the LV is two 4 MiB extents, the last 3 MiB must be zeros.
  const RAW = Buffer.alloc(5 * MiB);
  for (let i = 0; i < RAW.length; i++) RAW[i] = (i * 7 + 1) % 251;
  const PADDED = Buffer.concat([RAW, Buffer.alloc(3 * MiB)]);
  const PADDED_SHA = createHash('sha256').update(PADDED).digest('hex');
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const RAW_SHA = sha(RAW);
  const GZ = gzipSync(RAW, { level: 1 });
  const rawFile = path.join(dir, 'disk.raw');
  const gzFile = path.join(dir, 'disk.raw.gz');
  writeFileSync(rawFile, RAW);
  writeFileSync(gzFile, GZ);

  const DD = ['dd', 'of=/dev/mapper/vg-img3', 'bs=4M', 'iflag=fullblock', 'oflag=direct', 'conv=fsync', 'status=none'];
  const expectImport = (r: RecordingRunner, seal: boolean, replace = false, srcSha = RAW_SHA) => {
    r.expect(journalBegin('img3', 'import'), W);
    if (replace) r.expect(['lvremove', '-y', 'vg/img3'], W);
    return r
      .expect(newImageLv('img3', 8 * MiB), W)
      .expect(['lvchange', '-aey', 'vg/img3'], W)
      .expect(DD, W)
      .expect(
        [
          'lvchange',
          ...(seal ? ['--permission', 'r'] : []),
          '--deltag',
          'cowstack_state:initializing',
          '--addtag',
          `cowstack_state:${seal ? 'sealed' : 'writable'}`,
          '--addtag',
          `cowstack_sha256:${PADDED_SHA}`,
          '--addtag',
          `cowstack_srcsha256:${srcSha}`,
          'vg/img3',
        ],
        W,
      )
      .expect(['lvchange', '-an', 'vg/img3'], W)
      .expect(journalEnd('img3', 'import'), W)
      .expect(lvsArgv('vg/img3'), {
        kind: 'read',
        stdout: lvsJson([
          imageRow('img3', U.img2, { state: seal ? 'sealed' : 'writable', size: 8 * MiB, sha: PADDED_SHA }),
        ]),
      });
  };

  const importPadsAndSeals =
    'writes the raw file padded with zeros to whole extents, and seals it with the sha256 of what was written';
  it(importPadsAndSeals, async () => {
    const r = expectImport(expectObserve(recorder(), chainRows()), true);
    const progress: number[] = [];
    const done = importImage(ctxOf(r), 'img3', rawFile, { onProgress: (n, total) => progress.push(n / total) });
    const written = await ddInput(r);
    const res = await done;
    expect(written.length).toBe(8 * MiB);
    expect(written.subarray(0, 5 * MiB).equals(RAW)).toBe(true);
    expect(written.subarray(5 * MiB).equals(Buffer.alloc(3 * MiB))).toBe(true);
    // Both checksums: the file's (what sha256sum FILE prints) and the padded LV's.
    expect(res).toMatchObject({
      name: 'img3',
      vg: VG,
      uuid: U.img2,
      sizeBytes: 8 * MiB,
      bytes: 5 * MiB,
      sha256: PADDED_SHA,
      sourceSha256: RAW_SHA,
      sourceFormat: 'raw',
      state: 'sealed',
      action: 'imported',
    });
    expect(progress.at(-1)).toBe(1);
    r.verify();
  });

  it('expands a gzip source first; the LV gets the same bytes', async () => {
    const r = expectImport(expectObserve(recorder(), chainRows()), false, false, sha(GZ));
    const done = importImage(ctxOf(r), 'img3', gzFile, { seal: false });
    expect((await ddInput(r)).equals(PADDED)).toBe(true);
    expect(await done).toMatchObject({
      bytes: 5 * MiB,
      sha256: PADDED_SHA,
      sourceSha256: sha(GZ),
      sourceFormat: 'gzip',
      state: 'writable',
    });
    r.verify();
  });

  it('replaces the leftover of an interrupted import of the same name', async () => {
    const r = expectImport(
      expectObserve(recorder(), [imageRow('img3', U.img2, { state: 'initializing', size: 8 * MiB })]),
      true,
      true,
    );
    const done = importImage(ctxOf(r), 'img3', rawFile);
    await ddInput(r);
    expect((await done).action).toBe('imported');
    r.verify();
  });

  it('refuses (6) to import over an existing image', async () => {
    const r = expectObserve(recorder(), [imageRow('img3', U.img2)]);
    expect((await rejectionOf(importImage(ctxOf(r), 'img3', rawFile), EXIT.REFUSED)).message).toBe(
      'image vg/img3 already exists (sealed)',
    );
    r.verify();
  });

  it('re-running an import that completed is a no-op success; another file under that name is refused', async () => {
    const r = expectObserve(recorder(), [
      imageRow('img3', U.img2, { size: 8 * MiB, sha: PADDED_SHA, srcSha: RAW_SHA }),
    ]);
    expect(await importImage(ctxOf(r), 'img3', rawFile)).toMatchObject({
      action: 'none',
      uuid: U.img2,
      sha256: PADDED_SHA,
      sourceSha256: RAW_SHA,
      state: 'sealed',
    });
    r.verify();
    const other = expectObserve(recorder(), [
      imageRow('img3', U.img2, { size: 8 * MiB, sha: PADDED_SHA, srcSha: RAW_SHA }),
    ]);
    const e = await rejectionOf(importImage(ctxOf(other), 'img3', gzFile), EXIT.REFUSED);
    expect(e.message).toBe(
      `image vg/img3 already exists (sealed), imported from another file ` +
        `(source sha256 ${RAW_SHA}, this one ${sha(GZ)})`,
    );
    other.verify();
  });

  it('NOT_FOUND (7) for a missing source, after looking at the repository only', async () => {
    const r = expectObserve(recorder(), chainRows());
    expect(
      (await rejectionOf(importImage(ctxOf(r), 'img3', path.join(dir, 'nope.raw')), EXIT.NOT_FOUND)).message,
    ).toContain('does not exist');
    r.verify();
  });

  it('prepareSource reports format and raw size, and cleans up its work directory', async () => {
    const src = await prepareSource(gzFile);
    expect(src).toMatchObject({ format: 'gzip', bytes: 5 * MiB });
    await src.cleanup();
    const plain = await prepareSource(rawFile);
    expect(plain).toMatchObject({ format: 'raw', bytes: 5 * MiB, path: rawFile });
    await plain.cleanup();
  });
});

describe('import sources: the format from the content, refused when it is not a disk', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-unit-src-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, data: Buffer) => {
    const f = path.join(dir, name);
    writeFileSync(f, data);
    return f;
  };
  const DISK = Buffer.alloc(MiB);
  for (let i = 0; i < DISK.length; i++) DISK[i] = (i * 13 + 5) % 253;
  const has = (program: string) => spawnSync(program, ['--version']).status === 0;
  const head = (...parts: Array<string | number[]>) => {
    const b = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
    return Buffer.concat([b, Buffer.alloc(512 - b.length)]);
  };
  const vdi = Buffer.alloc(512);
  vdi.write('<<< Oracle VM VirtualBox Disk Image >>>\n', 'latin1');
  vdi.writeUInt32LE(0xbeda107f, 64);

  it.each([
    ['xz', head([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz'],
    ['bzip2', head('BZh91AY&SY'), 'bzip2'],
    ['an empty bzip2 stream', head('BZh9', [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]), 'bzip2'],
    ['"BZh" text, not bzip2', head('BZh9 is not a stream'), 'raw'],
    ['sparse VMDK', head('KDMV'), 'vmdk'],
    ['a VMDK descriptor', head('# Disk DescriptorFile\n'), 'vmdk'],
    ['VDI', vdi, 'vdi'],
    ['VHDX', head('vhdxfile'), 'vhdx'],
    ['a dynamic VHD', head('conectix'), 'vhd'],
  ])('detects %s', (_what, buf, format) => {
    expect(detectFormat(buf)).toBe(format);
  });

  it('detects a fixed VHD by its footer in the last 512 bytes', () => {
    expect(detectFormat(Buffer.alloc(512), head('conectix'))).toBe('vhd');
  });

  it('refuses a 25-byte text file (not whole 512-byte sectors), naming its size', async () => {
    const e = await rejectionOf(
      prepareSource(file('notes.txt', Buffer.from('this is not a disk image\n'))),
      EXIT.USAGE,
    );
    expect(e.message).toMatch(/notes\.txt is 25 bytes, not whole 512-byte sectors: not a disk image$/);
    expect(e.hint).toContain('truncate -s %512');
  });

  it('refuses a compressed text file by its expanded size', async () => {
    const e = await rejectionOf(prepareSource(file('notes.gz', gzipSync(Buffer.from('hello\n')))), EXIT.USAGE);
    expect(e.message).toContain('is 6 bytes once expanded from gzip, not whole 512-byte sectors');
  });

  it.each([
    ['vmdk', head('KDMV'), 'VMDK', 'qemu-img convert -f vmdk -O raw'],
    ['vdi', vdi, 'VDI', 'qemu-img convert -f vdi -O raw'],
    ['vhd', head('conectix'), 'VHD', 'qemu-img convert -f vpc -O raw'],
    ['vhdx', head('vhdxfile'), 'VHDX', 'qemu-img convert -f vhdx -O raw'],
  ])('refuses %s naming the format and the command that converts it', async (ext, buf, name, convert) => {
    const f = file(`disk.${ext}`, Buffer.concat([buf, Buffer.alloc(MiB)]));
    const e = await rejectionOf(prepareSource(f), EXIT.USAGE);
    expect(e.message).toBe(`import source ${f} is a ${name} disk image, which cowstack does not import`);
    expect(e.hint).toBe(`convert it to raw first: ${convert} ${f} ${f}.raw`);
  });

  it.skipIf(!has('xz'))('expands xz', async () => {
    const f = file('disk.raw.xz', execFileSync('xz', ['-c', '-1'], { input: DISK }));
    const src = await prepareSource(f);
    expect(src).toMatchObject({ format: 'xz', bytes: MiB });
    expect(readFileSync(src.path).equals(DISK)).toBe(true);
    expect(await src.sourceSha256()).toBe(createHash('sha256').update(readFileSync(f)).digest('hex'));
    await src.cleanup();
  });

  it.skipIf(!has('bzip2'))('expands bzip2', async () => {
    const f = file('disk.raw.bz2', execFileSync('bzip2', ['-c', '-1'], { input: DISK }));
    const src = await prepareSource(f);
    expect(src).toMatchObject({ format: 'bzip2', bytes: MiB });
    expect(readFileSync(src.path).equals(DISK)).toBe(true);
    await src.cleanup();
  });

  const missingProgram =
    'a format whose program is not installed here is refused (3) with what to install and how to expand it';
  it(missingProgram, async () => {
    const f = file('disk2.raw.xz', head([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
    const path0 = process.env.PATH;
    process.env.PATH = dir; // no xz in there
    try {
      const e = await rejectionOf(prepareSource(f), EXIT.MISSING);
      expect(e.message).toBe(`import source ${f} is xz, and xz is not installed on this machine`);
      expect(e.hint).toBe(
        `install xz-utils here, or expand it first where xz is: xz -d -c ${f} > ${f}.raw, and import the raw file`,
      );
    } finally {
      process.env.PATH = path0;
    }
  });

  it.skipIf(!has('qemu-img'))(
    'expands a qcow2, but refuses one with a backing file (qemu-img would read that file)',
    async () => {
      const base = file('base.raw', DISK);
      const plain = path.join(dir, 'plain.qcow2');
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', base, plain]);
      const src = await prepareSource(plain);
      expect(src).toMatchObject({ format: 'qcow2', bytes: MiB });
      expect(readFileSync(src.path).equals(DISK)).toBe(true);
      await src.cleanup();
      const top = path.join(dir, 'top.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', top]);
      const e = await rejectionOf(prepareSource(top), EXIT.USAGE);
      expect(e.message).toBe(`import source ${top} is a qcow2 image that reads another file (${base}): refusing it`);
    },
  );

  it('--format raw takes the bytes as they are, even when they look compressed', async () => {
    const looks = Buffer.concat([Buffer.from([0x1f, 0x8b]), DISK.subarray(2)]);
    const f = file('odd.raw', looks);
    expect((await rejectionOf(prepareSource(f), EXIT.FAILED)).message).toContain('cannot read import source');
    const src = await prepareSource(f, { format: 'raw' });
    expect(src).toMatchObject({ format: 'raw', bytes: MiB, path: f });
    await src.cleanup();
  });
});
