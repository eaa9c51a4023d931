/**
 * OpenNebula VMM (KVM) action arguments, parsed and validated before anything runs. oned runs
 * remotes/vmm/kvm/migrate on the SOURCE host as `migrate DEPLOY_ID DEST_HOST [SRC_HOST VM_ID ...]`
 * (vmm/kvm/migrate execs `cowstack vmm -- migrate "$@"`). As with the TM arguments, every value
 * is hostile until it matches a narrow shape, and one shaped like an option is refused by
 * position before any other check. Arguments after VM_ID (later OpenNebula versions append
 * more) are checked for that only and otherwise ignored, as the stock action ignores them.
 */
import { usageError } from '../exec/errors.js';
import { validateHostName } from '../core/validate.js';
import { parseDeployId, parseId } from '../tm/args.js';

export const VMM_ACTIONS = ['migrate'] as const;

export interface VmmMigrateRequest {
  action: 'migrate';
  /** libvirt's domain name (one-<vm_id>). */
  deployId: string;
  destHost: string;
  /** oned's name of this (the source) host, when it passes it. */
  srcHost?: string;
  vmId?: number;
}

const host = (text: string, what: string): string => {
  try {
    return validateHostName(text);
  } catch {
    throw usageError(
      `${what} "${text}" is invalid: letters, digits, "-", "_" and "." only`,
      'this is what OpenNebula passes to the VMM driver; check the host names in OpenNebula',
    );
  }
};

export function parseVmmArgs(action: string, args: readonly string[]): VmmMigrateRequest {
  if (action !== 'migrate') throw usageError(`unknown VMM action "${action}"`, `one of: ${VMM_ACTIONS.join(', ')}`);
  args.forEach((arg, i) => {
    if (arg.startsWith('-'))
      throw usageError(
        `vmm ${action}: argument ${i + 1} "${arg}" looks like an option: no OpenNebula VMM argument starts with "-"`,
        'this is what OpenNebula passes to the VMM driver; check the VM and host names',
      );
  });
  if (args.length < 2)
    throw usageError(`vmm migrate takes DEPLOY_ID DEST_HOST [SRC_HOST VM_ID], got ${args.length} argument(s)`);
  const [deployId, destHost, srcHost, vmId] = args;
  return {
    action,
    deployId: parseDeployId(deployId),
    destHost: host(destHost!, 'destination host'),
    ...(srcHost !== undefined ? { srcHost: host(srcHost, 'source host') } : {}),
    ...(vmId !== undefined ? { vmId: parseId(vmId, 'VM id') } : {}),
  };
}
