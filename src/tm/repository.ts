/**
 * Which repository VG a TM action acts in (README "Growing a site: several repositories"):
 * the VG of the system datastore the VM's directory is in (`.../datastores/<DS_ID>/<VM_ID>`),
 * as config `repositories` maps it. The path is used rather than the DS_ID argument because
 * for clone, ln, mvds and cpds oned passes the image datastore's id there; the VM's disks
 * (its COWs, volatile disks and snapshots) all live in the system datastore's VG.
 */
import { refused } from '../exec/errors.js';
import type { TmRequest } from './args.js';

/** The system datastore a request acts in; undefined for activate (every datastore on the host). */
export function systemDatastore(req: TmRequest): number | undefined {
  if (req.action === 'activate') return undefined;
  if ('target' in req) return req.target.dsId; // delete, resize, snapshots
  if (req.action === 'mvds' || req.action === 'cpds' || req.action === 'mv') return req.src.dsId;
  // clone, ln, mkimage, mkswap, context: the new disk's path
  if (req.action === 'clone' || req.action === 'ln' || 'sizeMb' in req || req.action === 'context') {
    return req.dst.dsId;
  }
  return req.dsId; // migration hooks, backups and monitor: their argument is the system datastore
}

/**
 * The VG of the request's system datastore (undefined for activate). A move between system
 * datastores of two repositories is refused here, before anything runs: it would be a copy of
 * every disk and its image lineage, which the TM does not do.
 */
export function repositoryOf(req: TmRequest, vgOf: (dsId: number) => string): string | undefined {
  const ds = systemDatastore(req);
  if (ds === undefined) return undefined;
  const vg = vgOf(ds);
  if (req.action === 'mv' && vgOf(req.dst.dsId) !== vg)
    throw refused(
      `tm mv of VM ${req.vmId} from datastore ${ds} (VG ${vg}) to datastore ${req.dst.dsId} ` +
        `(VG ${vgOf(req.dst.dsId)}) would move its disks between repositories`,
      'migrate the VM within system datastores of one repository (see config repositories), ' +
        'or save its disks as images and copy them: cowstack image copy',
    );
  return vg;
}
