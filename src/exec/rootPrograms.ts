/**
 * Every program cowstack runs as root (a RunRequest with `root: true`, or an LVM command
 * built by lvmRequest). The one list that sudoers/cowstack is checked against
 * (test/unit/deployment.test.ts) and that `doctor` can use to check a node: a new root
 * program that is not added here, and to the sudoers file, fails a unit test.
 *
 * `path` is where Debian 12 (merged /usr) has the program: what `command -v` prints and
 * what sudo resolves the bare name to through its secure_path. dpkg still records some of
 * them under /sbin or /bin, which are symlinks to /usr/sbin and /usr/bin there; sudo
 * compares by inode, so the two spellings are the same rule.
 */

export interface RootProgram {
  /** The argv[0] cowstack passes (sudo resolves it through secure_path). */
  name: string;
  /** Full path on Debian 12: the path written in sudoers/cowstack. */
  path: string;
  /** Debian package that provides it. */
  pkg: string;
  /** What cowstack runs it for (the sudoers rule restricts it to that). */
  use: string;
  /**
   * Only `cowstack cluster init` / `cluster join` need it. sudoers/cowstack grants these in
   * a separate rule (COWSTACK_SETUP) that a site can drop once its nodes are set up.
   */
  setupOnly?: boolean;
  /**
   * Only the repository server runs it (cowstack target ...). sudoers/cowstack grants these
   * in COWSTACK_SERVER, which nodes do not need.
   */
  serverOnly?: boolean;
}

