/** thin-provisioning-tools' cache_check: is a dm-cache metadata device consistent? */
import type { RunRequest } from '../exec/types.js';

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
