/** blockdev adapter: sizes in bytes and 512-byte sectors, flush. */
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { sbin } from './program.js';

export async function sizeBytes(runner: Runner, device: string): Promise<number> {
  const r = await runner.run({ argv: ['blockdev', '--getsize64', device], kind: 'read', root: true });
  return parseIntStrict(r.stdout, device);
}

export async function sizeSectors(runner: Runner, device: string): Promise<number> {
  const r = await runner.run({ argv: ['blockdev', '--getsz', device], kind: 'read', root: true });
  return parseIntStrict(r.stdout, device);
}

export async function logicalBlockSize(runner: Runner, device: string): Promise<number> {
  const r = await runner.run({ argv: ['blockdev', '--getss', device], kind: 'read', root: true });
  return parseIntStrict(r.stdout, device);
}

/** The physical sector size: sanlock lays out leases 1 MiB apart on 512, 8 MiB apart on 4096. */
export async function physicalBlockSize(runner: Runner, device: string): Promise<number> {
  const r = await runner.run({ argv: ['blockdev', '--getpbsz', device], kind: 'read', root: true });
  return parseIntStrict(r.stdout, device);
}

export const flushReq = (device: string) => ({
  argv: ['blockdev', '--flushbufs', device],
  kind: 'write' as const,
  root: true,
});

function parseIntStrict(text: string, device: string): number {
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n)) throw new Error(`blockdev printed "${text.trim()}" for ${device}, expected a number`);
  return n;
}

/** doctor's probe: prints the util-linux version. */
export const versionReq = (): RunRequest => ({
  argv: ['blockdev', '--version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [sbin('blockdev', 'util-linux', 'device sizes, flush buffers')];
