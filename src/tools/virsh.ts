/**
 * virsh adapter (libvirt's client), for the VMM migrate action: list a domain's disks, migrate
 * it live and leave the destination paused, resume it. virsh runs as the caller (oneadmin is in
 * the libvirt group on OpenNebula hosts), never through sudo: no root program is declared.
 */
import type { RunRequest } from '../exec/types.js';

/** OpenNebula's KVM driver default (LIBVIRT_URI in vmm/kvm/kvmrc). */
export const DEFAULT_URI = 'qemu:///system';

export const domblklistReq = (uri: string, domain: string): RunRequest => ({
  argv: ['virsh', '-c', uri, 'domblklist', '--details', domain],
  kind: 'read',
  timeout: 'query',
});

/**
 * Live migration to `destUri`, the destination left paused (--suspend: qemu's -incoming -S)
 * so that nothing runs there until the disks are handed over. The source qemu exits once it
 * succeeded (libvirt's default without --persistent/--undefinesource changes nothing else).
 * `options`: the site's (kvmrc MIGRATE_OPTIONS), already validated (vmm/migrateOptions.ts).
 */
export const migrateReq = (
  uri: string,
  domain: string,
  destUri: string,
  options: readonly string[] = [],
): RunRequest => ({
  argv: ['virsh', '-c', uri, 'migrate', '--live', '--suspend', ...options, domain, destUri],
  kind: 'write',
  timeout: 'data',
  allowFailure: true,
});

export const resumeReq = (uri: string, domain: string): RunRequest => ({
  argv: ['virsh', '-c', uri, 'resume', domain],
  kind: 'write',
  timeout: 'change',
  allowFailure: true,
});

/** The URI virsh migrates to: the destination's system libvirtd over ssh, as OpenNebula's own action does. */
export const destinationUri = (host: string): string => `qemu+ssh://${host}/system`;

export interface BlockDevice {
  /** file, block, network, volume... */
  type: string;
  /** disk, cdrom, floppy, lun */
  device: string;
  /** The guest's name for it (vda, hda). */
  target: string;
  /** The host path; undefined for an empty drive ("-"). */
  source?: string;
}

/**
 * `virsh domblklist --details` prints a header, a rule, then one row per drive:
 *  Type   Device   Target   Source
 * ------------------------------------------------
 *  file   disk     vda      /var/lib/one//datastores/0/42/disk.0
 *  file   cdrom    hda      -
 * The source is the rest of the row (a path may hold spaces).
 */
export function parseDomblklist(stdout: string): BlockDevice[] {
  const lines = stdout.split('\n');
  const rule = lines.findIndex((l) => /^-{3,}\s*$/.test(l.trim()));
  return lines.slice(rule + 1).flatMap((line) => {
    const m = /^\s*(\S+)\s+(\S+)\s+(\S+)\s+(.*\S)\s*$/.exec(line);
    if (!m) return [];
    const [, type, device, target, source] = m;
    return [{ type: type!, device: device!, target: target!, ...(source === '-' ? {} : { source }) }];
  });
}
