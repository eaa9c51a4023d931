/**
 * The scale bench's fill: thousands of cowstack-shaped clone LVs in the repository VG in
 * minutes, where one `lvcreate` at a time in a sanlock VG takes seconds each under TCG (each
 * takes the VG lease, writes the whole metadata and initializes a lease).
 *
 * How, with LVM's own supported tools (lvmlockd(8), "changing a local VG to a lockd VG"):
 *   1. every node but node1 stops the lockspace (`vgchange --lockstop`), node1 deactivates
 *      the VG's LVs and makes it local (`vgchange --lock-type none`: lvmlock goes away);
 *   2. node1 backs the metadata up (`vgcfgbackup`), the host appends the filler LVs to the
 *      text, each a copy of a real clone's entry that cowstack created (same status, flags
 *      and tags: so the metadata bytes per LV are the real ones) with its own name, uuid and
 *      one extent, and node1 restores it (`vgcfgrestore`): one metadata write for all of them;
 *   3. node1 makes the VG shared again (`vgchange --lock-type sanlock`), which creates
 *      `lvmlock` sized for every LV and initializes one sanlock lease per LV, and every node
 *      starts the lockspace again.
 * The PV, its metadata area (sized by `cluster init --max-lvs`) and the VG's tags are those
 * cluster init made; only lvmlock is recreated, by LVM, as it would be for any converted VG.
 */
import { randomBytes } from 'node:crypto';
import type { Testbed } from '../test/testbed/index.js';
import { REPO_VG } from './harness.js';

export const FILLER_PREFIX = 'fill-';

export interface FillResult {
  added: number;
  seconds: number;
  /** Seconds of each phase: stop + make local, generate + restore, make shared + start. */
  phases: { local: number; restore: number; shared: number };
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

/**
 * The metadata text with `count` more LVs, each a copy of `template`'s entry on one free extent
 * of pv0. Exported for the unit test; throws when the template or the room is missing.
 */
export function addFillers(text: string, template: string, count: number, firstIndex: number): string {
  const at = new RegExp(`\\n(\\t+)${template} \\{`).exec(text);
  if (!at) throw new Error(`no LV ${template} in the VG metadata to copy fillers from`);
  const indent = at[1]!;
  const { start, end } = blockAt(text, at.index + 1 + indent.length);
  const entry = text.slice(start, end);
  const peCount = Number(/pe_count = (\d+)/.exec(text)?.[1] ?? NaN);
  if (!Number.isFinite(peCount)) throw new Error('no pe_count in the VG metadata');
  const used = usedExtents(text, peCount);
  const out: string[] = [];
  let pe = 0;
  for (let k = 0; k < count; k++) {
    while (pe < peCount && used[pe]) pe++;
    if (pe >= peCount) throw new Error(`no free extent left for filler ${k + 1} of ${count}`);
    const name = `${FILLER_PREFIX}${String(firstIndex + k).padStart(5, '0')}`;
    out.push(
      `\n\n${indent}` +
        entry
          .replace(`${template} {`, `${name} {`)
          .replace(/id = "[^"]+"/, `id = "${lvmUuid()}"`)
          .replace(/segment_count = \d+/, 'segment_count = 1')
          .replace(/segment1 \{[\s\S]*$/, segmentText(indent, pe)),
    );
    used[pe] = 1;
  }
  return text.slice(0, end) + out.join('') + text.slice(end);
}

function segmentText(indent: string, pe: number): string {
  const i2 = `${indent}\t`;
  const i3 = `${indent}\t\t`;
  return (
    `segment1 {\n${i3}start_extent = 0\n${i3}extent_count = 1\n\n${i3}type = "striped"\n` +
    `${i3}stripe_count = 1\n\n${i3}stripes = [\n${i3}\t"pv0", ${pe}\n${i3}]\n${i2}}\n${indent}}`
  );
}

async function run(tb: Testbed, node: string, argv: string[], input?: string): Promise<string> {
  const r = await tb.ssh(node, argv, { timeoutMs: 3_600_000, ...(input !== undefined ? { input } : {}) });
  if (r.exitCode !== 0) throw new Error(`${node}: ${argv.join(' ')} failed (${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout;
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * Adds fillers until the VG holds `target` LVs (hidden ones not counted), copying `template`.
 * Nothing of the VG may be active on any node (the bench unmaps all first).
 */
export async function fillTo(tb: Testbed, target: number, template: string): Promise<FillResult> {
  const count = async () =>
    Number((await run(tb, 'node1', ['vgs', '--nolocking', '--noheadings', '-o', 'lv_count', REPO_VG])).trim());
  const have = await count();
  const add = target - have;
  if (add <= 0) return { added: 0, seconds: 0, phases: { local: 0, restore: 0, shared: 0 } };
  const existing = (await run(tb, 'node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]))
    .split('\n')
    .filter((l) => l.trim().startsWith(FILLER_PREFIX)).length;
  const others = tb.nodes.filter((n) => n.name !== 'node1').map((n) => n.name);
  const t0 = process.hrtime.bigint();
  for (const node of others) await run(tb, node, ['vgchange', '--lockstop', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '-an', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '--lock-type', 'none', REPO_VG]);
  const local = seconds(t0);
  const t1 = process.hrtime.bigint();
  await run(tb, 'node1', ['vgcfgbackup', '-f', '/root/scale-before.vg', REPO_VG]);
  const text = await run(tb, 'node1', ['cat', '/root/scale-before.vg']);
  await run(tb, 'node1', ['dd', 'of=/root/scale-after.vg', 'status=none'], addFillers(text, template, add, existing));
  await run(tb, 'node1', ['vgcfgrestore', '-f', '/root/scale-after.vg', REPO_VG]);
  const restore = seconds(t1);
  const t2 = process.hrtime.bigint();
  await run(tb, 'node1', ['vgchange', '--lock-type', 'sanlock', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '--lockstart', REPO_VG]);
  for (const node of others) await run(tb, node, ['vgchange', '--lockstart', REPO_VG]);
  const shared = seconds(t2);
  const now = await count();
  if (now !== target) throw new Error(`fill: the VG holds ${now} LVs, expected ${target}`);
  return { added: add, seconds: seconds(t0), phases: { local, restore, shared } };
}
