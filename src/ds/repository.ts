/**
 * Which repository VG a datastore driver action acts in (README "Growing a site: several
 * repositories"): new images (cp, mkfs, clone) go into the VG config `repositories` maps the
 * image datastore's id to. An existing image (rm, export) is where its SOURCE says, when that
 * is one of the configured repositories: a datastore mapped to a new VG still reaches the
 * images it made before. Any other VG is left to the action's own check, which refuses it.
 */
import type { DsRequest } from './args.js';

export function dsRepository(req: DsRequest, mapped: string, known: readonly string[]): string {
  if ((req.action === 'rm' || req.action === 'export') && known.includes(req.source.vg)) return req.source.vg;
  return mapped;
}
