/**
 * The activation primitive: an LV active exclusively (one writer, enforced by the cluster
 * lock) or shared (read-only users on many hosts). Already-active LVs are refreshed so a
 * node never keeps a stale mapping after another node changed the LV (Proxmox's lesson).
 */
import { notFound, refused } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import { holders } from '../tools/files.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import { runGuarded } from './executor.js';
import type { NodeSession } from './node.js';
import { validateLvName, validateVgName } from './validate.js';

export type ActivationMode = 'exclusive' | 'shared';

export interface ActivationResult {
  vg: string;
  lv: string;
  uuid: string;
  mode: ActivationMode | 'inactive';
  action: 'activated' | 'refreshed' | 'deactivated' | 'none';
  device: string;
}

async function mustFind(runner: Runner, vg: string, lv: string, scope: lvm.LvmScope): Promise<lvm.LvInfo> {
  validateVgName(vg);
  validateLvName(lv);
  const found = await lvm.findLv(runner, vg, lv, scope);
  const info = found?.activeLocally ? sanlock.withLockModes([found], await sanlock.lvLockModes(runner))[0] : found;
  if (!info) throw notFound(`logical volume ${vg}/${lv} does not exist`, `list them with: lvs ${vg}`, { vg, lv });
  return info;
}

export async function activate(ctx: NodeSession, lv: string, mode: ActivationMode): Promise<ActivationResult> {
  const { runner, vg } = ctx;
  const scope = ctx.scope ?? {};
  const info = await mustFind(runner, vg, lv, scope);
  const base = { vg, lv, uuid: info.uuid, mode, device: `/dev/${vg}/${lv}` } as const;
  if (info.activeLocally) {
    const isExclusive = info.activeExclusively;
    if ((mode === 'exclusive') !== isExclusive) {
      throw refused(
        `${vg}/${lv} is already active ${isExclusive ? 'exclusively' : 'shared'} on this host; ` +
          `refusing to switch to ${mode}`,
        `deactivate it first (cowstack deactivate ${vg}/${lv}) when nothing uses it`,
        { vg, lv },
      );
    }
    await runGuarded(ctx, [{ title: `refresh ${vg}/${lv}`, req: lvm.refreshReq(`${vg}/${lv}`, scope) }]);
    return { ...base, action: 'refreshed' };
  }
  const step = { title: `activate ${vg}/${lv} ${mode}`, req: lvm.activateReq(`${vg}/${lv}`, mode, scope) };
  await runGuarded(ctx, [step], { vg, name: lv, uuid: info.uuid });
  return { ...base, action: 'activated' };
}

export async function deactivate(
  ctx: NodeSession,
  lv: string,
  opts: { force?: boolean } = {},
): Promise<ActivationResult> {
  const { runner, vg } = ctx;
  const scope = ctx.scope ?? {};
  const info = await mustFind(runner, vg, lv, scope);
  const base = { vg, lv, uuid: info.uuid, mode: 'inactive' as const, device: `/dev/${vg}/${lv}` };
  if (!info.activeLocally) return { ...base, action: 'none' };
  const users = await holders(runner, info.dmPath || `/dev/${vg}/${lv}`);
  if ((info.open || users.length) && !opts.force) {
    const who = users.length ? `used by ${users.map((h) => h.name).join(', ')}` : 'open by a process';
    throw refused(
      `${vg}/${lv} is ${who}; refusing to deactivate`,
      'stop what uses it (unmap clones, stop the VM) or pass --force',
      { vg, lv, holders: users },
    );
  }
  await runGuarded(ctx, [{ title: `deactivate ${vg}/${lv}`, req: lvm.deactivateReq(`${vg}/${lv}`, scope) }]);
  return { ...base, action: 'deactivated' };
}
