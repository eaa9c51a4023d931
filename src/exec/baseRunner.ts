import { CommandError, CowstackError, EXIT } from './errors.js';
import { shellJoin } from './quote.js';
import { trace } from './trace.js';
import { TIMEOUTS, type RunRequest, type RunResult, type Runner, type SudoPolicy } from './types.js';

/** What a transport returns: the raw outcome of one process. */
export interface RawOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The program itself could not be started (ENOENT locally, 127 remotely). */
  notFound: boolean;
  /** The transport (ssh) failed before the program ran. */
  unreachable?: boolean;
}

export interface RunnerHooks {
  /** Called before every command with the final argv (verbose logging). */
  onCommand?: (target: string, argv: readonly string[], kind: RunRequest['kind']) => void;
}

const SUDO_REFUSED = /a password is required|is not allowed to execute|not in the sudoers|may not run sudo/i;

/**
 * Shared logic of the local and ssh runners: the sudo prefix, timeouts, and turning a
 * raw outcome into either a result or a typed error. Transports only move bytes.
 */
export abstract class BaseRunner implements Runner {
  abstract readonly target: string;
  protected constructor(
    protected readonly sudo: SudoPolicy,
    protected readonly hooks: RunnerHooks = {},
  ) {}

  /** Whether this target runs as root already (auto sudo asks once). */
  protected abstract isRoot(): Promise<boolean>;
  protected abstract spawn(argv: readonly string[], req: RunRequest, timeoutMs: number): Promise<RawOutcome>;
  abstract close(): Promise<void>;

  private async withSudo(req: RunRequest): Promise<readonly string[]> {
    if (!req.root || this.sudo === 'never') return req.argv;
    if (this.sudo === 'auto' && (await this.isRoot())) return req.argv;
    return ['sudo', '-n', ...req.argv];
  }

  async run(req: RunRequest): Promise<RunResult> {
    const argv = await this.withSudo(req);
    const timeoutMs = req.timeoutMs ?? TIMEOUTS[req.timeout ?? 'query'];
    this.hooks.onCommand?.(this.target, argv, req.kind);
    const started = Date.now();
    const raw = await this.spawn(argv, req, timeoutMs);
    const result: RunResult = {
      argv: req.argv,
      exitCode: raw.exitCode,
      stdout: raw.stdout,
      stderr: raw.stderr,
      durationMs: Date.now() - started,
    };
    trace({ target: this.target, kind: req.kind, ms: result.durationMs, exit: raw.exitCode, argv: req.argv });
    const program = req.argv[0] ?? '';
    if (raw.unreachable) {
      throw new CowstackError(EXIT.UNREACHABLE, `cannot reach host ${this.target} over ssh: ${raw.stderr.trim()}`, {
        hint: `check that "ssh ${this.target} true" works (host up, key, ssh config)`,
        data: { host: this.target, argv: req.argv },
      });
    }
    if (raw.timedOut) {
      throw new CowstackError(
        EXIT.TIMEOUT,
        `${shellJoin(req.argv)} did not finish within ${timeoutMs / 1000}s ` +
          `(timeout ${req.timeoutMs === undefined ? `"${req.timeout ?? 'query'}"` : 'override'})${this.where()}`,
        {
          hint: 'the command was killed; check the host for a hung device or lock, then run it again',
          data: { argv: req.argv, host: this.target },
        },
      );
    }
    if (raw.notFound) {
      throw new CowstackError(EXIT.MISSING, `program "${program}" is not installed${this.where()}`, {
        hint: `install the package that provides ${program} (see "cowstack doctor")`,
        data: { argv: req.argv, host: this.target },
      });
    }
    if (raw.exitCode !== 0 && argv[0] === 'sudo' && SUDO_REFUSED.test(raw.stderr)) {
      throw new CowstackError(EXIT.PERMISSION, `sudo refused to run ${program}${this.where()}: ${raw.stderr.trim()}`, {
        hint: `install sudoers/cowstack (it must allow ${program} with NOPASSWD), or run as root`,
        data: { argv: req.argv, host: this.target },
      });
    }
    if (raw.exitCode !== 0 && !req.allowFailure) {
      throw new CommandError(this.target, req.argv, raw.exitCode, raw.stderr);
    }
    return result;
  }

  protected where(): string {
    return this.target === 'local' ? '' : ` on ${this.target}`;
  }
}
