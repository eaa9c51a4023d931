/**
 * The datastore driver (src/ds): oned's real argument shapes (the image id, the base64
 * DS_DRIVER_ACTION_DATA on stdin, or before OpenNebula 6.8 as the first argument), hostile
 * values refused before anything runs, and each action against the recording runner.
 * SYNTHETIC: LV rows and dm devices come from repoFixtures; the XML is built here as oned
 * builds it (image template, then the datastore's).
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { runDs, type DsEnv } from '../../src/ds/actions.js';
import { parseDsArgs } from '../../src/ds/args.js';
import { parseXml } from '../../src/ds/xml.js';
import { EXIT } from '../../src/exec/errors.js';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import {
  MiB,
  U,
  VG,
  cloneRow,
  imageRow,
  journalBegin,
  journalEnd,
  lvDev,
  newImageLv,
  sealArgv,
} from './repoFixtures.js';
import { ddInput, recorder, rejectionOf, thrownBy, vgsArgv } from './support.js';
import {
  O,
  SHA,
  VGS_ROW,
  copyInto,
  createImageSteps,
  img,
  lv,
  rd,
  runnerOf,
  savedRow,
  script,
  top,
  verifyAll,
  wr,
  type Step,
} from './tmFixtures.js';

const esc = (v: string) => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
/** The driver action as oned sends it: IMAGE fields, then the DATASTORE with its template. */
const xmlOf = (image: Record<string, string | number> | undefined, ds: Record<string, string> = {}) =>
  '<DS_DRIVER_ACTION_DATA>' +
  (image
    ? `<IMAGE>${Object.entries(image)
        .map(([k, v]) => `<${k}>${esc(String(v))}</${k}>`)
        .join('')}<TEMPLATE><DESCRIPTION><![CDATA[a <b> & c]]></DESCRIPTION></TEMPLATE></IMAGE>`
    : '') +
  `<DATASTORE><ID>100</ID><NAME>cowstack_images</NAME><DS_MAD><![CDATA[cowstack]]></DS_MAD><TEMPLATE>` +
  Object.entries({ BRIDGE_LIST: 'node1 node2', ...ds })
    .map(([k, v]) => `<${k}><![CDATA[${v}]]></${k}>`)
    .join('') +
  '</TEMPLATE></DATASTORE></DS_DRIVER_ACTION_DATA>';
const b64 = (xml: string) => Buffer.from(xml).toString('base64');

/** Run one action as oned does (`ID`, the XML on stdin); every runner must have run exactly its script. */
async function ds(action: string, id: string, xml: string, runners: Record<string, RecordingRunner> = {}) {
  const out: string[] = [];
  const info: string[] = [];
  const env: DsEnv = {
    vg: VG,
    scope: {},
    runnerFor: runnerOf(runners),
    hosts: [],
    locked: (_host, _change, fn) => fn(),
    info: (m) => info.push(m),
    out: (t) => out.push(t),
  };
  let error: unknown;
  try {
    await runDs(env, parseDsArgs(action, [id], b64(xml)));
  } catch (e) {
    error = e;
  }
  verifyAll(runners);
  if (error) throw error;
  return { out: out.join(''), info };
}

