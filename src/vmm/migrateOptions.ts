/**
 * The site's extra options for `virsh migrate`, as OpenNebula's kvmrc gives them to its stock
 * action (MIGRATE_OPTIONS, one string such as "--unsafe" or "--p2p --tunnelled"). They become
 * argv elements, never shell text: each word must be an option cowstack knows to be harmless to
 * the hand-over, and a value is checked for its shape. Refused with the reason: what would copy
 * the disk through qemu (the COW is shared storage and is handed over, a copy would write into
 * the destination's error placeholder), an offline migration (no paused destination to hand
 * over to), and what cowstack already passes (--live, --suspend) or decides (the destination).
 */
import { usageError } from '../exec/errors.js';

/** Options without a value that change only how the memory moves. */
const FLAGS = new Set([
  '--p2p',
  '--tunnelled',
  '--unsafe',
  '--compressed',
  '--auto-converge',
  '--abort-on-error',
  '--parallel',
]);

/** Options with a value, each value's shape. */
const VALUED: Record<string, { shape: RegExp; what: string }> = {
  // Where qemu sends the memory (tcp://HOST:PORT), e.g. through a forwarded port.
  '--migrateuri': { shape: /^tcp:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?$/, what: 'tcp://HOST[:PORT]' },
  '--listen-address': { shape: /^[A-Za-z0-9.:-]+$/, what: 'an address or host name' },
  '--bandwidth': { shape: /^[1-9][0-9]{0,6}$/, what: 'MiB/s, a whole number' },
  '--parallel-connections': { shape: /^[1-9][0-9]?$/, what: 'a number from 1 to 99' },
};

const REFUSED: Record<string, string> = {
  '--copy-storage-all': 'copies the disk through qemu; a cowstack disk is shared and handed over, not copied',
  '--copy-storage-inc': 'copies the disk through qemu; a cowstack disk is shared and handed over, not copied',
  '--copy-storage-synchronous-writes': 'belongs to a disk copy, which a cowstack disk never needs',
  '--offline': 'an offline migration has no paused destination to hand the disks over to',
  '--live': 'cowstack always passes it',
  '--suspend': 'cowstack always passes it: the destination must stay paused until the disks are handed over',
  '--desturi': 'the destination is the host oned names',
};

const known = () => [...FLAGS, ...Object.keys(VALUED)].join(' ');

/**
 * "--p2p --migrateuri=tcp://10.0.2.2:5000 --bandwidth 100" -> the argv elements for virsh
 * migrate (values always as a separate element). Empty or blank: none.
 */
export function parseMigrateOptions(text: string): string[] {
  const words = text.split(/[ \t]+/).filter(Boolean);
  const out: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    const eq = word.indexOf('=');
    const name = eq > 0 ? word.slice(0, eq) : word;
    const bad = (why: string) =>
      usageError(`migrate option "${word}" (MIGRATE_OPTIONS "${text}") is refused: ${why}`, `allowed: ${known()}`);
    if (/[\n\r]/.test(word)) throw bad('a line break');
    if (REFUSED[name]) throw bad(REFUSED[name]);
    if (FLAGS.has(name)) {
      if (eq > 0) throw bad('it takes no value');
      out.push(name);
      continue;
    }
    const valued = VALUED[name];
    if (!valued) throw bad('not an option cowstack passes to virsh migrate');
    const value = eq > 0 ? word.slice(eq + 1) : words[++i];
    if (value === undefined || !valued.shape.test(value))
      throw bad(`its value ${value === undefined ? 'is missing' : `"${value}" is not ${valued.what}`}`);
    out.push(name, value);
  }
  // virsh refuses it too, but only after the connection to the destination: say it first.
  if (out.includes('--tunnelled') && !out.includes('--p2p'))
    throw usageError(
      `migrate options "${text}": --tunnelled needs --p2p`,
      'libvirt tunnels a peer-to-peer migration only',
    );
  if (out.includes('--tunnelled') && out.includes('--migrateuri'))
    throw usageError(
      `migrate options "${text}": --migrateuri has no use with --tunnelled`,
      'a tunnelled migration goes through the libvirt connection',
    );
  return out;
}
