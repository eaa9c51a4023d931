/**
 * Shared by the unit tests: assertions on cowstack's typed errors and the exact argv of the
 * LVM reports. The argv are spelled out here on purpose (not imported from src/tools/lvm.ts)
 * so a change to what cowstack sends to LVM fails a test.
 */
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { expect, vi } from 'vitest';
import { CowstackError, type ExitCode } from '../../src/exec/errors.js';
import { RecordingRunner } from '../../src/exec/recordingRunner.js';

/** Runs fn, expects a CowstackError with that exit code, returns it. */
export function thrownBy(fn: () => unknown, exitCode: ExitCode): CowstackError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected an error to be thrown').toBeInstanceOf(CowstackError);
  expect((caught as CowstackError).exitCode).toBe(exitCode);
  return caught as CowstackError;
}

/** Awaits p, expects it to reject with a CowstackError with that exit code, returns it. */
export async function rejectionOf(p: Promise<unknown>, exitCode: ExitCode): Promise<CowstackError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a rejection').toBeInstanceOf(CowstackError);
  expect((caught as CowstackError).exitCode, (caught as Error).message).toBe(exitCode);
  return caught as CowstackError;
}

export const REPORT = ['--reportformat', 'json', '--units', 'b', '--nosuffix', '--binary'];
export const LV_COLUMNS =
  'lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_tags,lv_active_locally,lv_active_exclusively,lv_permissions,' +
  'lv_device_open,lv_dm_path,lv_lock_args,lv_time,lv_kernel_major,lv_kernel_minor,vg_free,vg_mda_free';
export const VG_COLUMNS =
  'vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_lock_type,vg_lock_args,vg_shared,vg_tags,pv_count,lv_count';
export const PV_COLUMNS = 'pv_name,vg_name,pv_uuid,pv_size,dev_size';

export const lvsArgv = (target: string, config: string[] = []) => [
  'lvs',
  ...config,
  '--nolocking',
  ...REPORT,
  '-o',
  LV_COLUMNS,
  target,
];
export const vgsArgv = (vg: string, config: string[] = []) => ['vgs', ...config, ...REPORT, '-o', VG_COLUMNS, vg];

/**
 * One report row the way lvm2 2.03.16 `--reportformat json` prints it (see the REAL capture
 * test/fixtures/lvm2-2.03.16-bookworm/lvs-repo.json): every value a string, a string list
 * (tags) one comma-joined string, fields separated by ", ". Fixtures may write numbers and
 * tag arrays for readability; they reach the parsers in the real shape.
 */
