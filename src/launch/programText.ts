/**
 * How the program sits in the bundle after the launcher: inside one block comment, which
 * must not contain its own end. The program has no \x01 (esbuild escapes control characters
 * in strings), so "*\x01/" stands for every "*&#47;" in it, and the launcher turns it back.
 */
export const PROGRAM_START = '\n/*COWSTACK-PROGRAM\n';
export const PROGRAM_END = '\n*/\n';

const ESCAPED_END = '*\x01/';

/** The comment that carries `program`; throws when the program cannot be carried losslessly. */
export function programComment(program: string): string {
  if (program.includes('\x01')) throw new Error('the program has a \\x01, which the bundle uses as its escape');
  if (program.includes(PROGRAM_START.trim())) throw new Error('the program contains the bundle marker');
  return PROGRAM_START + program.replaceAll('*/', ESCAPED_END) + PROGRAM_END;
}

export function unescapeProgram(carried: string): string {
  return carried.replaceAll(ESCAPED_END, '*/');
}
