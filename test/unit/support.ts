/**
 * Shared by the unit tests: assertions on cowstack's typed errors and the exact argv of the
 * LVM reports. The argv are spelled out here on purpose (not imported from src/tools/lvm.ts)
 * so a change to what cowstack sends to LVM fails a test.
 */
import { expect } from 'vitest';
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

export const REPORT = ['--reportformat', 'json_std', '--units', 'b', '--nosuffix', '--binary'];
export const LV_COLUMNS =
  'lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_tags,lv_active_locally,lv_active_exclusively,lv_permissions,lv_device_open,lv_dm_path,lv_lock_args,lv_time,lv_kernel_major,lv_kernel_minor';
export const VG_COLUMNS = 'vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_lock_type,vg_lock_args,vg_shared,vg_tags,pv_count,lv_count';
export const PV_COLUMNS = 'pv_name,vg_name,pv_uuid,pv_size,dev_size';

export const lvsArgv = (target: string, config: string[] = []) => ['lvs', ...config, ...REPORT, '-o', LV_COLUMNS, target];
export const vgsArgv = (vg: string, config: string[] = []) => ['vgs', ...config, ...REPORT, '-o', VG_COLUMNS, vg];

/** One json_std document the way `lvs --reportformat json_std --binary` prints it. */
export function lvsJson(rows: Array<Record<string, unknown>>): string {
  const body = rows.map((r) => `                ${JSON.stringify(r)}`).join(',\n');
  return `  {\n      "report": [\n          {\n              "lv": [\n${body}\n              ]\n          }\n      ]\n  }\n`;
}

export function vgsJson(rows: Array<Record<string, unknown>>): string {
  const body = rows.map((r) => `                ${JSON.stringify(r)}`).join(',\n');
  return `  {\n      "report": [\n          {\n              "vg": [\n${body}\n              ]\n          }\n      ]\n  }\n`;
}

/** A RecordingRunner plus the check every test ends with: nothing left over, nothing mismatched. */
export const recorder = (target = 'local') => new RecordingRunner(target);
