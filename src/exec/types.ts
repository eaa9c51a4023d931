/**
 * The one way cowstack runs an external program. Every step is an argv (never a shell
 * string), tagged read or write, with a named timeout. Implementations: local (optionally
 * through `sudo -n`), ssh (one multiplexed connection per host), dry-run (prints writes,
 * performs reads) and the recording runner used by unit tests.
 */

/** Reads may run under --dry-run; writes are only printed there. */
export type RunKind = 'read' | 'write';

/** Named timeouts so a slow class of command is tuned in one place, not per call site. */
export const TIMEOUTS = {
  /** lvs/vgs/dmsetup info: quick metadata reads. */
  query: 60_000,
  /** lvcreate/lvchange/dmsetup create: one metadata change, may wait for a cluster lock. */
  change: 180_000,
  /** vgchange --lockstart, sanlock lease acquisition: tens of seconds under emulation. */
  lockspace: 600_000,
  /** iscsiadm login/logout and device settle. */
  iscsi: 120_000,
  /** dd/copy/checksum of whole devices. */
  data: 3_600_000,
} as const;
export type TimeoutName = keyof typeof TIMEOUTS;

export interface RunRequest {
  argv: readonly string[];
  kind: RunKind;
  timeout?: TimeoutName;
  /**
   * Overrides the named timeout, in milliseconds (tests, and one-off bounded probes). 0: no
   * timeout, for a process whose lifetime is the operation's (the node lock's keeper).
   */
  timeoutMs?: number;
  /** Data for stdin (never used to carry secrets into argv). */
  input?: string | Buffer;
  /** A stream for stdin (image import: bytes flow through without being buffered). */
  stdin?: NodeJS.ReadableStream;
  /**
   * Called with stdout as it arrives (it is still buffered into the result): a process
   * that must be seen to start before the run ends, e.g. the node lock's keeper.
   */
  onStdout?: (chunk: string) => void;
  /** Write stdout to this local file instead of buffering it ('-' = our own stdout). */
  stdoutFile?: string;
  /** Extra environment for the program (LC_ALL=C is always set). */
  env?: Record<string, string>;
  /** Needs root: the sudo policy decides whether `sudo -n` is prefixed. */
  root?: boolean;
  /** A non-zero exit is an expected answer (e.g. "not found"), not an error. */
  allowFailure?: boolean;
  /** Short human description for progress output. */
  title?: string;
}

export interface RunResult {
  argv: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  /** True when a dry-run runner printed this write instead of running it. */
  skipped?: boolean;
  durationMs: number;
}

export interface Runner {
  /** Where the commands run: 'local' or an ssh host name. */
  readonly target: string;
  run(req: RunRequest): Promise<RunResult>;
  /** Release any connection (ssh control master). Idempotent. */
  close(): Promise<void>;
}

export type SudoPolicy = 'auto' | 'always' | 'never';

/**
 * A program cowstack runs as root (a RunRequest with `root: true`): what sudoers/cowstack
 * must allow. Each tools module declares the ones it spells (its ROOT_PROGRAMS);
 * src/tools/rootPrograms.ts collects them.
 *
 * `path` is where Debian 12 (merged /usr) has the program: what `command -v` prints and
 * what sudo resolves the bare name to through its secure_path. dpkg still records some of
 * them under /sbin or /bin, which are symlinks to /usr/sbin and /usr/bin there; sudo
 * compares by inode, so the two spellings are the same rule.
 */
export interface RootProgram {
  /** The argv[0] cowstack passes (sudo resolves it through secure_path). */
  name: string;
  /** Full path on Debian 12: the path written in sudoers/cowstack. */
  path: string;
  /** Debian package that provides it. */
  pkg: string;
  /** What cowstack runs it for (the sudoers rule restricts it to that). */
  use: string;
  /**
   * Only `cowstack cluster init` / `cluster join` need it. sudoers/cowstack grants these in
   * a separate rule (COWSTACK_SETUP) that a site can drop once its nodes are set up.
   */
  setupOnly?: boolean;
  /**
   * Only the repository server runs it (cowstack target ...). sudoers/cowstack grants these
   * in COWSTACK_SERVER, which nodes do not need.
   */
  serverOnly?: boolean;
}