export function reportRow(row: Record<string, unknown>): string {
  const fields = Object.entries(row)
    .filter(([, v]) => v !== undefined)
    .map(
      ([k, v]) =>
        [
          k,
          Array.isArray(v) ? v.join(',') : typeof v === 'boolean' ? (v ? '1' : '0') : v === null ? '' : String(v),
        ] as const,
    );
  return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(', ')}}`;
}

function reportJson(key: 'lv' | 'vg', rows: Array<Record<string, unknown>>): string {
  const body = rows.map((r) => `                  ${reportRow(r)}`).join(',\n');
  return (
    `  {\n      "report": [\n          {\n              "${key}": [\n${body}\n              ]\n          }\n` +
    '      ]\n  }\n'
  );
}

/** One json document the way `lvs --reportformat json --binary` prints it (lvm2 2.03.16). */
export const lvsJson = (rows: Array<Record<string, unknown>>): string => reportJson('lv', rows);
export const vgsJson = (rows: Array<Record<string, unknown>>): string => reportJson('vg', rows);

/**
 * REAL output captured on the testbed (Debian bookworm, lvm2 2.03.16, sanlock 3.8.5, open-iscsi 2.1.8),
 * byte for byte.
 */
export const capture = (name: string): string =>
  readFileSync(new URL(`../fixtures/lvm2-2.03.16-bookworm/${name}`, import.meta.url), 'utf8');

/**
 * The REAL stderr of a refused `lvchange -aey repo/probe` (exit 5). The capture file ends
 * with the capture script's "exit=5" line, which lvchange did not print: it is cut off here.
 */
export const conflictStderr = (): string => capture('lvchange-aey-conflict.stderr').replace(/^exit=\d+\n?$/m, '');

/** The header line of `sanlock direct dump` (sanlock 3.8.5, from the capture). */
export const SANLOCK_DUMP_HEADER =
  '  offset                            lockspace                                         resource  timestamp  own  ' +
  'gen lver';

/**
 * SYNTHETIC: `sanlock direct dump /dev/mapper/VG-lvmlock:OFFSET:1048576`, the paxos lease of
 * one LV, in the layout of the REAL captures sanlock-dump-lease-held.txt / -free.txt
 * ("%08llu %36s %48s %010llu %04llu %04llu %llu"). Held while timestamp is non-zero.
 */
export function leaseDump(o: {
  offset: number;
  vg: string;
  uuid: string;
  owner: number;
  timestamp: number;
  generation?: number;
  lver?: number;
}): string {
  const row = [
    String(o.offset).padStart(8, '0'),
    `lvm_${o.vg}`.padStart(36),
    o.uuid.padStart(48),
    String(o.timestamp).padStart(10, '0'),
    String(o.owner).padStart(4, '0'),
    String(o.generation ?? 1).padStart(4, '0'),
    String(o.lver ?? 1),
  ].join(' ');
  return `${SANLOCK_DUMP_HEADER}\n${row}\n`;
}

/** The argv of that read. */
export const leaseDumpArgv = (vg: string, offset: number) => [
  'sanlock',
  'direct',
  'dump',
  `/dev/mapper/${vg.replace(/-/g, '--')}-lvmlock:${offset}:1048576`,
];
/** The argv of the delta-lease read (host names) at the start of the lvmlock LV. */
export const deltaDumpArgv = (vg: string) => [
  'sanlock',
  'direct',
  'dump',
  `/dev/mapper/${vg.replace(/-/g, '--')}-lvmlock`,
];

/** A RecordingRunner plus the check every test ends with: nothing left over, nothing mismatched. */
export const recorder = (target = 'local') => new RecordingRunner(target);

export const T1_UUID = 'r1SXRd-3kQf-Xc8T-9WQr-pZ0N-fYx4-2cVb1M';

/**
 * SYNTHETIC: `lvs repo/t1` as lvm2 2.03.16 json --binary prints it (lvsJson), in the given
 * activation state: a clone LV with its lease's offset in its lock args.
 */
export const t1 = (state: { active?: boolean; exclusive?: boolean; open?: boolean } = {}) =>
  lvsJson([
    {
      lv_name: 't1',
      vg_name: 'repo',
      lv_uuid: T1_UUID,
      lv_size: 8388608,
      lv_attr: state.active ? `-wi-a${state.open ? '-o' : '--'}---` : '-wi-------',
      lv_tags: ['cowstack_role:clone'],
      lv_active_locally: state.active ? 1 : 0,
      lv_active_exclusively: state.exclusive ? 1 : 0,
      lv_permissions: 'writeable',
      lv_device_open: state.open ? 1 : 0,
      lv_dm_path: '/dev/mapper/repo-t1',
      lv_lockargs: '1.0.0:70254592',
      lv_time: '2026-01-12 10:25:44 +0000',
      lv_kernel_major: state.active ? 253 : -1,
      lv_kernel_minor: state.active ? 3 : -1,
    },
  ]);

/** Host file commands as tools/files.ts and tools/host.ts spell them (install, the front-end's remotes). */
export const catArgv = (file: string) => ['cat', '--', file];
/** A file written from stdin (the content is the call's input). */
export const installFromStdinArgv = (file: string, mode: string) => [
  'install',
  '-D',
  '-m',
  mode,
  '/proc/self/fd/0',
  file,
];
export const fileModesArgv = (dir: string) => ['find', dir, '-maxdepth', '1', '-type', 'f', '-printf', '%f %m\\n'];
export const userIdArgv = ['id', '-u'];

/** RecordingRunner ignores stdin: read the stream given to the first dd as dd would. */
export async function ddInput(r: RecordingRunner): Promise<Buffer> {
  // Before dd the source may be expanded by a real gzip/zstd/qemu-img: on a machine busy with
  // testbed guests that took over waitFor's default second (a CI run failed so).
  const dd = await vi.waitFor(
    () => {
      const c = r.calls.find((x) => x.argv[0] === 'dd');
      if (!c) throw new Error('dd has not run yet');
      return c;
    },
    { timeout: 60_000, interval: 20 },
  );
  expect(dd).toMatchObject({ kind: 'write', root: true, timeout: 'data' });
  const chunks: Buffer[] = [];
  for await (const c of dd.stdin as Readable) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
