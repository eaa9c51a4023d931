/**
 * A copy of the testbed's ssh config with some options changed for some hosts: the tests that
 * need the front-end to see a node as a different user (nodelocal) or as unreachable (crash)
 * write one instead of touching the cluster's own config, which the other files share.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';

/** Option name -> new value, given the old one (each option is set where the block has it). */
export type SshOptionEdits = Record<string, (old: string) => string>;

/** Writes the variant into a new temporary directory (or `file`) and returns its path. */
export async function sshConfigVariant(
  tb: Pick<Testbed, 'sshConfig'>,
  edits: SshOptionEdits,
  opts: { hosts?: string[]; file?: string } = {},
): Promise<string> {
  const text = await fsp.readFile(tb.sshConfig, 'utf8');
  const blocks = text.split(/(?=^Host )/m).map((block) => {
    const host = /^Host (\S+)\n/.exec(block)?.[1];
    if (!host || (opts.hosts && !opts.hosts.includes(host))) return block;
    return Object.entries(edits).reduce(
      (b, [option, edit]) => b.replace(new RegExp(`^( {2}${option} )(.*)$`, 'm'), (_, head, old) => head + edit(old)),
      block,
    );
  });
  const file = opts.file ?? path.join(await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-ssh-')), 'ssh_config');
  await fsp.writeFile(file, blocks.join(''));
  return file;
}

/** The config with `node` cut off, as while it is powered off: a closed port, no shared connection. */
export const unreachableConfig = (tb: Pick<Testbed, 'sshConfig'>, node: string): Promise<string> =>
  sshConfigVariant(tb, { Port: () => '1', ControlMaster: () => 'no', ControlPath: () => 'none' }, { hosts: [node] });
