/** thin-provisioning-tools' cache_check: is a dm-cache metadata device consistent? */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { sbin } from './program.js';

/** Quiet check of one metadata device: exit 0 = consistent, anything else = reset it. */
export const checkReq = (metadataDevice: string): RunRequest => ({
  argv: ['cache_check', '-q', metadataDevice],
  kind: 'read',
  root: true,
  allowFailure: true,
  timeout: 'change',
});

export const versionReq = (): RunRequest => ({
  argv: ['cache_check', '--version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('cache_check', 'thin-provisioning-tools', "check a lazy cache's metadata before reuse, version probe (doctor)"),
];
