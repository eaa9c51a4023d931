/** Who holds a device: dm/md holders from sysfs and processes from fuser + ps, for refusal messages. */
import type { Runner } from '../exec/types.js';
import { holders } from '../tools/files.js';
import * as host from '../tools/host.js';

export async function whoHolds(runner: Runner, device: string): Promise<string[]> {
  const out = (await holders(runner, device)).map((h) => `device ${h.name}`);
  // fuser prints the pids on stdout (its decorations go to stderr); exit 1 = nobody.
  const f = await runner.run(host.openersReq(device));
  const pids = f.stdout
    .split(/\s+/)
    .map((p) => p.replace(/\D/g, ''))
    .filter(Boolean);
  if (!pids.length) return out;
  const ps = await runner.run(host.processesReq(pids));
  for (const line of ps.stdout.split('\n')) {
    const [pid, user, ...comm] = line.trim().split(/\s+/);
    if (pid && comm.length) out.push(`process ${comm.join(' ')} (pid ${pid}, user ${user})`);
  }
  return out;
}
