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
import { approvedTag, TAG } from '../metadata.js';
import type { NodeSession } from '../node.js';
import { vgApprovals } from './gate.js';
import { parseRef } from './list.js';
import { readAllAccepted } from './state.js';
import type { Accepted } from './verify.js';

export interface ApprovalResult {
  name: string;
  versions: string[];
  action: 'approved' | 'revoked' | 'none';
}

/** NAME@VERSION, or NAME alone when the lists this node accepted endorse exactly one version of it. */
function endorsedVersion(accepted: readonly Accepted[], name: string, version: string | undefined): string {
  const now = Date.now();
  const found = new Set<string>();
  for (const a of accepted) {
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

/** Every image named is checked before the one VG metadata change that approves them all. */
export async function approve(ctx: NodeSession, refs: readonly string[]): Promise<ApprovalResult[]> {
  const parsed = refs.map(parseRef);
  const accepted = await readAllAccepted(ctx.runner);
  const wanted = parsed.map(({ name, version }) => ({ name, version: endorsedVersion(accepted, name, version) }));
  const have = await vgApprovals(ctx);
  const add = [
    ...new Set(wanted.filter((w) => !have.has(`${w.name}:${w.version}`)).map((w) => approvedTag(w.name, w.version))),
  ];
  if (add.length)
    await runGuarded(ctx, [
      {
        title: `approve ${wanted.map((w) => `${w.name}@${w.version}`).join(', ')}`,
        req: lvm.tagVgReq(ctx.vg, { add }, ctx.scope),
      },
    ]);
  return wanted.map((w) => ({
    name: w.name,
    versions: [w.version],
    action: add.includes(approvedTag(w.name, w.version)) ? 'approved' : 'none',
  }));
}

/** NAME alone: every approved version of it. What sync imported stays until it prunes it. */
export async function revoke(ctx: NodeSession, refs: readonly string[]): Promise<ApprovalResult[]> {
  const parsed = refs.map(parseRef);
  const have = [...(await vgApprovals(ctx))].map((k) => k.split(':') as [string, string]);
  const results: ApprovalResult[] = parsed.map(({ name, version }) => {
    const versions = have.filter(([n, v]) => n === name && (!version || v === version)).map(([, v]) => v);
    return versions.length
      ? { name, versions, action: 'revoked' }
      : { name, versions: version ? [version] : [], action: 'none' };
  });
  const del = [
    ...new Set(
      results.filter((r) => r.action === 'revoked').flatMap((r) => r.versions.map((v) => approvedTag(r.name, v))),
    ),
  ];
  if (del.length)
    await runGuarded(ctx, [
      {
        title: `revoke ${del.map((t) => t.slice(TAG.approved.length)).join(', ')}`,
        req: lvm.tagVgReq(ctx.vg, { del }, ctx.scope),
      },
    ]);
  return results;
}
