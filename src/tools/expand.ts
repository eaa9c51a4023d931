/**
 * The programs that expand a compressed or qcow2 import source into a raw file, on the
 * machine that runs cowstack (they read a local file, never a device, and never as root).
 */

export type ExpandFormat = 'zstd' | 'xz' | 'bzip2' | 'qcow2';

export interface Expander {
  program: string;
  /** The Debian package that ships it (for the "not installed" hint). */
  pkg: string;
  /** Its arguments: they name `out` when the program writes the file itself, else it writes stdout. */
  argv: (file: string, out: string) => string[];
}

export const EXPANDERS: Record<ExpandFormat, Expander> = {
  zstd: { program: 'zstd', pkg: 'zstd', argv: (f, o) => ['-q', '-d', '-f', '-o', o, '--', f] },
  xz: { program: 'xz', pkg: 'xz-utils', argv: (f) => ['-d', '-c', '--', f] },
  bzip2: { program: 'bzip2', pkg: 'bzip2', argv: (f) => ['-d', '-c', '--', f] },
  qcow2: { program: 'qemu-img', pkg: 'qemu-utils', argv: (f, o) => ['convert', '-f', 'qcow2', '-O', 'raw', f, o] },
};

/** qemu-img's description of a qcow2 file as json (backing file, external data file). */
export const qcow2InfoArgv = (file: string): [string, string[]] => [
  'qemu-img',
  ['info', '--output=json', '-f', 'qcow2', file],
];

export interface Qcow2Info {
  'backing-filename'?: string;
  'format-specific'?: { data?: { 'data-file'?: string } };
}

/** The other file a qcow2 reads (backing file or external data file), if any. */
export function qcow2OtherFile(stdout: string): string | undefined {
  const info = JSON.parse(stdout) as Qcow2Info;
  return info['backing-filename'] ?? info['format-specific']?.data?.['data-file'];
}

/**
 * The same programs as filters (stdin to stdout), for `catalog sync`: its images stream from
 * the network through them into the LV, whose size the list gives up front.
 */
export const STREAM_EXPANDERS: Record<Exclude<ExpandFormat, 'qcow2'>, { program: string; argv: string[] }> = {
  zstd: { program: 'zstd', argv: ['-q', '-d', '-c'] },
  xz: { program: 'xz', argv: ['-d', '-c'] },
  bzip2: { program: 'bzip2', argv: ['-d', '-c'] },
};
