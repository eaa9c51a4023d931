/** Plan steps on one repository LV (activation under the cluster lock) and how it is named in them. */
import * as lvm from '../tools/lvm.js';
import type { CowObj } from './metadata.js';
import type { Step } from './plan.js';

export const lvRef = (o: CowObj): string => `${o.vg}/${o.name}`;

export const activateStep = (o: CowObj, mode: 'shared' | 'exclusive', scope: lvm.LvmScope = {}): Step => ({
  title: `activate ${lvRef(o)} ${mode}`,
  req: lvm.activateReq(lvRef(o), mode, scope),
  undo: [lvm.deactivateReq(lvRef(o), scope)],
});
export const deactivateStep = (o: CowObj, scope: lvm.LvmScope = {}): Step => ({
  title: `deactivate ${lvRef(o)}`,
  req: lvm.deactivateReq(lvRef(o), scope),
  deactivates: lvRef(o),
});
