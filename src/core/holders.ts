/** Who holds a device: dm/md holders from sysfs and processes from fuser + ps, for refusal messages. */
import type { Runner } from '../exec/types.js';
import { holders } from '../tools/files.js';
import * as host from '../tools/host.js';
import { settleReq } from '../tools/udevadm.js';

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

/**
 * Closing a device that was opened for writing makes udev probe it (blkid), which holds it
 * open for a moment. While `stillOpen` says so, wait for udev's queue and look again (up to
 * three times): costs nothing when the device is closed, and turns that race into a plain
 * no-op instead of a refusal. Returns the last state seen, to plan from.
 */
export async function lookAgainAfterUdev<S>(
  runner: Runner,
  state: S,
  stillOpen: (state: S) => boolean,
  reobserve: () => Promise<S>,
): Promise<S> {
  for (let attempt = 0; attempt < 3 && stillOpen(state); attempt++) {
    await runner.run(settleReq(10));
    state = await reobserve();
  }
  return state;
}
