/**
 * minisign's key and signature files, verified and made with node:crypto alone (Ed25519,
 * BLAKE2b-512): the nodes need no minisign binary, and lists made by `minisign -S` and by
 * `cowstack catalog publish` are the same files. Format (minisign 0.11, see its README):
 *   public key  base64("Ed" || key id (8) || Ed25519 public key (32))
 *   signature   base64(alg (2) || key id (8) || Ed25519 signature (64)), then
 *               "trusted comment: TEXT" and base64(Ed25519 over signature || TEXT)
 *   secret key  base64("Ed" || kdf (2) || "B2" || salt (32) || ops (8) || mem (8) ||
 *               key id (8) || seed (32) || public key (32) || checksum (32))
 * alg "ED" signs the BLAKE2b-512 of the file (prehashed: minisign 0.11's default), "Ed"
 * the file itself (legacy, `minisign -S -l`). Both verify; cowstack signs "ED".
 */
import { createHash, createPrivateKey, createPublicKey, scryptSync, sign, verify, type KeyObject } from 'node:crypto';
import { refused, usageError } from '../../exec/errors.js';

export interface PublicKey {
  /** minisign's key id as it prints it: 16 hex digits (the 8 bytes read as a little-endian number). */
  keyId: string;
  key: KeyObject;
}

export interface SecretKey extends PublicKey {
  privateKey: KeyObject;
  publicBytes: Buffer;
}

export interface Signature {
  algorithm: 'ED' | 'Ed';
  keyId: string;
  signature: Buffer;
  trustedComment: string;
  globalSignature: Buffer;
}

const keyIdOf = (b: Buffer): string => Buffer.from(b).reverse().toString('hex').toUpperCase();
const b64url = (b: Buffer) => b.toString('base64url');

/** The base64 line of a minisign file: the first line that is not a comment. */
function payload(text: string, what: string, bytes: number): Buffer {
  const line = text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('untrusted comment:'));
  const raw = line && /^[A-Za-z0-9+/]+=*$/.test(line) ? Buffer.from(line, 'base64') : undefined;
  if (!raw || raw.length !== bytes)
    throw usageError(`${what} is not a minisign ${bytes === 42 ? 'public key' : 'secret key'}`);
  return raw;
}

/** A public key file's content, or the bare base64 line (`minisign -P`). */
export function parsePublicKey(text: string, what = 'public key'): PublicKey {
  const raw = payload(text, what, 42);
  if (raw.subarray(0, 2).toString('latin1') !== 'Ed') throw usageError(`${what} is not an Ed25519 minisign key`);
  const x = raw.subarray(10, 42);
  return {
    keyId: keyIdOf(raw.subarray(2, 10)),
    key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(x) }, format: 'jwk' }),
  };
}

/** The private key of this seed, if it derives the public key stored beside it. */
function privateKeyOf(seed: Buffer, pub: Buffer): KeyObject | undefined {
  try {
    const key = createPrivateKey({
      key: { kty: 'OKP', crv: 'Ed25519', d: b64url(seed), x: b64url(pub) },
      format: 'jwk',
    });
    const derived = Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x as string, 'base64url');
    return derived.equals(pub) ? key : undefined;
  } catch {
    return undefined; // node refuses a JWK whose halves disagree
  }
}

/**
 * libsodium's crypto_pwhash_scryptsalsa208sha256 parameters from minisign's opslimit and
 * memlimit (its pickparams), so that node:crypto's scrypt derives the same stream.
 */
export function scryptParams(opslimit: number, memlimit: number): { N: number; r: number; p: number } {
  const ops = Math.max(opslimit, 32768);
  const r = 8;
  const log2 = (maxN: number) => {
    let n = 1;
    while (n < 63 && 2 ** n <= maxN / 2) n++;
    return n;
  };
  if (ops < memlimit / 32) return { N: 2 ** log2(ops / (r * 4)), r, p: 1 };
  const n = log2(memlimit / (r * 128));
  const maxrp = Math.min(Math.floor(ops / 4 / 2 ** n), 0x3fffffff);
  return { N: 2 ** n, r, p: Math.max(1, Math.floor(maxrp / r)) };
}

/**
 * A minisign secret key: unencrypted (`minisign -G -W`), or encrypted with a password
 * (scrypt, minisign's default), which must then be given. Whether the secret half is right
 * is checked by deriving the public half and comparing it with the one stored beside it:
 * a wrong password fails that check (minisign's own checksum is a BLAKE2b-256, which
 * node:crypto does not offer).
 */
