/**
 * Starting the lock daemons. On a systemd host the units are enabled and started; on a
 * host without systemd (containers, the testbed's minimal init) the daemons are started
 * directly: both sanlock and lvmlockd daemonize by themselves.
 */
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { bin, sbin, SETUP } from './program.js';

export async function hasSystemd(runner: Runner): Promise<boolean> {
  const r = await runner.run({ argv: ['test', '-d', '/run/systemd/system'], kind: 'read', allowFailure: true });
  return r.exitCode === 0;
}

export function startDaemonReq(
  program: 'sanlock' | 'lvmlockd' | 'iscsid',
  systemd: boolean,
  lockType = 'sanlock',
): RunRequest {
  if (systemd)
    return {
      argv: ['systemctl', 'enable', '--now', `${program}.service`],
      kind: 'write',
      root: true,
      timeout: 'change',
      title: `start ${program}`,
    };
  const direct: Record<string, string[]> = {
    sanlock: ['sanlock', 'daemon'],
    lvmlockd: ['lvmlockd', '--gl-type', lockType],
    iscsid: ['iscsid'],
  };
  return { argv: direct[program]!, kind: 'write', root: true, timeout: 'change', title: `start ${program}` };
}

/** `sanlock daemon` is sanlock.ts's program; these only start daemons. */
export const ROOT_PROGRAMS: readonly RootProgram[] = [
  sbin('lvmlockd', 'lvm2-lockd', 'start lvmlockd on a host without systemd', SETUP),
  sbin('iscsid', 'open-iscsi', 'start iscsid on a host without systemd', SETUP),
  bin('systemctl', 'systemd', 'enable --now sanlock/lvmlockd/iscsid', SETUP),
];
