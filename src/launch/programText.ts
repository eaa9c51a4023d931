/**
 * How the program sits in the bundle after the launcher: inside one block comment, which
 * must not contain its own end. The program is ASCII without \x01 (the build checks), so
 * "*\x01/" stands for every "*&#47;" in it, and the launcher turns it back; the launcher reads it as
 * latin1, the fastest decoding, which is exact for ASCII.
 */
export const PROGRAM_START = '\n/*COWSTACK-PROGRAM\n';
export const PROGRAM_END = '\n*/\n';

const ESCAPED_END = '*\x01/';

/** The comment that carries `program`; throws when the program cannot be carried losslessly. */
export function programComment(program: string): string {
  // eslint-disable-next-line no-control-regex
  const bad = /[^\x00\x02-\x7f]/.exec(program);
  if (bad) throw new Error(`the bundle cannot carry the program's character U+${bad[0].charCodeAt(0).toString(16)}`);
  if (program.includes(PROGRAM_START.trim())) throw new Error('the program contains the bundle marker');
  return PROGRAM_START + program.replaceAll('*/', ESCAPED_END) + PROGRAM_END;
}

export function unescapeProgram(carried: string): string {
  return carried.replaceAll(ESCAPED_END, '*/');
}
