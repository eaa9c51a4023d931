/**
 * Image list signatures against files the real minisign 0.11 made (test/fixtures/minisign-0.11,
 * make.sh): a good list (prehashed, and legacy), and the ones every rule refuses: tampered,
 * expired, rolled back, signed by another key, unsigned. And the other way round: what
 * cowstack signs, the real `minisign -V` accepts.
 */
import { spawnSync } from 'node:child_process';
import { scryptSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseList, trustedComment } from '../../src/core/catalog/list.js';
import {
  parsePublicKey,
  parseSecretKey,
  parseSignature,
  publicKeyFile,
  scryptParams,
  signData,
  verifySignature,
} from '../../src/core/catalog/minisign.js';
import { publishList } from '../../src/core/catalog/publish.js';
import { verifyList } from '../../src/core/catalog/verify.js';
import { EXIT } from '../../src/exec/errors.js';
import { thrownBy } from './support.js';

const DIR = new URL('../fixtures/minisign-0.11/', import.meta.url).pathname;
const text = (f: string) => readFileSync(path.join(DIR, f), 'utf8');
const KEY = parsePublicKey(text('test.pub'));
const NOW = new Date('2026-11-30T12:00:00Z');
const verify = (name: string, o: { last?: number; signature?: string | null; key?: string } = {}) =>
  verifyList({
    data: readFileSync(path.join(DIR, `${name}.json`)),
    signature: o.signature === null ? undefined : (o.signature ?? text(`${name}.json.minisig`)),
    key: o.key ? parsePublicKey(text(o.key)) : KEY,
    now: NOW,
    last: o.last === undefined ? undefined : { version: o.last },
    where: `${name}.json`,
  });

describe('lists signed by minisign 0.11', () => {
  it('accepts the good list, prehashed (ED, the default) and legacy (Ed, -l)', () => {
    expect(parseSignature(text('good.json.minisig')).algorithm).toBe('ED');
    expect(parseSignature(text('legacy.json.minisig')).algorithm).toBe('Ed');
    for (const name of ['good', 'legacy']) {
      const list = verify(name, { last: 5 });
      expect(list).toMatchObject({ id: 'fixture-site', version: 5, expires: '2099-01-01T00:00:00Z' });
      expect(list.endorser.keyId).toBe(KEY.keyId);
      expect(list.images).toEqual([
        expect.objectContaining({ name: 'tiny', version: '1.0', size: 1048576, format: 'gzip', urls: ['tiny.raw.gz'] }),
      ]);
    }
  });

  it('refuses (6) a list changed after signing', () => {
    expect(thrownBy(() => verify('tampered'), EXIT.REFUSED).message).toBe(
      'tampered.json does not match its signature (key 1380531325D31ECC)',
    );
  });

  it('refuses (6) an expired list, naming when it expired', () => {
    expect(thrownBy(() => verify('expired'), EXIT.REFUSED).message).toBe(
      'expired.json (fixture-site version 6) expired at 2020-01-01T00:00:00Z',
    );
  });

  it('refuses (6) a list older than the one accepted before; the same version again is fine', () => {
    const e = thrownBy(() => verify('rollback', { last: 5 }), EXIT.REFUSED);
    expect(e.message).toBe(
      'rollback.json (fixture-site) is version 3, older than version 5 accepted before: refusing a rollback',
    );
    expect(e.data).toEqual({ version: 3, accepted: 5 });
    expect(verify('rollback', { last: 3 }).version).toBe(3);
    expect(verify('rollback').version).toBe(3);
  });

  it('refuses (6) a list signed with another key, naming both keys', () => {
    expect(thrownBy(() => verify('wrongkey'), EXIT.REFUSED).message).toBe(
      'wrongkey.json is signed with key 7CD7E2794B4CEF9D, not the trusted key 1380531325D31ECC',
    );
    // ...and the good list under the other key's trust is refused the same way.
    expect(thrownBy(() => verify('good', { key: 'other.pub' }), EXIT.REFUSED).message).toMatch(/not the trusted key/);
  });

  it('refuses (6) a list without a signature, and a signature that is not minisign', () => {
    expect(thrownBy(() => verify('good', { signature: null }), EXIT.REFUSED).message).toBe(
      'good.json has no signature (good.json.minisig)',
    );
    expect(thrownBy(() => verify('good', { signature: 'hello\n' }), EXIT.REFUSED).message).toMatch(
      /is not a minisign signature: no untrusted comment line/,
    );
  });

  it('refuses (6) an edited trusted comment, and one that does not describe the list', () => {
    const sig = text('good.json.minisig');
    const edited = sig.replace('version=5', 'version=7');
    expect(thrownBy(() => verify('good', { signature: edited }), EXIT.REFUSED).message).toBe(
      "good.json's trusted comment does not match its signature",
    );
    // A signature that is genuine for these bytes but whose trusted comment says another list.
    const sk = parseSecretKey(text('test.key'));
    const data = readFileSync(path.join(DIR, 'good.json'));
    const other = signData(data, sk, 'cowstack-image-list id=fixture-site version=6 expires=2099-01-01T00:00:00Z');
    expect(thrownBy(() => verify('good', { signature: other }), EXIT.REFUSED).message).toMatch(
      /^the signed trusted comment ".*version=6.*" does not describe this list/,
    );
  });

  it('reads unencrypted secret keys; asks (2) for the password of an encrypted one', () => {
    const sk = parseSecretKey(text('test.key'));
    expect(sk.keyId).toBe(KEY.keyId);
    expect(parsePublicKey(publicKeyFile(sk)).keyId).toBe(KEY.keyId);
    expect(publicKeyFile(sk).split('\n')[1]).toBe(text('test.pub').split('\n')[1]);
    expect(thrownBy(() => parseSecretKey(text('encrypted.key'), 'encrypted.key'), EXIT.USAGE).message).toBe(
      'encrypted.key is encrypted with a password',
    );
    expect(thrownBy(() => parsePublicKey('RWQ=\n'), EXIT.USAGE).message).toBe(
      'public key is not a minisign public key',
    );
  });

  // minisign's scrypt parameters cost 1 GiB and about 10 s: one derivation, the real fixture's.
  it('decrypts a password-protected key minisign made (scrypt as libsodium picks it)', { timeout: 120_000 }, () => {
    expect(scryptParams(33554432, 1073741824)).toEqual({ N: 2 ** 20, r: 8, p: 1 });
    const sk = parseSecretKey(text('encrypted.key'), 'encrypted.key', 'fixture');
    expect(sk.keyId).toBe(parsePublicKey(text('encrypted.pub')).keyId);
  });

  it('refuses (2) a wrong password, on a key encrypted the same way with cheap scrypt parameters', () => {
    // The test key re-encrypted as minisign would, with opslimit 2^16 and memlimit 2^24 (N 2^13).
    const raw = Buffer.from(text('test.key').split('\n')[1]!, 'base64');
    const salt = Buffer.alloc(32, 7);
    const { N, r, p } = scryptParams(65536, 16777216);
    const stream = scryptSync('right', salt, 104, { N, r, p });
    const enc = Buffer.concat([
      raw.subarray(0, 2),
      Buffer.from('Sc'),
      raw.subarray(4, 6),
      salt,
      Buffer.from([0, 0, 1, 0, 0, 0, 0, 0]),
      Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]),
      Buffer.from(raw.subarray(54).map((b, i) => b ^ stream[i]!)),
    ]).toString('base64');
    const file = `untrusted comment: minisign encrypted secret key\n${enc}\n`;
    expect(parseSecretKey(file, 'k', 'right').keyId).toBe(KEY.keyId);
    expect(thrownBy(() => parseSecretKey(file, 'k', 'wrong'), EXIT.USAGE).message).toBe('wrong password for k');
  });
});

