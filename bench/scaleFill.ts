/**
 * The scale bench's fill: thousands of cowstack-shaped clone LVs in the repository VG in
 * minutes, where one `lvcreate` at a time in a sanlock VG takes seconds each (each takes the
 * VG lease, writes the whole metadata and looks for a free lease from where it last found one).
 *
 * The VG stays shared (its lock type is never changed) and keeps the PV, metadata area (sized
 * by `cluster init --max-lvs`), tags and lvmlock that cluster init made:
 *   1. every other node stops the lockspace (`vgchange --lockstop`); node1 deactivates the VG's
 *      LVs (lvmlock stays: it holds node1's lockspace) and backs the metadata up;
 *   2. the host appends the fillers to the text, each a copy of a real clone's entry that
 *      cowstack created (same status, flags and tags: so the metadata bytes per LV are the real
 *      ones) with its own name, uuid, one extent and `lock_args = "1.0.0:OFFSET"` at the next
 *      lease slot no LV holds (slots `align` apart from slot 67, as lvmlockd lays them out);
 *      when the last slot is past lvmlock's end, lvmlock grows in the same text by 256 MiB steps
 *      (new segments on free extents, as lvcreate would grow it);
 *   3. node1 restores it (`vgcfgrestore --force --yes`: the global lock lives in this VG, so
 *      node1 stays in the lockspace and LVM asks about the active lvmlock); when lvmlock grew,
 *      node1 stops and starts the lockspace so that lvmlock is active at its new size;
 *   4. node1 writes each filler's lease in one ssh, `sanlock direct init -r
 *      lvm_VG:LVUUID:/dev/mapper/VG-lvmlock:OFFSET` with the LUN's sector and align size
 *      (lvmlockd grants an LV lock only where the lease carries the LV's uuid; a dropped
 *      filler's lease gets `#unused`, as lvremove leaves it); the other nodes start the
 *      lockspace again.
 * lvm2 2.03.16's own `vgchange --lock-type sanlock` (the previous fill) initialized the leases
 * one by one, each searched for from the start of lvmlock: 20 min for 490 LVs.
 */
import { randomBytes } from 'node:crypto';
import type { Testbed } from '../test/testbed/index.js';
import { LEASE_FIRST_LV_SLOT, LEASE_GROW_BYTES, leaseAlignBytes } from '../src/core/capacity.js';
import { REPO_VG } from './harness.js';

export const FILLER_PREFIX = 'fill-';

export interface FillResult {
  added: number;
  seconds: number;
  /** Leases written in lvmlock (fillers' names, or `#unused` for dropped ones). */
  leases: number;
  /**
   * Seconds of each phase: the others' lockstop and the metadata read; node1's lockstop,
   * vgcfgrestore and lockstart; the leases written; the others' lockstart.
   */
  phases: { stop: number; restore: number; leases: number; start: number };
}

const UUID_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** An LVM uuid: 32 characters grouped 6-4-4-4-4-4-6. */
export function lvmUuid(): string {
  const raw = [...randomBytes(32)].map((b) => UUID_CHARS[b % UUID_CHARS.length]).join('');
  return [6, 4, 4, 4, 4, 4, 6]
    .reduce<{ at: number; parts: string[] }>(
      (acc, n) => ({ at: acc.at + n, parts: [...acc.parts, raw.slice(acc.at, acc.at + n)] }),
      { at: 0, parts: [] },
    )
    .parts.join('-');
}

/** The text of the block `name { ... }` that starts at `from` (braces balanced), and where it ends. */
function blockAt(text: string, from: number): { start: number; end: number } {
  const open = text.indexOf('{', from);
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return { start: from, end: i + 1 };
  }
  throw new Error(`unbalanced VG metadata text at ${from}`);
}

