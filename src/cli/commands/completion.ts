import { Argument, type Command } from 'commander';
import { commandTree } from '../commandTree.js';
import { bashCompletion } from '../completion.js';
import { globalOptions } from '../context.js';

export function register(program: Command): void {
  program
    .command('completion')
    .description('print the shell completion script, generated from these command definitions (bash)')
    .addArgument(new Argument('<shell>', 'the shell to complete for').choices(['bash']))
    .action((shell: string, _o, cmd: Command) => {
      // Run on every shell start (source <(cowstack completion bash)): no config, no runner, nothing run.
      const script = bashCompletion(commandTree(cmd.parent!));
      const doc = { ok: true, host: 'local', result: { shell, script } };
      process.stdout.write(globalOptions(cmd).json ? `${JSON.stringify(doc, null, 2)}\n` : script);
    });
}