export function parseSecretKey(text: string, what = 'secret key', password?: string): SecretKey {
  const raw = payload(text, what, 158);
  if (raw.subarray(0, 2).toString('latin1') !== 'Ed') throw usageError(`${what} is not an Ed25519 minisign key`);
  const kdf = raw.subarray(2, 4).toString('latin1');
  let keynum = raw.subarray(54, 158);
  if (kdf === 'Sc') {
    if (password === undefined)
      throw usageError(
        `${what} is encrypted with a password`,
        'give it on stdin with --password-file - (or a file), or use an unencrypted key (minisign -G -W)',
      );
    const { N, r, p } = scryptParams(Number(raw.readBigUInt64LE(38)), Number(raw.readBigUInt64LE(46)));
    const stream = scryptSync(password, raw.subarray(6, 38), 104, { N, r, p, maxmem: 256 * N * r * p });
    keynum = Buffer.from(keynum.map((b, i) => b ^ stream[i]!));
  } else if (kdf !== '\0\0') throw usageError(`${what} uses an unknown key derivation ${JSON.stringify(kdf)}`);
  const id = keynum.subarray(0, 8);
  const seed = keynum.subarray(8, 40);
  const pub = keynum.subarray(40, 72);
  const privateKey = privateKeyOf(seed, pub);
  if (!privateKey)
    throw usageError(
      kdf === 'Sc'
        ? `wrong password for ${what}`
        : `${what} is damaged: its secret half does not match its public half`,
    );
  return {
    keyId: keyIdOf(id),
    key: createPublicKey(privateKey),
    privateKey,
    publicBytes: Buffer.concat([Buffer.from('Ed'), id, pub]),
  };
}

export function publicKeyFile(k: SecretKey): string {
  return `untrusted comment: minisign public key ${k.keyId}\n${k.publicBytes.toString('base64')}\n`;
}

export function parseSignature(text: string, what = 'signature'): Signature {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  const bad = (why: string) =>
    refused(`${what} is not a minisign signature: ${why}`, 'give the .minisig file made for this list');
  if (!lines[0]?.startsWith('untrusted comment:')) throw bad('no untrusted comment line');
  const sig = Buffer.from(lines[1] ?? '', 'base64');
  if (sig.length !== 74) throw bad('the signature line is not 74 bytes');
  const algorithm = sig.subarray(0, 2).toString('latin1');
  if (algorithm !== 'ED' && algorithm !== 'Ed') throw bad(`unknown algorithm ${JSON.stringify(algorithm)}`);
  const prefix = 'trusted comment: ';
  if (!lines[2]?.startsWith(prefix)) throw bad('no trusted comment line');
  const globalSignature = Buffer.from(lines[3] ?? '', 'base64');
  if (globalSignature.length !== 64) throw bad('the trusted comment signature is not 64 bytes');
  return {
    algorithm,
    keyId: keyIdOf(sig.subarray(2, 10)),
    signature: sig.subarray(10, 74),
    trustedComment: lines[2].slice(prefix.length),
    globalSignature,
  };
}

const blake2b512 = (data: Buffer): Buffer => createHash('blake2b512').update(data).digest();

/**
 * Checks `sig` over `data` with `key`: the key id first (a list signed by another key is
 * named as such), then the signature, then the trusted comment's own signature. Returns
 * the trusted comment, which is only trustworthy once this returned.
 */
export function verifySignature(data: Buffer, sig: Signature, key: PublicKey, what = 'list'): string {
  if (sig.keyId !== key.keyId)
    throw refused(
      `${what} is signed with key ${sig.keyId}, not the trusted key ${key.keyId}`,
      'check the list comes from your endorser, or configure its public key (catalog.publicKey)',
      { signedBy: sig.keyId, trusted: key.keyId },
    );
  const message = sig.algorithm === 'ED' ? blake2b512(data) : data;
  if (!verify(null, message, key.key, sig.signature))
    throw refused(
      `${what} does not match its signature (key ${key.keyId})`,
      'the list was altered after signing: refetch it',
    );
  const comment = Buffer.from(sig.trustedComment, 'utf8');
  if (!verify(null, Buffer.concat([sig.signature, comment]), key.key, sig.globalSignature))
    throw refused(
      `${what}'s trusted comment does not match its signature`,
      'the signature file was altered: refetch it',
    );
  return sig.trustedComment;
}

/** A prehashed ("ED") signature file, as `minisign -S -t COMMENT` 0.11 writes it. */
export function signData(data: Buffer, key: SecretKey, trustedComment: string): string {
  if (/[\r\n]/.test(trustedComment)) throw usageError('a trusted comment is one line');
  const signature = sign(null, blake2b512(data), key.privateKey);
  const id = key.publicBytes.subarray(2, 10);
  const sigLine = Buffer.concat([Buffer.from('ED'), id, signature]).toString('base64');
  const global = sign(null, Buffer.concat([signature, Buffer.from(trustedComment, 'utf8')]), key.privateKey);
  return (
    `untrusted comment: signature from cowstack (minisign format), key ${key.keyId}\n${sigLine}\n` +
    `trusted comment: ${trustedComment}\n${global.toString('base64')}\n`
  );
}
