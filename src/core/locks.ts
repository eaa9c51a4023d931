/**
 * Turning the lock manager's refusal into cowstack's lock-conflict error, naming the LV
 * and, where sanlock's on-disk leases tell, the host that holds it.
 */
import { CommandError, CowstackError, EXIT } from '../exec/errors.js';
import type { Runner } from '../exec/types.js';
import * as lvm from '../tools/lvm.js';
import * as sanlock from '../tools/sanlock.js';
import { hostMapFromTags } from './hostMap.js';

const LOCK_REFUSED = /locked by other host|Failed to lock logical volume|lock (is )?held by another host|LV locked by|lock conflict/i;

export const isLockRefusal = (e: unknown): e is CommandError => e instanceof CommandError && LOCK_REFUSED.test(e.stderr);

export interface LockHolder {
  hostId: number;
  host?: string;
}

/** Reads the VG's sanlock leases (lvmlock LV, active while the lockspace runs) to find the owner of an LV's lease. */
export async function findLockHolder(runner: Runner, vg: string, lvUuid: string): Promise<LockHolder | undefined> {
  const dump = await runner.run(sanlock.directDumpReq(`/dev/mapper/${vg.replace(/-/g, '--')}-lvmlock`));
  if (dump.exitCode !== 0) return undefined;
  const bare = lvUuid.replace(/-/g, '');
  const row = sanlock
    .parseDirectDump(dump.stdout)
    .find((r) => (r.resource === lvUuid || r.resource === bare) && r.owner > 0 && r.timestamp > 0);
  if (!row) return undefined;
  const vgInfo = (await lvm.vgs(runner, vg))[0];
  return { hostId: row.owner, host: hostMapFromTags(vgInfo?.tags ?? []).get(row.owner) };
}

/** Owners of every exclusive LV lease in the VG, by compact LV uuid (one sanlock dump). */
export async function leaseOwners(runner: Runner, vg: string, tags: string[]): Promise<Map<string, LockHolder>> {
  const dump = await runner.run(sanlock.directDumpReq(`/dev/mapper/${vg.replace(/-/g, '--')}-lvmlock`));
  const out = new Map<string, LockHolder>();
  if (dump.exitCode !== 0) return out;
  const names = hostMapFromTags(tags);
  for (const r of sanlock.parseDirectDump(dump.stdout)) {
    if (r.owner > 0 && r.timestamp > 0) out.set(r.resource.replace(/-/g, ''), { hostId: r.owner, host: names.get(r.owner) });
  }
  return out;
}

export async function lockConflict(runner: Runner, vg: string, lv: string, lvUuid: string, cause: CommandError): Promise<CowstackError> {
  const holder = await findLockHolder(runner, vg, lvUuid).catch(() => undefined);
  const who = holder ? ` (held by ${holder.host ? `${holder.host}, ` : ''}sanlock host_id ${holder.hostId})` : '';
  return new CowstackError(EXIT.LOCK_CONFLICT, `${vg}/${lv} is locked by another host${who}`, {
    hint: 'deactivate it on the holding host (cowstack deactivate), or wait for that host\'s lease to expire if it is dead',
    data: { vg, lv, uuid: lvUuid, holder, stderr: cause.stderr.trim() },
    cause,
  });
}
