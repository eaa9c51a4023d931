/**
 * A real libvirt (Debian 12's libvirtd 9.0) on the testbed nodes, for the VMM migrate action:
 * the daemons started by hand (the guests have no init system), the nodes reaching each other's
 * sshd as `nodeN` for qemu+ssh:// (through 10.0.2.2 and the host's forwards, nothing else), and
 * a transient no-OS domain whose one disk is an OpenNebula-style VM directory link to a cowstack
 * device. Monitor commands (HMP qemu-io) go through `virsh qemu-monitor-command --hmp`.
 */
import type { Testbed } from '../testbed/index.js';

/** OpenNebula's DATASTORE_LOCATION; the disk is <ds>/<system ds id>/<vm id>/disk.<disk id>. */
export const DATASTORES = '/var/lib/one/datastores';
const KEY = '/root/.ssh/id_cowstack_testbed';

/**
 * qemu.conf for the testbed only. security_driver "none": the guest kernel has no AppArmor
 * profiles for libvirt loaded (no init system ran apparmor_parser) and this is no SELinux host.
 * user/group root and dynamic_ownership 0: the DAC driver would chown the cowstack device to
 * libvirt-qemu and back on each host, and the VM runs as root like every other testbed process
 * (an OpenNebula node runs it as oneadmin, which the udev rules of its packages give the disks).
 * cgroup_controllers empty: nothing mounts a cgroup hierarchy in the guests (no systemd).
 * stdio_handler "file": qemu's log goes straight to /var/log/libvirt/qemu (no virtlogd socket
 * needed; virtlogd is started anyway, as on a real node).
 */
const QEMU_CONF = [
  'security_driver = "none"',
  'user = "root"',
  'group = "root"',
  'dynamic_ownership = 0',
  'cgroup_controllers = [ ]',
  'stdio_handler = "file"',
  '',
].join('\n');

/** Every node: qemu.conf, ssh to the other nodes by name, virtlogd and libvirtd (idempotent). */
export async function startLibvirt(tb: Testbed, nodes: string[]): Promise<void> {
  const key = `${tb.stateDir}/id_ed25519`;
  const sshConf = tb.nodes
    .map(
      (n) =>
        `Host ${n.name}\n  HostName 10.0.2.2\n  Port ${n.sshPort}\n  User root\n  IdentityFile ${KEY}\n` +
        '  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n',
    )
    .join('');
  for (const node of nodes) {
    await tb.copyTo(node, key, KEY);
    const script = [
      'set -e',
      `chmod 600 ${KEY}`,
      `cat > /root/.ssh/config <<'EOF'\n${sshConf}EOF`,
      'mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt',
      // libvirtd resolves its built-in default user before it reads qemu.conf and stops when
      // that user is missing; libvirt-daemon-system's postinst (not installed: it brings the
      // systemd units) creates it.
      'getent passwd libvirt-qemu >/dev/null || useradd --system --user-group --no-create-home ' +
        '--home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu',
      `cat > /etc/libvirt/qemu.conf <<'EOF'\n${QEMU_CONF}EOF`,
      'pgrep -x virtlogd >/dev/null || virtlogd -d',
      'pgrep -x libvirtd >/dev/null || libvirtd -d',
      'for i in $(seq 360); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; sleep 0.5; done',
      'virsh -c qemu:///system version',
    ].join('\n');
    const r = await tb.sh(node, script);
    if (r.exitCode !== 0) throw new Error(`${node}: libvirt did not start: ${r.stdout}${r.stderr}`);
  }
}

/** The domain XML: TCG, 32 MiB, no OS (SeaBIOS finds nothing to boot and waits), one virtio disk. */
export const domainXml = (name: string, disk: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='threads'/>
      <source dev='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;

export const virsh = (tb: Testbed, node: string, args: string[]) =>
  tb.ssh(node, ['virsh', '-c', 'qemu:///system', ...args]);

/** An HMP line on the domain's monitor; throws on a failure or on anything qemu-io prints (its errors). */
export async function hmpLine(tb: Testbed, node: string, domain: string, line: string): Promise<void> {
  const r = await virsh(tb, node, ['qemu-monitor-command', domain, '--hmp', line]);
  if (r.exitCode !== 0 || r.stdout.trim())
    throw new Error(`${node}: ${domain}: ${line}: exit ${r.exitCode}: ${r.stdout}${r.stderr}`);
}
