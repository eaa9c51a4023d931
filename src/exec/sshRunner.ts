import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BaseRunner, type RawOutcome, type RunnerHooks } from './baseRunner.js';
import { alwaysQuoted, shellJoin, shellQuote } from './quote.js';
import { stdio } from './stdio.js';
import type { RunRequest, SudoPolicy } from './types.js';

export interface SshOptions {
  /** An ssh_config file (-F), e.g. the testbed's. */
  configFile?: string;
  /** Seconds to wait for the TCP connection. */
  connectTimeout?: number;
}

/**
 * Runs programs on another host over ssh. One control master per host is shared by
 * every step (ControlMaster/ControlPersist), so a plan of 20 steps costs one handshake.
 * The remote command is a fully quoted argv: the remote shell only ever sees literals.
 */
export class SshRunner extends BaseRunner {
  private root?: Promise<boolean>;
  private readonly controlPath: string;

  constructor(
    readonly target: string,
    sudo: SudoPolicy = 'auto',
    private readonly opts: SshOptions = {},
    hooks: RunnerHooks = {},
  ) {
    super(sudo, hooks);
    // Short path: unix socket paths are limited to ~108 bytes.
    const key = createHash('sha256')
      .update(`${target}\0${opts.configFile ?? ''}\0${process.getuid?.() ?? ''}`)
      .digest('hex')
      .slice(0, 16);
    this.controlPath = join(tmpdir(), `cowstack-ssh-${key}`);
  }

  sshArgs(): string[] {
    return [
      ...(this.opts.configFile ? ['-F', this.opts.configFile] : []),
      '-o',
      'BatchMode=yes',
      '-o',
      `ConnectTimeout=${this.opts.connectTimeout ?? 15}`,
      '-o',
      'ControlMaster=auto',
      '-o',
      `ControlPath=${this.controlPath}`,
      '-o',
      'ControlPersist=120',
      '-o',
      'ServerAliveInterval=15',
    ];
  }

  /**
   * The remote command line for the login shell sshd starts: `LC_ALL=C ... exec 'prog' args`.
   * The shell's own assignments and `exec` instead of env(1): one program started per command,
   * not two (under emulation an exec costs 30-80 ms, and a plan runs dozens of commands). The
   * program's name is always quoted, so it is never read as a keyword or an assignment, and
   * `exec` finds it on PATH only (never a shell function). Needs a POSIX login shell (sh, bash,
   * dash, zsh), as every Debian account has.
   */
  static remoteCommand(argv: readonly string[], env: Record<string, string> = {}): string {
    const assignments = Object.entries({ LC_ALL: 'C', ...env }).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`environment variable name "${k}" is not valid`);
      return `${k}=${shellQuote(v)}`;
    });
    const [program, ...args] = argv;
    if (!program) throw new Error('no program to run');
    return [...assignments, 'exec', alwaysQuoted(program), shellJoin(args)].filter(Boolean).join(' ');
  }

  protected isRoot(): Promise<boolean> {
    this.root ??= this.spawn(['id', '-u'], { argv: ['id', '-u'], kind: 'read' }, 30_000).then(
      (r) => r.stdout.trim() === '0',
    );
    return this.root;
  }

  protected async spawn(argv: readonly string[], req: RunRequest, timeoutMs: number): Promise<RawOutcome> {
    const child = execa('ssh', [...this.sshArgs(), this.target, '--', SshRunner.remoteCommand(argv, req.env)], {
      reject: false,
      timeout: timeoutMs,
      ...stdio(req),
      stripFinalNewline: false,
      encoding: 'utf8',
    });
    if (req.onStdout) child.stdout?.on('data', (c: Buffer | string) => req.onStdout!(String(c)));
    const r = await child;
    const exitCode = r.exitCode ?? (r.timedOut ? 124 : 255);
    // No exit code and no timeout: ssh itself could not be started or fed; say why.
    const stderr =
      String(r.stderr ?? '') || (r.exitCode === undefined && !r.timedOut ? String(r.shortMessage ?? '') : '');
    return {
      exitCode,
      stdout: String(r.stdout ?? ''),
      stderr,
      timedOut: Boolean(r.timedOut),
      // env(1) reports a missing program with 127 and "No such file or directory".
      notFound: exitCode === 127 && /No such file or directory|not found/.test(stderr),
      unreachable:
        exitCode === 255 &&
        /^(ssh:|kex_exchange|Connection|Host key|Permission denied \(publickey|mux_client)/m.test(stderr),
    };
  }

  async close(): Promise<void> {
    await execa('ssh', [...this.sshArgs(), '-O', 'exit', this.target], {
      reject: false,
      stdin: 'ignore',
      timeout: 10_000,
    });
  }
}
