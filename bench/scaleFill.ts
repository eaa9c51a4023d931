/**
 * The scale bench's fill: thousands of cowstack-shaped clone LVs in the repository VG in
 * minutes, where one `lvcreate` at a time in a sanlock VG takes seconds each under TCG (each
 * takes the VG lease, writes the whole metadata and initializes a lease).
 *
 * How, with LVM's own supported tools (lvmlockd(8): "changing a local VG to a lockd VG"):
 *   1. node1 makes a small temporary sanlock VG on a loop device (GL_VG) and moves the global
 *      lock there (`lvmlockctl --gl-disable repo`, `--gl-enable GL_VG`): changing a VG's lock
 *      type takes the global lock, and a VG that is local holds none;
 *   2. every other node stops the lockspace (`vgchange --lockstop`), node1 deactivates the
 *      VG's LVs and makes it local (`vgchange --lock-type none`: lvmlock goes away);
 *   3. node1 backs the metadata up (`vgcfgbackup`), the host appends the filler LVs to the
 *      text, each a copy of a real clone's entry that cowstack created (same status, flags
 *      and tags: so the metadata bytes per LV are the real ones) with its own name, uuid and
 *      one extent, and node1 restores it (`vgcfgrestore`): one metadata write for all of them;
 *   4. node1 makes the VG shared again (`vgchange --lock-type sanlock`), which creates
 *      `lvmlock` sized for every LV and initializes one sanlock lease per LV, starts its
 *      lockspace, moves the global lock back and removes GL_VG; the other nodes start the
 *      lockspace again.
 * The PV, its metadata area (sized by `cluster init --max-lvs`) and the VG's tags are those
 * cluster init made; only lvmlock is recreated, by LVM, as it would be for any converted VG.
 */
import { randomBytes } from 'node:crypto';
import type { Testbed } from '../test/testbed/index.js';
import { REPO_VG } from './harness.js';

export const FILLER_PREFIX = 'fill-';
/** The temporary VG that holds the global lock while the repository VG is local. */
const GL_VG = 'scalegl';
const GL_FILE = '/root/scalegl.img';

export interface FillResult {
  added: number;
  seconds: number;
  /** Seconds of each phase: global lock moved + stop + make local, generate + restore, make shared + start. */
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

/** The metadata text without its last `count` fillers (a VG shrunk to a smaller count). */
export function dropFillers(text: string, count: number): string {
  const at = [...text.matchAll(new RegExp(`\\n(\\t+)${FILLER_PREFIX}\\d+ \\{`, 'g'))];
  if (at.length < count) throw new Error(`the VG holds ${at.length} fillers, ${count} were to go`);
  let out = text;
  for (const m of at.slice(at.length - count).reverse()) {
    const { end } = blockAt(out, m.index + 1 + m[1]!.length);
    out = out.slice(0, m.index) + out.slice(end);
  }
  return out;
}

async function run(tb: Testbed, node: string, argv: string[], input?: string): Promise<string> {
  const r = await tb.ssh(node, argv, { timeoutMs: 3_600_000, ...(input !== undefined ? { input } : {}) });
  if (r.exitCode !== 0) throw new Error(`${node}: ${argv.join(' ')} failed (${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout;
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/** The global lock back in the repository VG, GL_VG removed, the lockspace started everywhere. */
async function dropGlVg(tb: Testbed, others: string[]): Promise<void> {
  await run(tb, 'node1', ['lvmlockctl', '--gl-disable', GL_VG]);
  await run(tb, 'node1', ['lvmlockctl', '--gl-enable', REPO_VG]);
  await run(tb, 'node1', ['vgremove', '-y', GL_VG]);
  await run(tb, 'node1', [
    'bash',
    '-c',
    `for l in $(losetup -j ${GL_FILE} -O NAME -n); do losetup -d $l; done; rm -f ${GL_FILE}`,
  ]);
  for (const node of others) await run(tb, node, ['vgchange', '--lockstart', REPO_VG]);
}

/**
 * Adds fillers until the VG holds `target` LVs (hidden ones not counted), copying `template`.
 * Nothing of the VG may be active on any node (the bench unmaps all first).
 */
export async function fillTo(tb: Testbed, target: number, template: string): Promise<FillResult> {
  const count = async () =>
    Number((await run(tb, 'node1', ['vgs', '--nolocking', '--noheadings', '-o', 'lv_count', REPO_VG])).trim());
  const have = await count();
  const add = target - have;
  if (add === 0) return { added: 0, seconds: 0, phases: { local: 0, restore: 0, shared: 0 } };
  const existing = (await run(tb, 'node1', ['lvs', '--nolocking', '--noheadings', '-o', 'lv_name', REPO_VG]))
    .split('\n')
    .filter((l) => l.trim().startsWith(FILLER_PREFIX)).length;
  const others = tb.nodes.filter((n) => n.name !== 'node1').map((n) => n.name);
  // A fill that failed half-way left the global lock in GL_VG: put it back first.
  if ((await tb.ssh('node1', ['vgs', GL_VG])).exitCode === 0) await dropGlVg(tb, others);
  const t0 = process.hrtime.bigint();
  const loop = (
    await run(tb, 'node1', ['bash', '-c', `truncate -s 400M ${GL_FILE} && losetup -f --show ${GL_FILE}`])
  ).trim();
  await run(tb, 'node1', ['vgcreate', '--shared', GL_VG, loop]);
  await run(tb, 'node1', ['vgchange', '--lockstart', GL_VG]);
  // lvmlockd refuses a second enabled global lock: disable first, then enable.
  await run(tb, 'node1', ['lvmlockctl', '--gl-disable', REPO_VG]);
  await run(tb, 'node1', ['lvmlockctl', '--gl-enable', GL_VG]);
  for (const node of others) await run(tb, node, ['vgchange', '--lockstop', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '-an', REPO_VG]);
  // node1's sanlock sees the others' released host leases at its next renewal (every 20 s).
  for (let tries = 1; ; tries++) {
    const r = await tb.ssh('node1', ['vgchange', '--lock-type', 'none', REPO_VG], { timeoutMs: 600_000 });
    if (r.exitCode === 0) break;
    if (tries >= 12 || !/not stopped on other hosts/.test(r.stderr))
      throw new Error(`node1: vgchange --lock-type none ${REPO_VG} failed: ${r.stderr.trim()}`);
    await new Promise((res) => setTimeout(res, 5000));
  }
  const local = seconds(t0);
  const t1 = process.hrtime.bigint();
  await run(tb, 'node1', ['vgcfgbackup', '-f', '/root/scale-before.vg', REPO_VG]);
  const text = await run(tb, 'node1', ['cat', '/root/scale-before.vg']);
  await run(
    tb,
    'node1',
    ['dd', 'of=/root/scale-after.vg', 'status=none'],
    add > 0 ? addFillers(text, template, add, existing) : dropFillers(text, -add),
  );
  await run(tb, 'node1', ['vgcfgrestore', '-f', '/root/scale-after.vg', REPO_VG]);
  const restore = seconds(t1);
  const t2 = process.hrtime.bigint();
  await run(tb, 'node1', ['vgchange', '--lock-type', 'sanlock', REPO_VG]);
  await run(tb, 'node1', ['vgchange', '--lockstart', REPO_VG]);
  await dropGlVg(tb, others);
  const shared = seconds(t2);
  const now = await count();
  if (now !== target) throw new Error(`fill: the VG holds ${now} LVs, expected ${target}`);
  return { added: add, seconds: seconds(t0), phases: { local, restore, shared } };
}
