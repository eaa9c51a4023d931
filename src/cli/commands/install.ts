import type { Command } from 'commander';
import { install, type InstallResult } from '../../core/install.js';
import { usageError } from '../../exec/errors.js';
import { createContext } from '../context.js';

export function register(program: Command): void {
  program
    .command('install')
    .description(
      'put sudoers/cowstack (checked with visudo), the udev rule and a config in place on a node or the repository ' +
        'server; run as root',
    )
    .option('--node', 'a hypervisor node: sudoers, udev rule for the VM disks, config')
    .option('--server', 'the repository server: sudoers (for cowstack target), config')
    .option('--user <name...>', 'service user(s) for sudoers; the first also owns the VM disks (udev)', ['oneadmin'])
    .option('--vg <name>', 'repository VG written into a new config (an existing config is kept)')
    .option('--from <dir>', 'directory with sudoers/ and cluster-conf/ (default: this cowstack package)')
    .action(async (o, cmd: Command) => {
      if (Boolean(o.node) === Boolean(o.server))
        throw usageError(
          'say --node or --server',
          'the front-end needs no root files: copy tm/cowstack to /var/lib/one/remotes/tm/ (see the README)',
        );
      const ctx = createContext(cmd);
      const r = await install(ctx.op(o.vg), { role: o.node ? 'node' : 'server', users: o.user, from: o.from });
      await ctx.finish(r, (x: InstallResult) => x.files.map((f) => `${f.path}: ${f.action}`).join('\n'));
    });
}
