/**
 * Every program cowstack runs as root, collected from the tools modules that spell them:
 * a module that builds a root request for a new program declares it in its own
 * ROOT_PROGRAMS, and sudoers/cowstack is checked against this list
 * (test/unit/deployment.test.ts). `doctor` and `target` use it to find a program's path.
 */
import type { RootProgram } from '../exec/types.js';
import * as aria2 from './aria2.js';
import * as blockData from './blockData.js';
import * as blockdev from './blockdev.js';
import * as cacheCheck from './cacheCheck.js';
import * as daemon from './daemon.js';
import * as dmsetup from './dmsetup.js';
import * as files from './files.js';
import * as flock from './flock.js';
import * as host from './host.js';
import * as iscsiadm from './iscsiadm.js';
import * as lio from './lio.js';
import * as lvm from './lvm.js';
import * as mktorrent from './mktorrent.js';
import * as sanlock from './sanlock.js';
import * as service from './service.js';
import * as staging from './staging.js';
import * as tgt from './tgt.js';
import * as udevadm from './udevadm.js';

export type { RootProgram } from '../exec/types.js';

/** The modules and what each declares, for a test that checks each module builds only its own. */
export const ROOT_PROGRAMS_BY_MODULE: Readonly<Record<string, readonly RootProgram[]>> = {
  aria2: aria2.ROOT_PROGRAMS,
  blockData: blockData.ROOT_PROGRAMS,
  blockdev: blockdev.ROOT_PROGRAMS,
  cacheCheck: cacheCheck.ROOT_PROGRAMS,
  daemon: daemon.ROOT_PROGRAMS,
  dmsetup: dmsetup.ROOT_PROGRAMS,
  files: files.ROOT_PROGRAMS,
  flock: flock.ROOT_PROGRAMS,
  host: host.ROOT_PROGRAMS,
  iscsiadm: iscsiadm.ROOT_PROGRAMS,
  lio: lio.ROOT_PROGRAMS,
  lvm: lvm.ROOT_PROGRAMS,
  mktorrent: mktorrent.ROOT_PROGRAMS,
  sanlock: sanlock.ROOT_PROGRAMS,
  service: service.ROOT_PROGRAMS,
  staging: staging.ROOT_PROGRAMS,
  tgt: tgt.ROOT_PROGRAMS,
  udevadm: udevadm.ROOT_PROGRAMS,
};

function collect(): readonly RootProgram[] {
  const byName = new Map<string, RootProgram>();
  for (const [module, programs] of Object.entries(ROOT_PROGRAMS_BY_MODULE))
    for (const p of programs) {
      // One sudoers rule per program: two declarations would disagree on its path or section.
      if (byName.has(p.name)) throw new Error(`root program ${p.name} is declared twice (again in tools/${module})`);
      byName.set(p.name, p);
    }
  return [...byName.values()];
}

export const ROOT_PROGRAMS: readonly RootProgram[] = collect();

/** The entry for an argv[0], or undefined when cowstack never runs it as root. */
export const rootProgram = (name: string): RootProgram | undefined => ROOT_PROGRAMS.find((p) => p.name === name);
