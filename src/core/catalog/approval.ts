/**
 * The site's approval of catalogue image versions: a cowstack_approved:NAME:VERSION tag on
 * the repository VG. A VG tag, not a file, because approval is cluster-wide truth that
 * must exist before the image's LV does (sync imports only what is approved) and must be
 * the same on every node that may clone it; it changes atomically with the VG metadata,
 * under the VG lock, and only root (through LVM) can write it.
 */
import { notFound, usageError } from '../../exec/errors.js';
import * as lvm from '../../tools/lvm.js';
import { runGuarded } from '../executor.js';
import { approvedTag } from '../metadata.js';
import type { NodeSession } from '../node.js';
import { vgApprovals } from './gate.js';
import { parseRef } from './list.js';
import { readAllAccepted } from './state.js';

export interface ApprovalResult {
  name: string;
  versions: string[];
  action: 'approved' | 'revoked' | 'none';
}

/** NAME@VERSION, or NAME alone when the lists this node accepted endorse exactly one version of it. */
async function endorsedVersion(ctx: NodeSession, name: string, version: string | undefined): Promise<string> {
  const now = Date.now();
  const found = new Set<string>();
  for (const a of await readAllAccepted(ctx.runner)) {
    if (Date.parse(a.list.expires) <= now) continue;
    for (const i of a.list.images) if (i.name === name && (!version || i.version === version)) found.add(i.version);
  }
  const what = version ? `${name}@${version}` : name;
  if (found.size === 0)
    throw notFound(
      `${what} is in no current list this node accepted`,
      'cowstack catalog sync LIST first (approval picks from endorsed images); catalog list shows them',
    );
  if (found.size > 1)
    throw usageError(`${name} is endorsed in versions ${[...found].join(', ')}`, `name one: ${name}@VERSION`);
  return [...found][0]!;
}

export async function approve(ctx: NodeSession, ref: string): Promise<ApprovalResult> {
  const { name, version } = parseRef(ref);
  const v = await endorsedVersion(ctx, name, version);
  if ((await vgApprovals(ctx)).has(`${name}:${v}`)) return { name, versions: [v], action: 'none' };
  await runGuarded(ctx, [
    { title: `approve ${name}@${v}`, req: lvm.tagVgReq(ctx.vg, { add: [approvedTag(name, v)] }, ctx.scope) },
  ]);
  return { name, versions: [v], action: 'approved' };
}

/** Without a version, every approved version of NAME. What sync imported stays until it prunes it. */
export async function revoke(ctx: NodeSession, ref: string): Promise<ApprovalResult> {
  const { name, version } = parseRef(ref);
  const versions = [...(await vgApprovals(ctx))]
    .map((k) => k.split(':') as [string, string])
    .filter(([n, v]) => n === name && (!version || v === version))
    .map(([, v]) => v);
  if (!versions.length) return { name, versions: version ? [version] : [], action: 'none' };
  const del = versions.map((v) => approvedTag(name, v));
  await runGuarded(ctx, [
    { title: `revoke ${name}@${versions.join(',')}`, req: lvm.tagVgReq(ctx.vg, { del }, ctx.scope) },
  ]);
  return { name, versions, action: 'revoked' };
}
