/**
 * The VMM `migrate` action for KVM hosts whose VM disks are cowstack clones (README, "Live
 * migration"). oned runs it on the SOURCE host. A writable COW may have its snapshot table
 * loaded on one host at a time, so the disks are handed over while the VM is paused on both
 * sides; the order, each step's failure and what it leaves:
 *   1. virsh migrate --live --suspend: the memory moves, the destination stays paused, the source
 *      qemu closes its disks and exits. Failure: the VM keeps running here (oned then runs tm
 *      failmigrate, which removes the destination's placeholders).
 *   2. release, here, of each cowstack disk. From here on (the point of no return) the source is
 *      never resumed: its qemu is gone and the destination has the VM's memory.
 *   3. acquire of each on the destination, through the ssh runner (bounded retries while a lock
 *      is still held).
 *   4. virsh resume on the destination.
 * A failure in 2-4 leaves the VM paused on the destination and its disks retryable (each step
 * is idempotent and journalled): the error says which command to run where, then the resume.
 * The plan is data: --dry-run lists it after the reads (the VM's disks), running nothing.
 */
import { CowstackError, EXIT } from '../exec/errors.js';
import type { RunRequest, Runner } from '../exec/types.js';
import { acquireMigration, releaseMigration, type MigrateResult } from '../core/migrate.js';
import type { NodeSession } from '../core/node.js';
import * as virsh from '../tools/virsh.js';
import type { VmmMigrateRequest } from './args.js';
import { vmDisks, type OtherDrive, type VmDisk } from './disks.js';

export interface VmmEnv {
  /** This host's (the source's) session; its runner is local under oned. */
  source: NodeSession;
  /** This host's name for messages when oned does not pass SRC_HOST (the runner's target is "local"). */
  sourceName: string;
  /** A session on another host (the destination), over ssh. */
  sessionFor(host: string): NodeSession;
  /** Run fn holding the node lock of the session's host (the CLI's; tests pass fn through). */
  locked<T>(s: NodeSession, fn: () => Promise<T>): Promise<T>;
  /** libvirt's URI on both hosts (LIBVIRT_URI). */
  uri: string;
  /** The site's extra virsh migrate options (kvmrc MIGRATE_OPTIONS), validated argv elements. */
  migrateOptions?: readonly string[];
  /** How long acquire keeps asking for a COW's lock the source has not let go of yet (seconds). */
  acquireWaitSeconds: number;
  info(msg: string): void;
}

export interface VmmStep {
  host: string;
  step: 'migrate' | 'release' | 'acquire' | 'resume';
  /** release/acquire: the clone. */
  disk?: string;
  /** migrate/resume: the virsh command; release/acquire: the cowstack command that does it by hand. */
  command: readonly string[];
}

export interface VmmMigrateResult {
  deployId: string;
  source: string;
  destination: string;
  disks: VmDisk[];
  /** The VM's other drives and why they are not handed over. */
  others: OtherDrive[];
  plan: VmmStep[];
  /** Absent under --dry-run: nothing ran. */
  released?: MigrateResult[];
  acquired?: MigrateResult[];
}

const handBy = (step: 'release' | 'acquire', lv: string, wait: number) => [
  'cowstack',
  'clone',
  'migrate',
  step,
  lv,
  ...(step === 'acquire' ? ['--wait', String(wait)] : []),
];

const migrateRequest = (env: VmmEnv, req: VmmMigrateRequest) =>
  virsh.migrateReq(env.uri, req.deployId, virsh.destinationUri(req.destHost), env.migrateOptions);

export function planMigration(req: VmmMigrateRequest, env: VmmEnv, source: string, disks: VmDisk[]): VmmStep[] {
  const dest = req.destHost;
  const wait = env.acquireWaitSeconds;
  return [
    {
      host: source,
      step: 'migrate',
      command: migrateRequest(env, req).argv,
    },
    ...disks.map((d) => ({
      host: source,
      step: 'release' as const,
      disk: d.lv,
      command: handBy('release', d.lv, wait),
    })),
    ...disks.map((d) => ({ host: dest, step: 'acquire' as const, disk: d.lv, command: handBy('acquire', d.lv, wait) })),
    { host: dest, step: 'resume', command: virsh.resumeReq(env.uri, req.deployId).argv },
  ];
}

async function mustRun(runner: Runner, req: RunRequest): Promise<void> {
  const r = await runner.run(req);
  if (r.exitCode !== 0 && !r.skipped)
    throw new CowstackError(EXIT.FAILED, (r.stderr || r.stdout).trim() || `exit code ${r.exitCode}`, {
      data: { command: r.argv, exitCode: r.exitCode },
    });
}

export async function vmmMigrate(env: VmmEnv, req: VmmMigrateRequest): Promise<VmmMigrateResult> {
  const source = req.srcHost ?? env.sourceName;
  const dest = req.destHost;
  const { disks, others } = await vmDisks(env.source.runner, env.uri, req.deployId);
  const plan = planMigration(req, env, source, disks);
  const base = { deployId: req.deployId, source, destination: dest, disks, others, plan };
  for (const o of others) env.info(`${o.target}${o.source ? ` (${o.source})` : ''}: not handed over, ${o.why}`);
  if (env.source.dryRun) return base;

  const [migrate, ...rest] = plan;
  try {
    await mustRun(env.source.runner, migrateRequest(env, req));
  } catch (e) {
    throw new CowstackError(
      EXIT.FAILED,
      `virsh migrate of ${req.deployId} to ${dest} failed: the VM keeps running on ${source}`,
      {
        hint: "oned runs tm failmigrate next, which removes the destination's placeholders; see the cause above",
        data: { step: migrate, cause: (e as Error).message },
      },
    );
  }
  env.info(`${req.deployId} migrated to ${dest}, paused there; handing over ${disks.length} disk(s)`);

  // The point of no return: from here on a failure leaves the VM paused on the destination.
  const stuck = (step: VmmStep, e: unknown): CowstackError => {
    const cause = e instanceof Error ? e.message : String(e);
    const what =
      step.step === 'resume' ? `virsh resume on ${dest} failed` : `${step.step} of ${step.disk} on ${step.host} failed`;
    const todo =
      step.step === 'resume'
        ? 'nothing more for the disks (they are handed over)'
        : `${step.command.join(' ')} (on ${step.host})`;
    return new CowstackError(
      EXIT.FAILED,
      `${what} (${cause}); the VM is paused on ${dest} and must not be resumed on ${source}`,
      {
        hint: `fix the cause, then run: ${todo}; then virsh resume ${req.deployId} on ${dest}`,
        data: {
          step,
          cause,
          ...(e instanceof CowstackError ? { causeExitCode: e.exitCode } : {}),
          remaining: rest.slice(rest.indexOf(step)),
        },
      },
    );
  };
  const dst = env.sessionFor(dest);
  const released: MigrateResult[] = [];
  const acquired: MigrateResult[] = [];
  for (const step of rest) {
    try {
      if (step.step === 'release')
        released.push(await env.locked(env.source, () => releaseMigration(env.source, step.disk!)));
      else if (step.step === 'acquire') {
        const wait = { waitSeconds: env.acquireWaitSeconds };
        acquired.push(await env.locked(dst, () => acquireMigration(dst, step.disk!, wait)));
      } else await mustRun(dst.runner, virsh.resumeReq(env.uri, req.deployId));
    } catch (e) {
      throw stuck(step, e);
    }
    env.info(`${step.step}${step.disk ? ` ${step.disk}` : ` ${req.deployId}`} on ${step.host}: done`);
  }
  return { ...base, released, acquired };
}