const lvm = (name: string, use: string, setupOnly?: boolean): RootProgram => ({
  name,
  path: `/usr/sbin/${name}`,
  pkg: 'lvm2',
  use,
  ...(setupOnly ? { setupOnly } : {}),
});

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  // LVM: the repository VG and its LVs.
  lvm('lvs', 'report LVs (json)'),
  lvm('vgs', 'report VGs (json)'),
  lvm('pvs', 'report PVs (json)'),
  lvm('lvcreate', 'create image and COW LVs'),
  lvm('lvchange', 'activate/deactivate/refresh LVs, tags, read-only'),
  lvm('lvremove', 'remove image and COW LVs'),
  lvm('lvrename', 'rename images'),
  lvm('lvextend', 'grow COW LVs'),
  lvm('vgchange', 'start the lockspace, register host ids as VG tags'),
  lvm('lvmconfig', 'read one lvm.conf setting (doctor)'),
  lvm('lvm', 'version probe (doctor)'),
  lvm('vgcreate', 'create the shared repository VG (cluster init)', true),
  lvm('vgremove', 'undo a half-made cluster init', true),
  { name: 'lvmlockctl', path: '/usr/sbin/lvmlockctl', pkg: 'lvm2-lockd', use: 'is lvmlockd up (--info)' },
  {
    name: 'lvmlockd',
    path: '/usr/sbin/lvmlockd',
    pkg: 'lvm2-lockd',
    use: 'start lvmlockd on a host without systemd',
    setupOnly: true,
  },
  {
    name: 'sanlock',
    path: '/usr/sbin/sanlock',
    pkg: 'sanlock',
    use: 'lockspaces, lease owners (client status/gets/host_status, direct dump)',
  },
  // device-mapper and block devices.
  {
    name: 'dmsetup',
    path: '/usr/sbin/dmsetup',
    pkg: 'dmsetup',
    use: 'map/unmap cowstack snapshot devices, read tables and status',
  },
  { name: 'blockdev', path: '/usr/sbin/blockdev', pkg: 'util-linux', use: 'device sizes, flush buffers' },
  {
    name: 'blkid',
    path: '/usr/sbin/blkid',
    pkg: 'util-linux',
    use: 'refuse a non-empty LUN (cluster init)',
    setupOnly: true,
  },
  {
    name: 'wipefs',
    path: '/usr/sbin/wipefs',
    pkg: 'util-linux',
    use: 'wipe the LUN with cluster init --force',
    setupOnly: true,
  },
  { name: 'dd', path: '/usr/bin/dd', pkg: 'coreutils', use: 'zero a COW header, import/export/flatten image data' },
  { name: 'sha256sum', path: '/usr/bin/sha256sum', pkg: 'coreutils', use: 'checksum a sealed image' },
  { name: 'fuser', path: '/usr/bin/fuser', pkg: 'psmisc', use: 'name the processes holding a device open' },
  { name: 'udevadm', path: '/usr/bin/udevadm', pkg: 'udev', use: 'wait for /dev links (settle)' },
  {
    name: 'mkswap',
    path: '/usr/sbin/mkswap',
    pkg: 'util-linux',
    use: 'format a volatile swap disk (tm mkswap/mkimage)',
  },
  {
    name: 'mkfs',
    path: '/usr/sbin/mkfs',
    pkg: 'util-linux',
    use: 'format a volatile disk with a file system (tm mkimage)',
  },
  // Small files: the node-local journal, lvm.conf/lvmlocal.conf, sysfs.
  {
    name: 'cat',
    path: '/usr/bin/cat',
    pkg: 'coreutils',
    use: 'read lvm.conf, lvmlocal.conf, journal entries, sysfs dm names',
  },
  {
    name: 'install',
    path: '/usr/bin/install',
    pkg: 'coreutils',
    use: 'write journal entries without the node lock, make its directory (and lvm.conf at set-up) from stdin',
  },
  { name: 'rm', path: '/usr/bin/rm', pkg: 'coreutils', use: 'remove finished journal entries' },
  {
    name: 'flock',
    path: '/usr/bin/flock',
    pkg: 'util-linux',
    use: "hold the node lock for an operation while tee appends its records to the VG's journal log",
  },
  { name: 'tail', path: '/usr/bin/tail', pkg: 'coreutils', use: "read a journal log's end to name the lock holder" },
  {
    name: 'mv',
    path: '/usr/bin/mv',
    pkg: 'coreutils',
    use: 'put a rewritten lvm.conf/lvmlocal.conf in place',
    setupOnly: true,
  },
  { name: 'cp', path: '/usr/bin/cp', pkg: 'coreutils', use: 'back up lvm.conf/lvmlocal.conf once', setupOnly: true },
  // iSCSI.
  {
    name: 'iscsiadm',
    path: '/usr/sbin/iscsiadm',
    pkg: 'open-iscsi',
    use: 'node records, login/logout, rescan, sessions',
  },
  {
    name: 'iscsid',
    path: '/usr/sbin/iscsid',
    pkg: 'open-iscsi',
    use: 'start iscsid on a host without systemd',
    setupOnly: true,
  },
  // Daemons and doctor's version probes.
  {
    name: 'systemctl',
    path: '/usr/bin/systemctl',
    pkg: 'systemd',
    use: 'enable --now sanlock/lvmlockd/iscsid',
    setupOnly: true,
  },
  { name: 'cache_check', path: '/usr/sbin/cache_check', pkg: 'thin-provisioning-tools', use: 'version probe (doctor)' },
  // The repository server's iSCSI target (cowstack target ...).
  {
    name: 'targetcli',
    path: '/usr/bin/targetcli',
    pkg: 'targetcli-fb',
    use: 'LIO backstores, targets, LUNs, ACLs, saveconfig',
    serverOnly: true,
  },
  {
    name: 'tee',
    path: '/usr/bin/tee',
    pkg: 'coreutils',
    use: 'append a journal record without the node lock; write a CHAP user/secret into an LIO ACL from stdin',
  },
  { name: 'tgtadm', path: '/usr/sbin/tgtadm', pkg: 'tgt', use: 'tgt targets, LUNs, initiator ACLs', serverOnly: true },
  {
    name: 'tgt-admin',
    path: '/usr/sbin/tgt-admin',
    pkg: 'tgt',
    use: 'dump the running tgt configuration (target save)',
    serverOnly: true,
  },
  {
    name: 'truncate',
    path: '/usr/bin/truncate',
    pkg: 'coreutils',
    use: 'create a sparse backing file for a tgt file LUN',
    
  },
];

/** The entry for an argv[0], or undefined when cowstack never runs it as root. */
export const rootProgram = (name: string): RootProgram | undefined => ROOT_PROGRAMS.find((p) => p.name === name);
