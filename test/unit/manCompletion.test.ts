/**
 * The bash completion and the man page are generated from the commander program: every
 * command and every option it defines must come out of both. The program is walked here
 * through commander's own lists (commands, options, registeredArguments), not through the
 * generators' tree, and the completion script is run by a real bash.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { commandTree } from '../../src/cli/commandTree.js';
import { bashCompletion } from '../../src/cli/completion.js';
import { buildProgram } from '../../src/cli/main.js';
import { manPage } from '../../src/cli/manPage.js';
import { VERSION } from '../../src/cli/version.js';

interface Defined {
  path: string[];
  cmd: Command;
}

const walk = (cmd: Command, p: string[] = []): Defined[] => [
  { path: p, cmd },
  ...cmd.commands.flatMap((c) => walk(c, [...p, c.name()])),
];

const program = buildProgram();
const defined = walk(program);
const flags = (cmd: Command) => cmd.options.flatMap((o) => [o.long, o.short].filter((f): f is string => Boolean(f)));

describe('the walk itself', () => {
  it('sees the command groups and the options it is meant to check', () => {
    expect(defined.length).toBeGreaterThan(40);
    expect(defined.map((d) => d.path.join(' '))).toContain('cache flush');
    expect(flags(program)).toContain('--dry-run');
  });
});

// Each test runs one bash for all its probes; a loaded machine (a testbed booting) makes that slow.
describe('bash completion', { timeout: 30_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowstack-completion-'));
  const script = path.join(dir, 'cowstack.bash');
  writeFileSync(script, bashCompletion(commandTree(program)));

  /** Completions for the words typed so far (the last one is the word under the cursor), by bash. */
  function complete(probes: string[][]): string[][] {
    const lines = probes.map((words) => {
      const quoted = ['cowstack', ...words].map((w) => `'${w}'`).join(' ');
      return `COMP_WORDS=(${quoted}); COMP_CWORD=${words.length}; _cowstack; echo "\${COMPREPLY[*]}"`;
    });
    const r = spawnSync('bash', ['--norc', '-c', `source '${script}' && cd '${dir}' && {\n${lines.join('\n')}\n}`], {
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = r.stdout.split('\n').slice(0, probes.length);
    expect(out).toHaveLength(probes.length);
    return out.map((l) => l.split(' ').filter(Boolean));
  }

  it('is valid bash', () => {
    expect(spawnSync('bash', ['-n', script], { encoding: 'utf8' }).status).toBe(0);
  });

  it('offers every subcommand of every command', () => {
    const groups = defined.filter((d) => d.cmd.commands.length);
    const got = complete(groups.map((d) => [...d.path, '']));
    groups.forEach((d, i) => expect(got[i], d.path.join(' ')).toEqual(d.cmd.commands.map((c) => c.name())));
  });

  it("offers every option of every command after it, and the program's own options too", () => {
    const got = complete(defined.map((d) => [...d.path, '-']));
    defined.forEach((d, i) => {
      for (const f of [...flags(d.cmd), ...flags(program)]) expect(got[i], `${d.path.join(' ')} ${f}`).toContain(f);
    });
  });

  it("offers an option's choices as its value, wherever the option is", () => {
    const withChoices = defined.flatMap((d) =>
      d.cmd.options.filter((o) => o.argChoices && o.long).map((o) => ({ d, o })),
    );
    expect(withChoices.length).toBeGreaterThan(3);
    const got = complete(withChoices.map(({ d, o }) => [...d.path, o.long!, '']));
    withChoices.forEach(({ d, o }, i) => expect(got[i], `${d.path.join(' ')} ${o.long}`).toEqual(o.argChoices));
  });

  it('skips option values and operands when it finds the command path', () => {
    const [afterValue, afterOperand, afterDashes] = complete([
      ['--host', 'cache', 'cac'],
      ['cache', 'flush', 'vm1', '--t'],
      ['tm', '--', 'ln', ''],
    ]);
    expect(afterValue).toEqual(['cache']); // "cache" was --host's value, not the command
    expect(afterOperand).toEqual(['--timeout']);
    expect(afterDashes).toEqual([]); // tm's arguments are oned's data
  });
});

/** The man page's text as a reader sees it, for the escapes manPage writes. */
const deroff = (s: string) =>
  s
    .replace(/\\f[BIR]/g, '')
    .replace(/\\-/g, '-')
    .replace(/\\&/g, '')
    .replace(/\\e/g, '\\');

describe('man page', () => {
  const page = manPage(commandTree(program), VERSION);
  /** Its sections, by heading: ".SH OPTIONS" and ".SS "cowstack cache flush"" alike. */
  const sections = new Map<string, string>();
  for (const part of page.split(/^(?=\.S[HS] )/m)) {
    const [head = '', ...body] = part.split('\n');
    sections.set(deroff(head.replace(/^\.S[HS] /, '').replace(/^"|"$/g, '')), deroff(body.join('\n')));
  }

  it('has a section for every command with its usage, arguments and options', () => {
    for (const d of defined.slice(1)) {
      const title = ['cowstack', ...d.path].join(' ');
      const text = sections.get(title);
      expect(text, title).toBeDefined();
      expect(text, title).toContain(`${title} ${d.cmd.usage()}`);
      for (const a of d.cmd.registeredArguments) expect(text, `${title} ${a.name()}`).toContain(a.name());
      for (const f of flags(d.cmd)) expect(text, `${title} ${f}`).toContain(f);
      for (const c of d.cmd.commands) expect(text, `${title} ${c.name()}`).toContain(c.name());
    }
  });

  it("lists the program's own options and every exit code", () => {
    for (const f of flags(program)) expect(sections.get('OPTIONS'), f).toContain(f);
    expect(sections.get('EXIT STATUS')).toMatch(/lock-conflict/);
  });

  it('is the same page for the same program (no date in it)', () => {
    expect(manPage(commandTree(buildProgram()), VERSION)).toBe(page);
  });

  const groff = spawnSync('groff', ['--version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!groff)('renders with groff without a warning', () => {
    const r = spawnSync('groff', ['-man', '-Tascii', '-ww', '-z'], { input: page, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
