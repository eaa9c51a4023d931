import { Option, type Command } from 'commander';

/** --vg on every command that touches the repository; default from the config file. */
export const vgOption = (cmd: Command): Command =>
  cmd.addOption(new Option('--vg <name>', 'repository volume group (default: repository.vg in the config)'));
