/**
 * `cowstack backup create|restore`: the backups the TM driver's prebackup makes, by hand
 * (core/backups.ts): one disk's full or incremental backup file, and a backup chain
 * written back into a new image.
 */
import type { Command } from 'commander';
import { backupDisk, restoreImage, type BackupResult, type RestoreResult } from '../../core/backups.js';
import { usageError } from '../../exec/errors.js';
import { formatSize } from '../../core/validate.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

function parseIncrement(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^(0|[1-9][0-9]{0,8})$/.test(text))
    throw usageError(
      `increment "${text}" is not a number`,
      "give 0 for a chain's full backup, N for the N-th increment",
    );
  return Number(text);
}

export function register(program: Command): void {
  const backup = program
    .command('backup')
    .description("backups of a clone's disk as qcow2 files (full and incremental)");

  vgOption(
    backup
      .command('create')
      .description('back up a live clone into a qcow2 file on this node (not open, or --live)')
      .argument('<clone>')
      .requiredOption('--file <path>', 'the backup file to write (absolute path)')
      .option(
        '--increment <n>',
        'incremental mode: take backup point N (0: the full backup of a new chain; N: what changed since N-1)',
      )
      .option(
        '--live',
        'the disk is open here (a running VM): take the point without closing it, pausing its I/O for the switch',
      ),
  ).action(async (name: string, o: { file: string; increment?: string; live?: boolean; vg?: string }, cmd: Command) => {
    const ctx = createContext(cmd);
    const increment = parseIncrement(o.increment);
    const cow = { chunk: ctx.config.cow.chunk, defaultPercent: ctx.config.tm.cowPercent };
    const r = await ctx.locked(o.vg, (op) => backupDisk(op, { top: name, file: o.file, increment, cow, live: o.live }));
    await ctx.finish(
      r,
      (x: BackupResult) =>
        `${x.top}: ${x.kind} backup of ${formatSize(x.bytes)} in ${x.file}` +
        `${x.point ? ` (point ${x.point})` : ''}${x.ranges ? `, ${x.ranges.length} changed range(s)` : ''}` +
        `${x.pauseMs === undefined ? '' : `; the disk was paused ${x.pauseMs} ms`}` +
        `${x.writeback ? ` (write-back cache drained: ${x.writeback.drainedBlocks} block(s) before the pause)` : ''}` +
        `${x.point && x.levels !== undefined ? `; ${x.top} now stands on ${x.levels} snapshot level(s)` : ''}`,
    );
  });

  vgOption(
    backup
      .command('restore')
      .description('write a full backup and its increments (in order) into a new sealed image')
      .argument('<image>', 'the new image')
      .argument('<files...>', 'the full backup, then its increments: qcow2 files on this node'),
  ).action(async (image: string, files: string[], o: { vg?: string }, cmd: Command) => {
    const ctx = createContext(cmd);
    const r = await ctx.locked(o.vg, (op) => restoreImage(op, image, files));
    await ctx.finish(
      r,
      (x: RestoreResult) =>
        `${x.vg}/${x.image}: ${x.action === 'none' ? 'already restored' : 'restored'} from ${x.files.length} ` +
        `file(s) (${formatSize(x.sizeBytes)}${x.sha256 ? `, sha256 ${x.sha256}` : ''})`,
    );
  });
}
