/** udevadm adapter: wait for udev to finish creating /dev links after a change. */
import type { RootProgram, RunRequest } from '../exec/types.js';
import { bin } from './program.js';

export const settleReq = (timeoutSeconds = 30): RunRequest => ({
  argv: ['udevadm', 'settle', `--timeout=${timeoutSeconds}`],
  kind: 'read', // waits only; changes nothing, so it also runs under --dry-run
  root: true,
  allowFailure: true,
  timeout: 'iscsi',
});

/** Re-read the udev rules (after installing cowstack's). install runs as root: no sudo. */
export const reloadRulesReq = (): RunRequest => ({ argv: ['udevadm', 'control', '--reload'], kind: 'write' });

/** doctor's probe: prints the udev version. */
export const versionReq = (): RunRequest => ({
  argv: ['udevadm', '--version'],
  kind: 'read',
  root: true,
  allowFailure: true,
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [bin('udevadm', 'udev', 'wait for /dev links (settle)')];