describe('what cowstack signs', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-sign-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('verifies with its own verifier and with the real minisign -V', async () => {
    const key = parseSecretKey(text('test.key'));
    const out = path.join(dir, 'list.json');
    const r = await publishList({
      out,
      key,
      id: 'site',
      version: 7,
      expires: '30',
      images: [`tiny@1.0=${path.join(DIR, 'tiny.raw.gz')}`],
      now: NOW,
    });
    const fixture = JSON.parse(text('good.json')) as { images: Array<Record<string, unknown>> };
    // The same disk as make.sh described it with sha512sum and sha256sum.
    expect(r.list.images[0]).toEqual(fixture.images[0]);
    expect(r.list).toMatchObject({ version: 7, created: '2026-11-30T12:00:00Z', expires: '2026-12-30T12:00:00Z' });
    const sig = readFileSync(`${out}.minisig`, 'utf8');
    expect(verifySignature(readFileSync(out), parseSignature(sig), KEY)).toBe(trustedComment(r.list));
    expect(parseList(readFileSync(out), trustedComment(r.list)).version).toBe(7);

    const probe = spawnSync('minisign', ['-v'], { encoding: 'utf8' });
    if (probe.error) expect.fail('minisign is not installed: apt-get install minisign (.ci/apt-packages has it)');
    const v = spawnSync('minisign', ['-V', '-p', path.join(DIR, 'test.pub'), '-m', out], { encoding: 'utf8' });
    expect(v.status, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain(`Trusted comment: ${trustedComment(r.list)}`);
    // Tampering after cowstack signed is caught by minisign too.
    writeFileSync(out, readFileSync(out, 'utf8').replace('"version": 7', '"version": 8'));
    expect(spawnSync('minisign', ['-V', '-p', path.join(DIR, 'test.pub'), '-m', out]).status).not.toBe(0);
  });
});
