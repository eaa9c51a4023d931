/**
 * cowstack(1), generated from the command tree (commandTree.ts) in man(7) macros: the
 * program's options, then every command with its usage, arguments and options, then the exit
 * codes (exec/errors.ts). `npm run build` writes it to man/cowstack.1 (scripts/man.mjs).
 * No date in it: the same program gives the same page, byte for byte.
 */
import { EXIT_NAMES } from '../exec/errors.js';
import { allCommands, type CommandNode, type OptionNode } from './commandTree.js';

/**
 * Text for roff: backslashes escaped, hyphens made minus signs (so that options copied from
 * the page are what the shell needs), a line starting with a control character defused.
 */
export function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

const bold = (s: string) => `\\fB${roff(s)}\\fR`;
const italic = (s: string) => `\\fI${roff(s)}\\fR`;

/** "-q, --quiet" bold, "<name>" italic. */
function optionTerm(o: OptionNode): string {
  const names = o.flags.replace(o.value ?? '', '').trim();
  return o.value ? `${bold(names)} ${italic(o.value)}` : bold(names);
}

function optionItems(options: OptionNode[]): string[] {
  return options.flatMap((o) => {
    const choices = o.choices ? ` (one of: ${o.choices.join(', ')})` : '';
    return ['.TP', optionTerm(o), roff(`${o.description}${choices}`)];
  });
}

function commandSection(node: CommandNode, program: string): string[] {
  const title = [program, ...node.path].join(' ');
  const lines = ['.SS', `"${roff(title)}"`].join(' ');
  const out = [lines, '.PP', `${bold(title)} ${roff(node.usage)}`];
  if (node.description) out.push('.PP', roff(node.description));
  if (node.commands.length) out.push('.PP', `Commands: ${node.commands.map((c) => bold(c.name)).join(', ')}.`);
  for (const a of node.arguments) {
    const choices = a.choices ? ` (one of: ${a.choices.join(', ')})` : '';
    const what = `${a.required ? 'required' : 'optional'}${a.variadic ? ', repeatable' : ''}`;
    out.push('.TP', italic(a.name), roff(`${a.description ? `${a.description} ` : ''}(${what})${choices}`));
  }
  // --help is on every command: said once, under OPTIONS.
  out.push(...optionItems(node.options.filter((o) => o.long !== '--help')));
  return out;
}

export function manPage(program: CommandNode, version: string): string {
  const name = program.name;
  const commands = allCommands(program).slice(1);
  return (
    [
      `.\\" Generated from ${name}'s command definitions (src/cli/manPage.ts): do not edit.`,
      `.TH ${name.toUpperCase()} 1 "" "${roff(`${name} ${version}`)}" "User Commands"`,
      // No hyphenation, ragged right: option names and device paths stay whole.
      '.nh',
      '.ad l',
      '.SH NAME',
      `${roff(name)} \\- ${roff(program.description)}`,
      '.SH SYNOPSIS',
      `${bold(name)} [${italic('options')}] ${italic('command')} [${italic('arguments')}]`,
      '.SH DESCRIPTION',
      roff(
        `${name} is one command line for the whole store: the repository VG and its cluster locks, images, ` +
          'clones, node-local caches, the iSCSI target and initiator, and the OpenNebula transfer-manager ' +
          'driver. Every command takes --json (one JSON document on stdout) and --dry-run (the exact commands ' +
          'it would run). Progress goes to stderr.',
      ),
      '.SH OPTIONS',
      'These options are accepted by every command.',
      ...optionItems(program.options),
      '.SH COMMANDS',
      ...commands.flatMap((c) => commandSection(c, name)),
      '.SH EXIT STATUS',
      ...Object.entries(EXIT_NAMES).flatMap(([code, what]) => ['.TP', bold(code), roff(what)]),
      '.SH FILES',
      '.TP',
      bold('/etc/cowstack/cowstack.yaml'),
      roff('The configuration (--config FILE); see the README for every key.'),
      '.SH SEE ALSO',
      `${bold('lvmlockd')}(8), ${bold('dmsetup')}(8), ${bold('sanlock')}(8), ${bold('iscsiadm')}(8)`,
    ].join('\n') + '\n'
  );
}