/** Extents in use on pv0, from every segment's stripes. */
function usedExtents(text: string, peCount: number): Uint8Array {
  const used = new Uint8Array(peCount);
  const seg = /extent_count = (\d+)[\s\S]*?stripes = \[\s*"pv0", (\d+)/g;
  for (const m of text.matchAll(seg)) {
    const [count, start] = [Number(m[1]), Number(m[2])];
    used.fill(1, start, start + count);
  }
  return used;
}

/** One LV's lease: its sanlock resource name (the LV uuid) and offset in lvmlock. */
export interface Lease {
  name: string;
  uuid: string;
  offset: number;
}

/** The VG metadata text with fillers added or dropped, and the leases to write for them. */
export interface FillerPlan {
  text: string;
  /** Leases the fillers now hold: each to be initialized with the filler's uuid. */
  leases: Lease[];
  /** Offsets no LV holds any more (dropped fillers): each to be marked `#unused` again. */
  freed: number[];
  /** Extents lvmlock grew by. */
  lvmlockGrewBy: number;
}

const numberIn = (text: string, re: RegExp, what: string): number => {
  const n = Number(re.exec(text)?.[1] ?? NaN);
  if (!Number.isFinite(n)) throw new Error(`no ${what} in the VG metadata`);
  return n;
};

/** The `name { ... }` entry of an LV: where it starts (at its indent), ends, and its indent. */
function lvEntry(text: string, name: string): { start: number; end: number; indent: string } {
  const at = new RegExp(`\\n(\\t+)${name} \\{`).exec(text);
  if (!at) throw new Error(`no LV ${name} in the VG metadata`);
  const indent = at[1]!;
  const { end } = blockAt(text, at.index + 1 + indent.length);
  return { start: at.index + 1, end, indent };
}

/** Lease offsets the LVs of the metadata hold (`lock_args = "1.0.0:OFFSET"`). */
export function leaseOffsets(text: string): Set<number> {
  return new Set([...text.matchAll(/lock_args = "\d+\.\d+\.\d+:(\d+)"/g)].map((m) => Number(m[1])));
}

/** Free extents of pv0 taken in order, as runs `[start, count]`, `count` extents in all. */
function takeRuns(used: Uint8Array, count: number, what: string): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let left = count;
  for (let pe = 0; pe < used.length && left > 0; pe++) {
    if (used[pe]) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === pe) last[1]++;
    else runs.push([pe, 1]);
    used[pe] = 1;
    left--;
  }
  if (left > 0) throw new Error(`no free extent left for ${what}: ${left} of ${count} missing`);
  return runs;
}

function segmentText(indent: string, n: number, startExtent: number, extents: number, pe: number): string {
  const i2 = `${indent}\t`;
  const i3 = `${indent}\t\t`;
  return (
    `${i2}segment${n} {\n${i3}start_extent = ${startExtent}\n${i3}extent_count = ${extents}\n\n` +
    `${i3}type = "striped"\n${i3}stripe_count = 1\n\n${i3}stripes = [\n${i3}\t"pv0", ${pe}\n${i3}]\n${i2}}\n`
  );
}

/**
 * lvmlock grown (new segments on free extents, in `stepBytes` steps as lvcreate grows it) until
 * it holds `needBytes`. Returns the text and the extents added.
 */
