/** The scale bench's filler metadata: copies of a real clone's entry, each on its own free extent. */
import { describe, expect, it } from 'vitest';
import { addFillers, dropFillers, leaseLines, leaseOffsets, lvmUuid } from '../../bench/scaleFill.js';

/** One LV entry as `vgcfgbackup` writes it (lvm2 2.03.16, shared VG): a single striped segment on pv0. */
const lv = (name: string, status: string, tags: string, extents: number, pe: number, lockArgs?: string): string =>
  [
    `\t\t${name} {`,
    `\t\t\tid = "${name.padEnd(6, 'x').slice(0, 6)}-0000-0000-0000-0000-0000-000000"`,
    `\t\t\tstatus = [${status}]`,
    '\t\t\tflags = ["WRITE_LOCKED"]',
    ...(tags ? [`\t\t\ttags = [${tags}]`] : []),
    ...(lockArgs ? [`\t\t\tlock_args = "${lockArgs}"`] : []),
    '\t\t\tsegment_count = 1',
    '',
    '\t\t\tsegment1 {',
    '\t\t\t\tstart_extent = 0',
    `\t\t\t\textent_count = ${extents}`,
    '',
    '\t\t\t\ttype = "striped"',
    '\t\t\t\tstripe_count = 1',
    '',
    '\t\t\t\tstripes = [',
    `\t\t\t\t\t"pv0", ${pe}`,
    '\t\t\t\t]',
    '\t\t\t}',
    '\t\t}',
  ].join('\n');

const CLONE_TAGS = '"cowstack_role:clone", "cowstack_state:live", "cowstack_parent:imgimg"';
const MiB = 2 ** 20;
const ALIGN = MiB; // 512-byte sectors

// A shared VG with 1 MiB extents (extent_size 2048 sectors): lvmlock on extents 0-255 (256 MiB:
// 256 slots, 189 for LVs), an image (extents 256-257, lease slot 67) and a clone (extent 259, slot 68),
// 300 extents in all.
const VG = `repo {
\tid = "Ab12Cd-0000-0000-0000-0000-0000-000000"
\tseqno = 9
\tformat = "lvm2"
\tstatus = ["RESIZEABLE", "READ"]
\tflags = ["WRITE_LOCKED"]
\tlock_type = "sanlock"
\tlock_args = "1.0.0:lvmlock"
\textent_size = 2048

\tphysical_volumes {

\t\tpv0 {
\t\t\tid = "pvpvpv-0000-0000-0000-0000-0000-000000"
\t\t\tdevice = "/dev/sda"
\t\t\tstatus = ["ALLOCATABLE"]
\t\t\tdev_size = 41943040
\t\t\tpe_start = 12288
\t\t\tpe_count = 300
\t\t}
\t}

\tlogical_volumes {

${lv('img', '"READ", "VISIBLE"', '"cowstack_role:image", "cowstack_state:sealed"', 2, 256, `1.0.0:${67 * MiB}`)}

${lv('tpl', '"READ", "VISIBLE"', CLONE_TAGS, 1, 259, `1.0.0:${68 * MiB}`)}

${lv('lvmlock', '"READ"', '', 256, 0)}
\t}
}
`;

