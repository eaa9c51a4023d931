/** Known content for data checks: deterministic pseudo-random buffers and their sha256. */
import { createHash } from 'node:crypto';
import type { Testbed } from '../testbed/index.js';

export const MiB = 1024 * 1024;

/** Deterministic bytes (xorshift) so a failure can be reproduced exactly. */
export function pattern(bytes: number, seed: number): Buffer {
  const buf = Buffer.alloc(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, i);
  }
  return buf;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A copy of `base` with `data` written at `offset`: what a device must read back. */
export function overlay(base: Buffer, offset: number, data: Buffer): Buffer {
  const out = Buffer.from(base);
  data.copy(out, offset);
  return out;
}

export async function writeAt(
  tb: Testbed,
  node: string,
  device: string,
  offsetMiB: number,
  data: Buffer,
): Promise<void> {
  const r = await tb.ssh(
    node,
    [
      'dd',
      `of=${device}`,
      'bs=1M',
      `seek=${offsetMiB}`,
      'iflag=fullblock',
      'oflag=direct',
      'conv=fsync,notrunc',
      'status=none',
    ],
    { input: data, timeoutMs: 300_000 },
  );
  if (r.exitCode !== 0) throw new Error(`write to ${device} on ${node} failed: ${r.stderr}`);
}

export async function deviceSha(tb: Testbed, node: string, device: string): Promise<string> {
  const r = await tb.ssh(node, ['sha256sum', device], { timeoutMs: 300_000 });
  if (r.exitCode !== 0) throw new Error(`sha256sum ${device} on ${node} failed: ${r.stderr}`);
  return r.stdout.split(/\s+/)[0]!;
}
