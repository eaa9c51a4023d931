/**
 * Plays oned's part for the TM driver: runs the tm/cowstack/<action> scripts themselves on
 * this host (the "front-end"), with real argument strings, a `cowstack` on PATH that runs
 * the built CLI, a config naming the repository VG, the testbed's ssh config and its nodes.
 * oned's CLI (`onevm`, `oneimage`, `onedatastore` `show -x ID`, which TM restore reads) answers
 * with the XML a test put in `<dir>/one/<command>-<id>.xml` (oneXml); OpenNebula's remotes
 * (the backup datastore drivers restore runs) are test/integration/one-remotes: an rsync datastore.
 */
import { execa } from 'execa';
import { promises as fsp } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';
import { CLI, clusterCli, ROOT } from './cli.js';
import { attachMine } from './testbeds.js';
import { REPO_VG } from './cluster.js';

export const FE = hostname();
export const DS = '/var/lib/one//datastores'; // as oned spells it: DATASTORE_LOCATION + '/'

export interface TmResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

export interface TmHarness {
  run(action: string, args: string[], input?: string): Promise<TmResult>;
  /** Runs an action and fails with its output unless it exits 0. */
  ok(action: string, args: string[], input?: string): Promise<TmResult>;
  /** The datastore driver: datastore/cowstack/<action>, as oned's one_datastore runs it. */
  ds: Pick<TmHarness, 'run' | 'ok'>;
  dir: string;
  /** What oned's CLI prints for `<cli> show -x <id>`. */
  oneXml(cli: 'onevm' | 'oneimage' | 'onedatastore', id: number, xml: string): Promise<void>;
}

/** `verbose`: cowstack prints every command it runs (the bench counts them: one ssh round trip each). */
export async function tmHarness(
  tb: Pick<Testbed, 'sshConfig'>,
  hosts = ['node1', 'node2'],
  opts: { verbose?: boolean } = {},
): Promise<TmHarness> {
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'cowstack-tm-'));
  await fsp.mkdir(path.join(dir, 'bin'));
  await fsp.mkdir(path.join(dir, 'lock'));
  await fsp.mkdir(path.join(dir, 'one'));
  for (const cli of ['onevm', 'oneimage', 'onedatastore'])
    await fsp.writeFile(path.join(dir, 'bin', cli), `#!/bin/sh\nexec cat "${dir}/one/${cli}-$3.xml"\n`, {
      mode: 0o755,
    });
  await fsp.writeFile(
    path.join(dir, 'bin/cowstack'),
    `#!/bin/sh\nexec node '${CLI}' ${opts.verbose ? '--verbose ' : ''}"$@"\n`,
    { mode: 0o755 },
  );
  await fsp.writeFile(
    path.join(dir, 'cowstack.yaml'),
    `repository:\n  vg: ${REPO_VG}\nssh:\n  config: ${tb.sshConfig}\ntm:\n  hosts: [${hosts.join(', ')}]\n`,
  );
  const env = {
    PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`,
    COWSTACK_CONFIG: path.join(dir, 'cowstack.yaml'),
    COWSTACK_TM_LOCK_DIR: path.join(dir, 'lock'),
    COWSTACK_ONE_REMOTES: path.join(ROOT, 'test/integration/one-remotes'),
    NO_COLOR: '1',
  };
  const runIn =
    (driver: string) =>
    async (action: string, args: string[], input?: string): Promise<TmResult> => {
      const started = Date.now();
      const r = await execa(path.join(ROOT, driver, action), args, {
        reject: false,
        env,
        input: input ?? '',
        timeout: 600_000,
      });
      return {
        exitCode: r.exitCode ?? -1,
        stdout: String(r.stdout),
        stderr: String(r.stderr),
        seconds: (Date.now() - started) / 1000,
      };
    };
  const driver = (dir: string, what: string) => {
    const run = runIn(dir);
    const ok = async (action: string, args: string[], input?: string) => {
      const r = await run(action, args, input);
      if (r.exitCode !== 0)
        throw new Error(`${what} ${action} ${args.join(' ')} exited ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
      return r;
    };
    return { run, ok };
  };
  const oneXml = (cli: string, id: number, xml: string) =>
    fsp.writeFile(path.join(dir, 'one', `${cli}-${id}.xml`), xml);
  return { dir, oneXml, ...driver('tm/cowstack', 'tm'), ds: driver('datastore/cowstack', 'ds') };
}

/** Every TM test file's set-up: its testbed, a harness on it, and `content` imported on node1 as image `name`. */
export async function tmWithImage(name: string, content: Buffer): Promise<{ tb: Testbed; tm: TmHarness }> {
  const tb = await attachMine();
  const tm = await tmHarness(tb);
  const file = path.join(tm.dir, `${name}.raw`);
  await fsp.writeFile(file, content);
  const r = await clusterCli(tb, 'node1', ['image', 'import', name, file]);
  if (r.exitCode !== 0) throw new Error(`image import ${name} failed (exit ${r.exitCode}): ${r.stderr}`);
  return { tb, tm };
}
