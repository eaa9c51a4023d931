/** Shorthands for the ROOT_PROGRAMS each tools module declares. */
import type { RootProgram } from '../exec/types.js';

type Scope = Pick<RootProgram, 'setupOnly' | 'serverOnly'>;

const at =
  (dir: string) =>
  (name: string, pkg: string, use: string, scope: Scope = {}): RootProgram => ({
    name,
    path: `${dir}/${name}`,
    pkg,
    use,
    ...scope,
  });

/** A program Debian 12 installs in /usr/sbin. */
export const sbin = at('/usr/sbin');
/** A program Debian 12 installs in /usr/bin. */
export const bin = at('/usr/bin');
export const SETUP: Scope = { setupOnly: true };
export const SERVER: Scope = { serverOnly: true };
