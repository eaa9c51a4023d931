/**
 * Runs the built cowstack CLI on the host against the testbed, as a user would: the single-file
 * bundle bin/cowstack runs (it starts in about half the time of the tsc output's hundred modules).
 */
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Testbed } from '../testbed/index.js';
import { trace } from '../../src/exec/trace.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/cowstack.mjs');

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /**
   * Parsed stdout when --json was given: the document of whichever command ran, read by the
   * tests as the JSON it is (they type the parts they look at).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON of any cowstack command
  json: any;
}

export async function cowstack(
  tb: Pick<Testbed, 'sshConfig'>,
  args: string[],
  opts: { check?: boolean; timeoutMs?: number; input?: string; env?: Record<string, string> } = {},
): Promise<CliResult> {
  const started = Date.now();
  const r = await execa('node', [CLI, ...args], {
    reject: false,
    timeout: opts.timeoutMs ?? 600_000,
    input: opts.input,
    env: { COWSTACK_SSH_CONFIG: tb.sshConfig, COWSTACK_CONFIG: '/dev/null', NO_COLOR: '1', ...opts.env },
  });
  trace({ target: 'cowstack', ms: Date.now() - started, exit: r.exitCode ?? -1, argv: args });
  let json: unknown;
  // A killed cowstack prints nothing at all: that is not a JSON error, it is the crash under test.
  if (args.includes('--json') && String(r.stdout).trim()) {
    try {
      json = JSON.parse(String(r.stdout));
    } catch {
      throw new Error(
        `cowstack ${args.join(' ')} printed non-JSON on stdout with --json:\n${r.stdout}\nstderr:\n${r.stderr}`,
      );
    }
  }
  const result = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), json };
  if (opts.check && result.exitCode !== 0) {
    throw new Error(
      `cowstack ${args.join(' ')} exited ${result.exitCode}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
    );
  }
  return result;
}

/** `cowstack --host NODE --json ARGS --vg repo` (VG/LV commands take no --vg). */
export function clusterCli(
  tb: Pick<Testbed, 'sshConfig'>,
  node: string,
  args: string[],
  env?: Record<string, string>,
): Promise<CliResult> {
  const vg = ['activate', 'deactivate', 'initiator'].includes(args[0]!) ? [] : ['--vg', 'repo'];
  return cowstack(tb, ['--host', node, '--json', ...args, ...vg], { env });
}