const names = (text: string) =>
  [...text.slice(text.indexOf('logical_volumes')).matchAll(/\n\t\t(\S+) \{/g)].map((m) => m[1]);

describe('scale bench fill', () => {
  it('adds copies of the template with their own name, uuid, free extent and lease slot, tags kept', () => {
    const plan = addFillers(VG, 'tpl', 3, 7, ALIGN);
    const out = plan.text;
    expect(names(out)).toEqual(['img', 'tpl', 'fill-00007', 'fill-00008', 'fill-00009', 'lvmlock']);
    // Extents 0-257 and 259 are taken: the fillers get 258, 260 and 261.
    const stripes = [...out.matchAll(/"pv0", (\d+)/g)].map((m) => Number(m[1]));
    expect(stripes).toEqual([256, 259, 258, 260, 261, 0]);
    expect(out.match(/cowstack_parent:imgimg/g)).toHaveLength(4);
    expect(out.match(/"cowstack_role:image"/g)).toHaveLength(1);
    const ids = [...out.matchAll(/\t\t\tid = "([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
    // Slots 67 and 68 are held: the fillers' leases are 69, 70, 71, in their lock_args too.
    expect(plan.leases.map((l) => [l.name, l.offset / MiB])).toEqual([
      ['fill-00007', 69],
      ['fill-00008', 70],
      ['fill-00009', 71],
    ]);
    expect([...leaseOffsets(out)].map((o) => o / MiB)).toEqual([67, 68, 69, 70, 71]);
    for (const l of plan.leases) expect(out).toContain(`id = "${l.uuid}"`);
    expect(plan.lvmlockGrewBy).toBe(0);
    expect(leaseLines(plan)).toBe(plan.leases.map((l) => `${l.uuid} ${l.offset}\n`).join(''));
    // Braces still balance and the VG's closing lines are where they were.
    expect(out.split('{').length).toBe(out.split('}').length);
    expect(out.endsWith('\t}\n}\n')).toBe(true);
  });

  it('grows lvmlock in 256 MiB steps on free extents when the leases pass its end', () => {
    const big = VG.replace('pe_count = 300', 'pe_count = 1000');
    // Slots 69..255 fit the 256 MiB lvmlock: 187 fillers do not need more...
    expect(addFillers(big, 'tpl', 187, 0, ALIGN).lvmlockGrewBy).toBe(0);
    // ...the 188th filler's lease is at slot 256, past the end: lvmlock grows by one step of
    // 256 extents, on the first free ones (258 alone, then 260-514); the fillers after it.
    const plan = addFillers(big, 'tpl', 188, 0, ALIGN);
    expect(plan.lvmlockGrewBy).toBe(256);
    expect(plan.leases[187]!.offset).toBe(256 * MiB);
    const lock = plan.text.slice(plan.text.indexOf('\t\tlvmlock {'));
    expect(lock).toContain('segment_count = 3');
    expect(lock).toMatch(/segment2 \{\n\t+start_extent = 256\n\t+extent_count = 1\n[\s\S]*"pv0", 258/);
    expect(lock).toMatch(/segment3 \{\n\t+start_extent = 257\n\t+extent_count = 255\n[\s\S]*"pv0", 260/);
    const stripes = [...plan.text.matchAll(/"pv0", (\d+)/g)].map((m) => Number(m[1]));
    expect(stripes.slice(2, 4)).toEqual([515, 516]);
    expect(plan.text.split('{').length).toBe(plan.text.split('}').length);
    // 8 MiB slots (4K sectors): slot 69 is at 552 MiB, past a 256 MiB lvmlock: grown to 768.
    const wide = addFillers(
      big.replace(/1\.0\.0:(\d+)/g, (_, o) => `1.0.0:${o * 8}`),
      'tpl',
      1,
      0,
      8 * MiB,
    );
    expect(wide.leases[0]!.offset).toBe(69 * 8 * MiB);
    expect(wide.lvmlockGrewBy).toBe(512);
  });

  it('drops the last fillers and frees their lease slots, and nothing else', () => {
    const added = addFillers(VG, 'tpl', 3, 0, ALIGN);
    const plan = dropFillers(added.text, 2);
    expect(names(plan.text)).toEqual(['img', 'tpl', 'fill-00000', 'lvmlock']);
    expect(plan.freed.map((o) => o / MiB)).toEqual([70, 71]);
    expect(leaseLines(plan)).toBe(`#unused ${70 * MiB}\n#unused ${71 * MiB}\n`);
    expect(plan.text.split('{').length).toBe(plan.text.split('}').length);
    const blank = (t: string) => t.replace(/\n\n+/g, '\n');
    expect(blank(dropFillers(addFillers(VG, 'tpl', 1, 0, ALIGN).text, 1).text)).toBe(blank(VG));
    expect(() => dropFillers(VG, 1)).toThrow('the VG holds 0 fillers, 1 were to go');
    // A freed slot is taken again by the next filler.
    expect(addFillers(plan.text, 'tpl', 1, 1, ALIGN).leases[0]!.offset).toBe(70 * MiB);
  });

  it('refuses when the extents, the template or its lease are missing', () => {
    expect(() => addFillers(VG, 'tpl', 42, 0, ALIGN)).toThrow('no free extent left for filler 42 of 42');
    expect(() => addFillers(VG, 'nope', 1, 0, ALIGN)).toThrow('no LV nope');
    const one = addFillers(VG, 'tpl', 1, 4, ALIGN).text;
    expect(() => addFillers(one, 'tpl', 2, 3, ALIGN)).toThrow('LV fill-00004 is already in the VG metadata');
    expect(() => addFillers(VG.replace(/\t\t\tlock_args = .*\n/g, ''), 'tpl', 1, 0, ALIGN)).toThrow(
      'LV tpl has no lock_args',
    );
  });

  it('makes LVM-shaped uuids', () => {
    expect(lvmUuid()).toMatch(/^[A-Za-z0-9]{6}(-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}$/);
  });
});
