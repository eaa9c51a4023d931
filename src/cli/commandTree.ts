/**
 * The command definitions as plain data, read from the commander program itself: what the
 * bash completion (completion.ts) and the man page (manPage.ts) are generated from, so that
 * neither can list a command or option the program does not have, or miss one it has.
 * commander's Help class decides what is visible, exactly as `--help` shows it.
 */
import type { Command, Option } from 'commander';

export interface OptionNode {
  /** As written in the definition: "-q, --quiet", "--vg <name>". */
  flags: string;
  long?: string;
  short?: string;
  description: string;
  /** The value's placeholder ("<name>", "[dir]"); absent for a flag. */
  value?: string;
  choices?: string[];
}

export interface ArgumentNode {
  name: string;
  required: boolean;
  variadic: boolean;
  description: string;
  choices?: string[];
}

export interface CommandNode {
  /** Command names from the program down: [] for the program, ["cache", "flush"]. */
  path: string[];
  name: string;
  description: string;
  /** commander's usage line: "[options] [clone]". */
  usage: string;
  arguments: ArgumentNode[];
  options: OptionNode[];
  commands: CommandNode[];
}

const optionNode = (o: Option): OptionNode => {
  const value = /[<[][^>\]]*[>\]]/.exec(o.flags)?.[0];
  return {
    flags: o.flags,
    ...(o.long ? { long: o.long } : {}),
    ...(o.short ? { short: o.short } : {}),
    description: o.description,
    ...(value ? { value } : {}),
    ...(o.argChoices ? { choices: [...o.argChoices] } : {}),
  };
};

export function commandTree(cmd: Command, parent: string[] = []): CommandNode {
  const help = cmd.createHelp();
  const path = cmd.parent ? [...parent, cmd.name()] : [];
  return {
    path,
    name: cmd.name(),
    description: cmd.description(),
    usage: cmd.usage(),
    // All of them: commander's Help lists arguments only when one of them has a description.
    arguments: cmd.registeredArguments.map((a) => ({
      name: a.name(),
      required: a.required,
      variadic: a.variadic,
      description: a.description,
      ...(a.argChoices ? { choices: [...a.argChoices] } : {}),
    })),
    options: help.visibleOptions(cmd).map(optionNode),
    // The declared commands only: commander's implicit `help` command is not one to document.
    commands: help
      .visibleCommands(cmd)
      .filter((c) => cmd.commands.includes(c))
      .map((c) => commandTree(c, path)),
  };
}

/** Every node of the tree, the program first, depth first in definition order. */
export const allCommands = (node: CommandNode): CommandNode[] => [node, ...node.commands.flatMap(allCommands)];
