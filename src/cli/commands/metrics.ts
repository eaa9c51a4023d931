/**
 * `cowstack metrics [--output FILE]`: this node's cowstack metrics in the Prometheus text
 * format, for node_exporter's textfile collector (cluster-conf/cowstack-metrics.timer runs
 * it every minute). Without --output the text goes to stdout; --json gives the same numbers
 * as one JSON document. The file is written where cowstack runs, also with --host.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { metricFamilies } from '../../core/metricFamilies.js';
import { collectMetrics, type NodeMetrics } from '../../core/metrics.js';
import { promText } from '../../core/promText.js';
import { usageError } from '../../exec/errors.js';
import { writeFileAtomic } from '../atomicFile.js';
import { createContext } from '../context.js';
import { vgOption } from './shared.js';

/** node_exporter's textfile collector reads only `*.prom` files: any other name would never be published. */
export function validateOutput(file: string): string {
  if (!file || file.endsWith('/') || path.extname(file) !== '.prom' || path.basename(file) === '.prom')
    throw usageError(
      `--output "${file}" must name a file ending in .prom`,
      "node_exporter's textfile collector reads only *.prom files, e.g. " +
        '/var/lib/prometheus/node-exporter/cowstack.prom',
    );
  return file;
}

export function register(program: Command): void {
  vgOption(
    program
      .command('metrics')
      .description(
        "this node's COW use, caches, replicas, LV locks, repository capacity and interrupted operations " +
          'in the Prometheus text format (node_exporter textfile collector)',
      )
      .option('--output <file>', 'write the metrics atomically to FILE (*.prom) instead of stdout'),
  ).action(async (o: { vg?: string; output?: string }, cmd: Command) => {
    const output = o.output === undefined ? undefined : validateOutput(o.output);
    const ctx = createContext(cmd);
    const m = await collectMetrics(ctx.op(o.vg), {
      warnPercent: ctx.config.cow.warnPercent,
      capacityWarnPercent: ctx.config.capacity.warnPercent,
    });
    const text = promText(metricFamilies(m));
    if (output) await writeFileAtomic(output, text);
    const result: NodeMetrics & { output?: string } = output ? { ...m, output: path.resolve(output) } : m;
    // With --output, stdout says where the file went (a timer's journal shows it); without, it is the text.
    await ctx.finish(result, () => (output ? `metrics of ${m.vg} written to ${result.output}` : text));
  });
}
