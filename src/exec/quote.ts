/**
 * Quoting for the one place a shell is unavoidable: ssh joins its arguments into a
 * command line for the remote login shell. Every word is single-quoted, so nothing in
 * an argument (spaces, quotes, `;`, `$()`) is ever interpreted there.
 */
const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

export function shellQuote(word: string): string {
  if (word !== '' && SAFE.test(word)) return word;
  return alwaysQuoted(word);
}

/** Quoted even when plain: a command's name so quoted is never a keyword or an assignment. */
export function alwaysQuoted(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
