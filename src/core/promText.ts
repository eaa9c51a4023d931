/**
 * The Prometheus text exposition format (version 0.0.4), as node_exporter's textfile
 * collector reads it: per family a `# HELP` and a `# TYPE` line, then its samples. Label
 * values are escaped (backslash, double quote, line feed) because they carry LV and image
 * names; a name that breaks the grammar would make node_exporter drop the whole file.
 */
import { usageError } from '../exec/errors.js';

export type MetricType = 'gauge' | 'counter';

export interface Sample {
  labels?: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export const escapeLabelValue = (v: string): string =>
  v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
/** HELP text escapes only backslash and line feed (a quote is literal there). */
const escapeHelp = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Record<string, string> | undefined, family: string): string {
  const entries = Object.entries(labels ?? {});
  if (!entries.length) return '';
  for (const [k] of entries)
    if (!LABEL_NAME.test(k) || k.startsWith('__'))
      throw usageError(`label name "${k}" of metric ${family} is not a valid Prometheus label name`);
  return `{${entries.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

/** The families as one text document (a family without samples keeps its HELP and TYPE). */
export function promText(families: readonly MetricFamily[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw usageError(`"${f.name}" is not a valid Prometheus metric name`);
    // The format allows each family once: a second block would be rejected by the parser.
    if (seen.has(f.name)) throw usageError(`metric family ${f.name} is listed twice`);
    seen.add(f.name);
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) lines.push(`${f.name}${labelText(s.labels, f.name)} ${formatValue(s.value)}`);
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}
