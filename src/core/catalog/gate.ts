/**
 * The trust rule for running a catalogue image: a clone is made of it only when it is both
 * endorsed (the last accepted list names it and has not expired: its cowstack_endorsed tag)
 * and approved by the site (a cowstack_approved tag on the repository VG). Both live in
 * LVM metadata, so every node decides alike. Images imported by hand carry no catalogue
 * tag and are not judged here: they work as before.
 */
import { refused } from '../../exec/errors.js';
import * as lvm from '../../tools/lvm.js';
import { syslogReq } from '../../tools/host.js';
import { runGuarded } from '../executor.js';
import { approvals, type ImageObj } from '../metadata.js';
import type { NodeSession } from '../node.js';

export interface Trust {
  /** Imported by `catalog sync` (false: by hand, not judged). */
  catalog: boolean;
  endorsed: boolean;
  approved: boolean;
}

export function trustOf(image: ImageObj, approved: ReadonlySet<string>, now: Date): Trust {
  const c = image.catalog;
  if (!c) return { catalog: false, endorsed: false, approved: false };
  return {
    catalog: true,
    endorsed: image.endorsedUntil !== undefined && image.endorsedUntil * 1000 > now.getTime(),
    approved: approved.has(`${c.name}:${c.version}`),
  };
}

export async function vgApprovals(ctx: NodeSession): Promise<Set<string>> {
  const vg = (await lvm.vgs(ctx.runner, ctx.vg, ctx.scope))[0];
  return approvals(vg?.tags ?? []);
}

/**
 * Refuses (exit 6) a clone of `root` (the image at the bottom of the parent's chain) unless
 * it is trusted. With force it goes ahead, and says so in the node's system log and in the
 * returned warning.
 */
export async function refuseUntrusted(
  ctx: NodeSession,
  root: ImageObj,
  clone: string,
  o: { force?: boolean; now?: Date } = {},
): Promise<string | undefined> {
  if (!root.catalog) return undefined;
  const t = trustOf(root, await vgApprovals(ctx), o.now ?? new Date());
  if (t.endorsed && t.approved) return undefined;
  const ref = `${root.catalog.name}@${root.catalog.version}`;
  const missing = [t.endorsed ? '' : 'not endorsed by a current list', t.approved ? '' : 'not approved by this site']
    .filter(Boolean)
    .join(' and ');
  const message = `catalogue image ${root.name} (${ref}) is ${missing}`;
  if (!o.force)
    throw refused(
      `${message}: refusing to clone it`,
      t.approved
        ? 'run cowstack catalog sync with a current list, or --force (logged)'
        : `cowstack catalog approve ${ref}, or --force (logged)`,
      { image: root.name, ...t },
    );
  const warning = `${message}: clone ${clone} created anyway (--force)`;
  await runGuarded(ctx, [{ title: 'log the forced clone', req: syslogReq(warning) }]);
  return warning;
}
