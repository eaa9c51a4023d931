import type { Command } from 'commander';
import { install, REMOTES_DIR, type InstallResult } from '../../core/install.js';
import { usageError } from '../../exec/errors.js';
import { createContext } from '../context.js';

const text = (x: InstallResult): string => {
  const files = x.files.map((f) => `${f.path}: ${f.action}`).join('\n');
  if (!x.onedConf) return files;
  // The stanza goes to stdout with the rest: it is the part of the result the site acts on.
  return `${files}\n\noned.conf needs (then restart oned):\n${x.onedConf}`;
};

export function register(program: Command): void {
  program
    .command('install')
    .description(
      'put sudoers/cowstack (checked with visudo), the udev rule and a config in place on a node or the repository ' +
        "server, or the TM driver into OpenNebula's remotes on the front-end; run as root",
    )
    .option('--node', 'a hypervisor node: sudoers, udev rule for the VM disks, config')
    .option('--server', 'the repository server: sudoers (for cowstack target), config')
    .option(
      '--frontend',
      'the OpenNebula front-end: tm/cowstack, datastore/cowstack and vmm/kvm/migrate (stock one kept as ' +
        "migrate.stock) into the remotes, config; prints oned.conf's stanza",
    )
    .option('--remotes <dir>', `--frontend: OpenNebula's remotes directory (default ${REMOTES_DIR})`)
    .option('--user <name...>', 'service user(s) for sudoers; the first also owns the VM disks (udev)', ['oneadmin'])
    .option('--vg <name>', 'repository VG written into a new config (an existing config is kept)')
    .option('--from <dir>', 'directory with sudoers/, cluster-conf/ and tm/ (default: this cowstack package)')
    .action(async (o, cmd: Command) => {
      const roles = (['node', 'server', 'frontend'] as const).filter((r) => o[r]);
      if (roles.length !== 1)
        throw usageError(
          roles.length
            ? `say one of --node, --server, --frontend, not --${roles.join(' and --')}`
            : 'say --node, --server or --frontend',
          '--node on each hypervisor, --server on the repository server, --frontend on the OpenNebula front-end',
        );
      if (o.remotes !== undefined && roles[0] !== 'frontend')
        throw usageError(`--remotes "${o.remotes}" is for --frontend only`);
      const ctx = createContext(cmd);
      const r = await install(ctx.op(o.vg), { role: roles[0]!, users: o.user, from: o.from, remotes: o.remotes });
      await ctx.finish(r, text);
    });
}
