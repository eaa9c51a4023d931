/**
 * `cowstack metrics [--output FILE]`: this node's cowstack metrics in the Prometheus text
 * format, for node_exporter's textfile collector (cluster-conf/cowstack-metrics.timer runs
 * it every minute). Without --output the text goes to stdout; --json gives the same numbers
 * as one JSON document. The file is written where cowstack runs, also with --host. Without
 * --vg it covers every repository VG the config names, each sample labelled with its VG.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { repositoryVgs } from '../../core/config.js';
import { familiesOf } from '../../core/metricFamilies.js';
import { acrossRepositories, collectMetrics, type NodeMetrics } from '../../core/metrics.js';
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

/** The JSON document: one repository's collection, all of them when there are several. */
export type MetricsResult = NodeMetrics & { repositories?: NodeMetrics[]; output?: string };

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
    // --vg: that repository; else every repository the config names (a site that grew has several).
    const vgs = o.vg ? [o.vg] : repositoryVgs(ctx.config);
    const each: NodeMetrics[] = [];
    for (const vg of vgs)
      each.push(
        await collectMetrics(ctx.op(vg), {
          warnPercent: ctx.config.cow.warnPercent,
          capacityWarnPercent: ctx.config.capacity.warnPercent,
        }),
      );
    const all = acrossRepositories(each);
    const m = all[0]!;
    const text = promText(familiesOf(all));
    if (output) await writeFileAtomic(output, text);
    // --json: the first repository's collection as before, and with several all of them.
    const result: MetricsResult = {
      ...m,
      ...(all.length > 1 ? { repositories: all } : {}),
      ...(output ? { output: path.resolve(output) } : {}),
    };
    const what = all.map((c) => c.vg).join(', ');
    // With --output, stdout says where the file went (a timer's journal shows it); without, it is the text.
    await ctx.finish(result, () => (output ? `metrics of ${what} written to ${result.output}` : text));
  });
}