const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-ds-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const RAW = Buffer.alloc(5 * MiB);
for (let i = 0; i < RAW.length; i++) RAW[i] = (i * 11 + 3) % 253;
const rawFile = path.join(dir, 'disk.raw');
const gzFile = path.join(dir, 'disk.raw.gz');
writeFileSync(rawFile, RAW);
writeFileSync(gzFile, gzipSync(RAW, { level: 1 }));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('ds arguments: as oned passes them', () => {
  const CP = xmlOf({ ID: 7, PATH: rawFile, SIZE: 5, FORMAT: 'raw' });

  it('reads the driver action from stdin (OpenNebula >= 6.8) or the first argument (before 6.8) alike', () => {
    const fromStdin = parseDsArgs('cp', ['7'], b64(CP));
    expect(fromStdin).toEqual({
      action: 'cp',
      id: 7,
      ds: { id: 100, bridges: ['node1', 'node2'] },
      image: 7,
      path: rawFile,
    });
    expect(parseDsArgs('cp', [b64(CP), '7'])).toEqual(fromStdin);
  });

  it.each([
    ['mkfs', xmlOf({ ID: 8, SIZE: 1024, FORMAT: 'raw', FS: '' }), { sizeMb: 1024, saveAs: false, format: 'raw' }],
    ['mkfs', xmlOf({ ID: 8, SIZE: 0, FORMAT: 'save_as' }), { saveAs: true }],
    ['rm', xmlOf({ ID: 8, SOURCE: 'vg/one-img-8' }), { source: { vg: 'vg', lv: 'one-img-8' } }],
    ['clone', xmlOf({ ID: 8, PATH: 'vg/one-img-3' }), { from: { vg: 'vg', lv: 'one-img-3' } }],
    ['snap_flatten', xmlOf({ ID: 8, TARGET_SNAPSHOT: 2 }), { snapshot: 2 }],
  ])('%s: the fields it uses', (action, xml, fields) => {
    expect(parseDsArgs(action, ['8'], b64(xml))).toMatchObject({ action, id: 8, image: 8, ...fields });
  });

  it('stat (a request id, an IMAGE with only PATH), export (an app id) and monitor (the datastore id)', () => {
    expect(parseDsArgs('stat', ['31'], b64(xmlOf({ PATH: 'https://example.org/a.qcow2' })))).toMatchObject({
      path: 'https://example.org/a.qcow2',
    });
    expect(parseDsArgs('export', ['4'], b64(xmlOf({ ID: 8, SOURCE: 'vg/one-img-8', SIZE: 64 })))).toMatchObject({
      source: { vg: 'vg', lv: 'one-img-8' },
      sizeMb: 64,
    });
    expect(parseDsArgs('monitor', ['100'], b64(xmlOf(undefined, { BRIDGE_LIST: 'node2' })))).toEqual({
      action: 'monitor',
      id: 100,
      ds: { id: 100, bridges: ['node2'] },
    });
  });

  const IMG = { ID: 7, SIZE: 5 };
  it.each([
    ['an option-shaped id', ['--config=evil.yaml'], CP, /argument 1 "--config=evil.yaml" looks like an option/],
    ['an option-shaped first argument', ['--dry-run', '7'], CP, /argument 1 "--dry-run" looks like an option/],
    ['-h as the id', ['-h'], CP, /"-h" looks like an option/],
    ['a non-numeric id', ['7;id'], CP, /id "7;id" is invalid/],
    ['a leading zero', ['07'], CP, /id "07" is invalid/],
    ['three arguments', ['a', 'b', '7'], CP, /takes ID .* got 3/],
    ['an id that is not the image', ['9'], CP, /IMAGE\/ID "7" is invalid: it is not the image id 9/],
    ['a path with ..', ['7'], xmlOf({ ...IMG, PATH: '/var/tmp/../../etc/shadow' }), /"\.\." parts/],
    ['a relative path', ['7'], xmlOf({ ...IMG, PATH: 'disk.raw' }), /PATH "disk.raw" is invalid/],
    ['a path with a command', ['7'], xmlOf({ ...IMG, PATH: '/tmp/$(id)' }), /PATH "\/tmp\/\$\(id\)" is invalid/],
    ['an option-shaped path', ['7'], xmlOf({ ...IMG, PATH: '--help' }), /PATH "--help" is invalid/],
    ['a URL with credentials', ['7'], xmlOf({ ...IMG, PATH: 'http://u:p@h/x' }), /without credentials/],
    ['a path under /etc', ['7'], xmlOf({ ...IMG, PATH: '/etc/shadow' }), /under \/etc, one of the datastore/],
    ['a SOURCE with a path', ['7'], xmlOf({ ID: 7, SOURCE: 'vg/../x' }), /SOURCE "vg\/..\/x" is invalid/],
    ['an option-shaped LV', ['7'], xmlOf({ ID: 7, SOURCE: 'vg/-x' }), /SOURCE "vg\/-x" is invalid/],
    ['a bad BRIDGE_LIST host', ['7'], xmlOf({ ID: 7, SOURCE: 'vg/a' }, { BRIDGE_LIST: 'n1 $(id)' }), /\$\(id\)/],
    ['a DOCTYPE', ['7'], `<!DOCTYPE x [<!ENTITY a "b">]>${CP}`, /declarations .* are not accepted/],
    ['an unknown entity', ['7'], xmlOf({ ID: 7 }).replace('<ID>7', '<ID>&xx;7'), /unknown entity &xx;/],
    ['another root', ['7'], '<VM><ID>7</ID></VM>', /root is <VM>/],
    ['unclosed XML', ['7'], CP.slice(0, -10), /malformed/],
  ])('refuses %s (exit 2), naming it', (_what, args, xml, re) => {
    const action = /SOURCE|&xx;/.test(xml) ? 'rm' : 'cp';
    const e = thrownBy(
      () => parseDsArgs(action, args, args.length === 1 ? (/^</.test(xml) ? b64(xml) : xml) : ''),
      EXIT.USAGE,
    );
    expect(e.message).toMatch(re);
  });

  it('refuses stdin that is not base64, and an unknown action', () => {
    expect(thrownBy(() => parseDsArgs('cp', ['7'], '<xml>'), EXIT.USAGE).message).toMatch(/not base64/);
    expect(thrownBy(() => parseDsArgs('mv', ['7'], b64(CP)), EXIT.USAGE).message).toMatch(/unknown datastore/);
  });

  it('SAFE_DIRS lets a restricted directory through; RESTRICTED_DIRS replaces the default', () => {
    const under = (ds: Record<string, string>) => b64(xmlOf({ ...IMG, PATH: '/etc/one/img.raw' }, ds));
    expect(parseDsArgs('cp', ['7'], under({ SAFE_DIRS: '/etc/one' })).action).toBe('cp');
    expect(parseDsArgs('cp', ['7'], under({ RESTRICTED_DIRS: '/root /srv' })).action).toBe('cp');
    const srv = b64(xmlOf({ ...IMG, PATH: '/srv/x.raw' }, { RESTRICTED_DIRS: '/root /srv' }));
    expect(thrownBy(() => parseDsArgs('stat', ['7'], srv), EXIT.USAGE).message).toContain('under /srv');
  });

  it('the XML reader decodes CDATA, entities and character references, and nothing else', () => {
    const x = parseXml('<?xml version="1.0"?><A><B x="1">a &amp; &#60;b&#x3e;</B><C><![CDATA[<&>]]></C><D/></A>');
    expect(x.children.map((c) => [c.name, c.text])).toEqual([
      ['B', 'a & <b>'],
      ['C', '<&>'],
      ['D', ''],
    ]);
  });
});

