/** `cowstack clone migrate prepare|release|acquire|abort`: the steps of a live migration's disk hand-over. */
import { InvalidArgumentError, type Command } from 'commander';
import {
  abortMigration,
  acquireMigration,
  prepareMigration,
  releaseMigration,
  type MigrateResult,
} from '../../core/migrate.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

const describe = (r: MigrateResult): string => {
  const what: Record<MigrateResult['action'], string> = {
    prepared: 'prepared: ancestors mapped read-only, placeholder in place (EIO until acquire)',
    released: 'released: snapshot removed, COW deactivated, hand-over recorded',
    acquired: 'acquired: COW held here, snapshot loaded into the placeholder',
    aborted: 'aborted: placeholder removed, unused ancestors released',
    none: 'already so: nothing to do',
  };
  const h = r.handover
    ? ` (${r.handover.allocatedSectors} allocated, ${r.handover.metadataSectors} metadata sectors)`
    : '';
  const wb = r.flushedBlocks !== undefined ? `\n${r.flushedBlocks} write-back block(s) drained first` : '';
  const dev = r.device && r.action !== 'none' ? `\n${r.device}` : '';
  const warn = (r.warnings ?? []).map((w) => `\nwarning: ${w}`).join('');
  return `${r.vg}/${r.name}: ${r.step} ${what[r.action]}${h}${wb}${dev}${warn}`;
};

const seconds = (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 3600) throw new InvalidArgumentError('give whole seconds from 0 to 3600');
  return n;
};

export function registerMigrate(clone: Command): void {
  const migrate = clone
    .command('migrate')
    .description("hand a running VM's writable clone from one host to another (live migration; README)");

  vgOption(
    migrate
      .command('prepare')
      .description('destination, before the migration: map the ancestors and create the disk as an EIO placeholder')
      .argument('<name>'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => prepareMigration(op, name)), describe);
  });

  vgOption(
    migrate
      .command('release')
      .description('source, once its qemu closed the disk: drain caches, record, unmap and release the COW')
      .argument('<name>'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => releaseMigration(op, name)), describe);
  });

  vgOption(
    migrate
      .command('acquire')
      .description('destination, after release: take the COW and load its snapshot into the placeholder')
      .argument('<name>')
      .option('--wait <seconds>', 'keep asking for the lock this long while another host holds it', seconds, 10),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => acquireMigration(op, name, { waitSeconds: o.wait }));
    await ctx.finish(r, describe);
  });

  vgOption(
    migrate
      .command('abort')
      .description('either host: remove the placeholder and release unused ancestors (a host running the VM keeps it)')
      .argument('<name>')
      .option('--force', 'even if the placeholder is open (its opener gets I/O errors, as it already does)'),
  ).action(async (name: string, o, cmd: Command) => {
    const ctx = createContext(cmd);
    await ctx.finish(await ctx.locked(o.vg, (op) => abortMigration(op, name, { force: o.force })), describe);
  });
}