function growLvmlock(
  text: string,
  used: Uint8Array,
  extentBytes: number,
  needBytes: number,
  stepBytes: number,
): { text: string; grewBy: number } {
  const { start, end, indent } = lvEntry(text, 'lvmlock');
  const entry = text.slice(start, end);
  const extents = [...entry.matchAll(/extent_count = (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
  const have = extents * extentBytes;
  if (have >= needBytes) return { text, grewBy: 0 };
  const grow = (Math.ceil((needBytes - have) / stepBytes) * stepBytes) / extentBytes;
  const segments = numberIn(entry, /segment_count = (\d+)/, 'lvmlock segment_count');
  let at = extents;
  const added = takeRuns(used, grow, 'lvmlock').map(([pe, n], k) => {
    const seg = segmentText(indent, segments + 1 + k, at, n, pe);
    at += n;
    return seg;
  });
  const close = entry.lastIndexOf('}');
  const grown =
    entry
      .slice(0, close)
      .replace(/segment_count = \d+/, `segment_count = ${segments + added.length}`)
      .replace(/\s*$/, '\n\n') +
    added.join('\n') +
    `${indent}}`;
  return { text: text.slice(0, start) + grown + text.slice(end), grewBy: grow };
}

/**
 * The metadata text of a shared (sanlock) VG with `count` more LVs, each a copy of `template`'s
 * entry (its status, flags, tags) with its own name, uuid, one free extent of pv0 and a lease:
 * `lock_args` at the next slot no LV holds, lvmlock grown to cover it. The leases are then to
 * be written in lvmlock (lvmlockd reads the name there before it grants an LV lock). Exported
 * for the unit test; throws when the template, a lease slot or the room is missing.
 */
export function addFillers(
  text: string,
  template: string,
  count: number,
  firstIndex: number,
  alignBytes: number,
): FillerPlan {
  const tpl = lvEntry(text, template);
  const entry = text.slice(tpl.start, tpl.end);
  if (!/lock_args = "/.test(entry)) throw new Error(`LV ${template} has no lock_args: the VG is not a sanlock VG`);
  const peCount = numberIn(text, /pe_count = (\d+)/, 'pe_count');
  const extentBytes = numberIn(text, /extent_size = (\d+)/, 'extent_size') * 512;
  const used = usedExtents(text, peCount);
  const held = leaseOffsets(text);
  const leases: Lease[] = [];
  for (let slot = LEASE_FIRST_LV_SLOT; leases.length < count; slot++) {
    const offset = slot * alignBytes;
    if (held.has(offset)) continue;
    const name = `${FILLER_PREFIX}${String(firstIndex + leases.length).padStart(5, '0')}`;
    // vgcfgrestore keeps one of two LVs of the same name without a word: refuse it here.
    if (new RegExp(`\\n\\t+${name} \\{`).test(text)) throw new Error(`LV ${name} is already in the VG metadata`);
    leases.push({ name, uuid: lvmUuid(), offset });
  }
  const last = leases.length ? leases[leases.length - 1]!.offset + alignBytes : 0;
  const grown = growLvmlock(text, used, extentBytes, last, LEASE_GROW_BYTES);
  const out = leases.map((l, k) => {
    const [[pe]] = takeRuns(used, 1, `filler ${k + 1} of ${count}`) as [[number, number]];
    return (
      '\n\n' +
      entry
        .replace(`${template} {`, `${l.name} {`)
        .replace(/id = "[^"]+"/, `id = "${l.uuid}"`)
        .replace(/lock_args = "[^"]+"/, `lock_args = "1.0.0:${l.offset}"`)
        .replace(/segment_count = \d+/, 'segment_count = 1')
        .replace(/\t*segment1 \{[\s\S]*$/, `${segmentText(tpl.indent, 1, 0, 1, pe)}${tpl.indent}}`)
    );
  });
  // The fillers go after the template, which the lvmlock growth (a later or earlier entry) may have moved.
  const at = lvEntry(grown.text, template).end;
  return {
    text: grown.text.slice(0, at) + out.join('') + grown.text.slice(at),
    leases,
    freed: [],
    lvmlockGrewBy: grown.grewBy,
  };
}

/** The metadata text without its last `count` fillers, and the lease offsets they held. */
export function dropFillers(text: string, count: number): FillerPlan {
  const at = [...text.matchAll(new RegExp(`\\n(\\t+)${FILLER_PREFIX}\\d+ \\{`, 'g'))];
  if (at.length < count) throw new Error(`the VG holds ${at.length} fillers, ${count} were to go`);
  let out = text;
  const freed: number[] = [];
  for (const m of at.slice(at.length - count).reverse()) {
    const { end } = blockAt(out, m.index + 1 + m[1]!.length);
    freed.push(...leaseOffsets(out.slice(m.index, end)));
    out = out.slice(0, m.index) + out.slice(end);
  }
  return { text: out, leases: [], freed: freed.reverse(), lvmlockGrewBy: 0 };
}

/**
 * The lines the guest's lease writer reads: `RESOURCE OFFSET`, one lease each (a filler's
 * uuid, or `#unused` as lvmlockd marks a removed LV's lease).
 */
export function leaseLines(plan: FillerPlan): string {
  return [...plan.leases.map((l) => `${l.uuid} ${l.offset}`), ...plan.freed.map((o) => `#unused ${o}`)]
    .map((l) => `${l}\n`)
    .join('');
}

async function run(tb: Testbed, node: string, argv: string[], input?: string): Promise<string> {
  const r = await tb.ssh(node, argv, { timeoutMs: 3_600_000, ...(input !== undefined ? { input } : {}) });
  if (r.exitCode !== 0) throw new Error(`${node}: ${argv.join(' ')} failed (${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout;
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * Writes the leases (`RESOURCE OFFSET` lines on stdin) into lvmlock in one ssh: one `sanlock
 * direct init` each, with the sector and align size lvmlockd's own leases have on this LUN.
 */
const LEASE_WRITER = [
  'set -e',
  'n=0',
  'while read -r res off; do',
  '  sanlock direct init -Z "$1" -A "$2" -r "$3:$res:$4:$off" >/dev/null',
  '  n=$((n+1))',
  'done',
  'echo "$n"',
].join('\n');

/**
 * Adds fillers until the VG holds `target` LVs (hidden ones not counted), copying `template`,
 * or drops the last fillers down to it. Nothing of the VG may be active on any node but
 * lvmlock (the bench unmaps all first). `sectorBytes` is the LUN's physical sector size, which
 * sets lvmlockd's lease size.
 */
export async function fillTo(tb: Testbed, target: number, template: string, sectorBytes: number): Promise<FillResult> {
  const count = async () =>
    Number((await run(tb, 'node1', ['vgs', '--nolocking', '--noheadings', '-o', 'lv_count', REPO_VG])).trim());
  const have = await count();
  const add = target - have;
  if (add === 0) return { added: 0, seconds: 0, leases: 0, phases: { stop: 0, restore: 0, leases: 0, start: 0 } };
  // New fillers are numbered after the highest one (a proof may have removed one below it).
  const existing = (await run(tb, 'node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(FILLER_PREFIX))
    .reduce((n, l) => Math.max(n, Number(l.slice(FILLER_PREFIX.length)) + 1), 0);
  const others = tb.nodes.filter((n) => n.name !== 'node1').map((n) => n.name);
  const align = leaseAlignBytes(sectorBytes);
  const t0 = process.hrtime.bigint();
  // 1. Only node1 in the lockspace, nothing of the VG active but lvmlock: no host can hold a
  //    lock on, or cache the metadata of, what is rewritten. The metadata as LVM has it.
  for (const node of others) await run(tb, node, ['vgchange', '--lockstop', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '-an', REPO_VG]);
  await run(tb, 'node1', ['vgcfgbackup', '-f', '/root/scale-before.vg', REPO_VG]);
  const text = await run(tb, 'node1', ['cat', '/root/scale-before.vg']);
  const plan = add > 0 ? addFillers(text, template, add, existing, align) : dropFillers(text, -add);
  await run(tb, 'node1', ['dd', 'of=/root/scale-after.vg', 'status=none'], plan.text);
  const stop = seconds(t0);
  // 2. One metadata write for all of them (lvmlock grown in it when the leases need room).
  //    vgcfgrestore takes the global lock, which this VG holds: node1 stays in the lockspace,
  //    so lvmlock is active and the restore must be forced past LVM's question about it.
  //    A grown lvmlock reaches its new size on node1 when the lockspace starts again (LVM
  //    refuses `lvchange --refresh` of the hidden LV).
  const t1 = process.hrtime.bigint();
  await run(tb, 'node1', ['vgcfgrestore', '--force', '--yes', '-f', '/root/scale-after.vg', REPO_VG]);
  if (plan.lvmlockGrewBy > 0) {
    await run(tb, 'node1', ['vgchange', '--lockstop', REPO_VG]);
    await run(tb, 'node1', ['vgchange', '--lockstart', REPO_VG]);
  }
  const restore = seconds(t1);
  // 3. Each filler's lease named as lvmlockd names it (the LV uuid), each dropped one's
  //    `#unused` as lvremove leaves it; lvmlockd checks the name before it grants an LV lock.
  const t2 = process.hrtime.bigint();
  const lines = leaseLines(plan);
  const written = Number(
    (
      await run(
        tb,
        'node1',
        [
          'bash',
          '-c',
          LEASE_WRITER,
          'lease-writer',
          String(sectorBytes),
          `${align / 2 ** 20}M`,
          `lvm_${REPO_VG}`,
          `/dev/mapper/${REPO_VG}-lvmlock`,
        ],
        lines,
      )
    ).trim(),
  );
  const expected = plan.leases.length + plan.freed.length;
  if (written !== expected) throw new Error(`fill: ${written} leases written, expected ${expected}`);
  const leases = seconds(t2);
  const t3 = process.hrtime.bigint();
  for (const node of others) await run(tb, node, ['vgchange', '--lockstart', REPO_VG]);
  const start = seconds(t3);
  const now = await count();
  if (now !== target) throw new Error(`fill: the VG holds ${now} LVs, expected ${target}`);
  return { added: add, seconds: seconds(t0), leases: written, phases: { stop, restore, leases, start } };
}