describe('ds actions against the recording runner', () => {
  const PADDED = Buffer.concat([RAW, Buffer.alloc(3 * MiB)]);
  const newImg = (name: string, o: Parameters<typeof imageRow>[2] = {}) => imageRow(name, U.img2, o);

  it('cp streams the file into one-img-N, seals it, and prints SOURCE and FORMAT', async () => {
    const dev = '/dev/mapper/vg-one--img--7';
    const sealed = { sha: sha(PADDED), srcSha: sha(RAW), size: 8 * MiB };
    const steps: Step[] = [
      O,
      wr(journalBegin('one-img-7', 'import')),
      wr(newImageLv('one-img-7', 8 * MiB)),
      wr(['lvchange', '-aey', 'vg/one-img-7']),
      wr(['dd', `of=${dev}`, 'bs=4M', 'iflag=fullblock', 'oflag=direct', 'conv=fsync', 'status=none']),
      wr(sealArgv('vg/one-img-7', 'initializing', sealed.sha, [`cowstack_srcsha256:${sealed.srcSha}`])),
      wr(['lvchange', '-an', 'vg/one-img-7']),
      wr(journalEnd('one-img-7', 'import')),
      lv('one-img-7'),
    ];
    const r = script(recorder('node1'), [{ rows: [img()] }, { rows: [img(), newImg('one-img-7', sealed)] }], steps);
    const done = ds('cp', '7', xmlOf({ ID: 7, PATH: rawFile }), { node1: r });
    expect((await ddInput(r)).equals(PADDED)).toBe(true);
    const { out, info } = await done;
    expect(out).toBe('vg/one-img-7 raw\n');
    expect(info[0]).toContain(`source sha256 ${sealed.srcSha}, image sha256 ${sealed.sha}`);
  });

  it('stat prints the size in MiB once expanded, reading only the front-end', async () => {
    expect((await ds('stat', '3', xmlOf({ PATH: rawFile }))).out).toBe('5\n');
    expect((await ds('stat', '3', xmlOf({ PATH: gzFile }))).out).toBe('5\n');
  });

  it('mkfs makes a zeroed image and seals it; prints the SOURCE', async () => {
    const dev = '/dev/mapper/vg-one--img--9';
    const writable = newImg('one-img-9', { state: 'writable', size: 8 * MiB });
    const steps: Step[] = [
      O,
      ...createImageSteps('one-img-9', 8 * MiB),
      O,
      wr(['lvchange', '-aey', 'vg/one-img-9']),
      rd(['sha256sum', dev], { stdout: `${SHA}  ${dev}\n` }),
      wr(sealArgv('vg/one-img-9', 'writable', SHA)),
      wr(['lvchange', '-an', 'vg/one-img-9']),
    ];
    const r = script(recorder('node1'), [{ rows: [img()] }, { rows: [img(), writable] }], steps);
    expect((await ds('mkfs', '9', xmlOf({ ID: 9, SIZE: 8, FORMAT: 'raw' }), { node1: r })).out).toBe('vg/one-img-9\n');
  });

  it('mkfs for a save-as only names the image (cpds makes it); an FS or qcow2 is refused; nothing runs', async () => {
    const r = recorder('node1');
    expect((await ds('mkfs', '9', xmlOf({ ID: 9, SIZE: 64, FORMAT: 'save_as' }), { node1: r })).out).toBe(
      'vg/one-img-9\n',
    );
    const fs = await rejectionOf(ds('mkfs', '9', xmlOf({ ID: 9, SIZE: 64, FS: 'ext4' }), { node1: r }), EXIT.REFUSED);
    expect(fs.message).toBe('image 9: cowstack makes raw, unformatted datablocks and cannot make a ext4 file system');
    const q = xmlOf({ ID: 9, SIZE: 64, FORMAT: 'qcow2' });
    expect((await rejectionOf(ds('mkfs', '9', q, { node1: r }), EXIT.REFUSED)).message).toContain('FORMAT qcow2');
  });

  it('clone copies the sealed image into one-img-N through a shared activation it releases', async () => {
    const mark = `cowstack_copied_from:${U.image}`;
    const shared = imageRow('img', U.image, { active: 'shared', minor: 3 });
    const worlds = [
      { rows: [img()] },
      { rows: [shared, savedRow(mark, 'one-img-9')], devs: [lvDev('img', U.image, 3, 0, true)] },
    ];
    const steps: Step[] = [
      O,
      wr(['lvchange', '-asy', 'vg/img']),
      ...copyInto('/dev/mapper/vg-img', { name: 'one-img-9', mark }),
      O,
      wr(['lvchange', '-an', 'vg/img']),
    ];
    const r = script(recorder('node1'), worlds, steps);
    const { out, info } = await ds('clone', '9', xmlOf({ ID: 9, PATH: 'vg/img' }), { node1: r });
    expect(out).toBe('vg/one-img-9 raw\n');
    expect(info).toEqual([`image 9: copied from img (sha256 ${SHA})`]);
  });

  it('rm refuses while a VM disk depends on the image, naming it, before changing anything', async () => {
    const r = script(recorder('node1'), [{ rows: [img(), top()] }], [O]);
    const e = await rejectionOf(ds('rm', '3', xmlOf({ ID: 3, SOURCE: 'vg/img' }), { node1: r }), EXIT.REFUSED);
    expect(e.message).toBe('image vg/img cannot be removed: 1 clone(s) depend on it: one-7-0 (on img)');
  });

  it('rm removes an image nothing depends on; again, it is a no-op', async () => {
    const r = script(recorder('node1'), [{ rows: [img()] }], [O, O, wr(['lvremove', '-y', 'vg/img'])]);
    expect((await ds('rm', '3', xmlOf({ ID: 3, SOURCE: 'vg/img' }), { node1: r })).info).toEqual(['removed img']);
    const again = script(recorder('node1'), [{ rows: [img()] }], [O]);
    expect((await ds('rm', '4', xmlOf({ ID: 4, SOURCE: 'vg/one-img-4' }), { node1: again })).info).toEqual([
      'vg/one-img-4 does not exist: nothing to do',
    ]);
  });

  it('rm refuses a lineage that a running persistent disk stands on', async () => {
    const p1 = cloneRow('img-p1', U.c2, U.image, { state: 'committed' });
    const r = script(recorder('node1'), [{ rows: [img(), p1, top({}, U.c2)] }], [O]);
    const e = await rejectionOf(ds('rm', '3', xmlOf({ ID: 3, SOURCE: 'vg/img' }), { node1: r }), EXIT.REFUSED);
    expect(e.message).toContain('depend on it: one-7-0 (on img-p1)');
  });

  it('export activates the sealed image shared and prints the IMPORT_INFO the marketplace reads', async () => {
    const MD5 = 'd41d8cd98f00b204e9800998ecf8427e';
    const r = script(
      recorder('node1'),
      [{ rows: [imageRow('img', U.image, { sha: SHA })] }],
      [
        O,
        wr(['lvchange', '-asy', 'vg/img']),
        rd(['md5sum', '/dev/mapper/vg-img'], { stdout: `${MD5}  /dev/mapper/vg-img\n` }),
      ],
    );
    const { out } = await ds('export', '4', xmlOf({ ID: 3, SOURCE: 'vg/img', SIZE: 64 }), { node1: r });
    expect(out).toBe(
      '<IMPORT_INFO><IMPORT_SOURCE><![CDATA[ssh://node1:/dev/mapper/vg-img]]></IMPORT_SOURCE>' +
        `<MD5><![CDATA[${MD5}]]></MD5>` +
        `<SHA256><![CDATA[${SHA}]]></SHA256><SIZE><![CDATA[64]]></SIZE><FORMAT><![CDATA[raw]]></FORMAT>` +
        '<DISPOSE>NO</DISPOSE></IMPORT_INFO>\n',
    );
  });

  it('monitor reports the repository VG from the first bridge', async () => {
    const r = recorder('node1').expect(vgsArgv(VG), { kind: 'read', stdout: VGS_ROW });
    const { out } = await ds('monitor', '100', xmlOf(undefined), { node1: r });
    expect(out).toMatch(/^USED_MB=\d+\nFREE_MB=\d+\nTOTAL_MB=\d+\n$/);
  });

  it('snap_flatten is refused and runs nothing; a SOURCE outside the repository VG too', async () => {
    const r = recorder('node1');
    const e = await rejectionOf(ds('snap_flatten', '3', xmlOf({ ID: 3 }), { node1: r }), EXIT.REFUSED);
    expect(e.message).toBe('image 3 has no image snapshots to flatten: the cowstack datastore keeps none');
    const other = await rejectionOf(ds('rm', '3', xmlOf({ ID: 3, SOURCE: 'other/img' }), { node1: r }), EXIT.USAGE);
    expect(other.message).toBe('image SOURCE other/img is not in VG vg, the repository of datastore 100');
  });
});
