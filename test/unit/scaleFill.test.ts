/** The scale bench's filler metadata: copies of a real clone's entry, each on its own free extent. */
import { describe, expect, it } from 'vitest';
import { addFillers, dropFillers, lvmUuid } from '../../bench/scaleFill.js';

/** One LV entry as `vgcfgbackup` writes it (lvm2 2.03.16): a single striped segment on pv0. */
const lv = (name: string, status: string, tags: string, extents: number, pe: number): string =>
  [
    `\t\t${name} {`,
    `\t\t\tid = "${name.padEnd(6, 'x').slice(0, 6)}-0000-0000-0000-0000-0000-000000"`,
    `\t\t\tstatus = [${status}]`,
    '\t\t\tflags = []',
    `\t\t\ttags = [${tags}]`,
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

// A local VG with an image (extents 0-1) and a clone (extent 3), 8 extents in all.
const VG = `repo {
\tid = "Ab12Cd-0000-0000-0000-0000-0000-000000"
\tseqno = 9
\tformat = "lvm2"
\tstatus = ["RESIZEABLE", "READ", "WRITE"]
\tflags = []
\textent_size = 8192

\tphysical_volumes {

\t\tpv0 {
\t\t\tid = "pvpvpv-0000-0000-0000-0000-0000-000000"
\t\t\tdevice = "/dev/sda"
\t\t\tstatus = ["ALLOCATABLE"]
\t\t\tdev_size = 41943040
\t\t\tpe_start = 12288
\t\t\tpe_count = 8
\t\t}
\t}

\tlogical_volumes {

${lv('img', '"READ", "VISIBLE"', '"cowstack_role:image", "cowstack_state:sealed"', 2, 0)}

${lv('tpl', '"READ", "WRITE", "VISIBLE"', CLONE_TAGS, 1, 3)}
\t}
}
`;

describe('scale bench fill', () => {
  it('adds copies of the template with their own name, uuid and free extent, tags kept', () => {
    const out = addFillers(VG, 'tpl', 3, 7);
    const lvs = out.slice(out.indexOf('logical_volumes'));
    const names = [...lvs.matchAll(/\n\t\t(\S+) \{/g)].map((m) => m[1]);
    expect(names).toEqual(['img', 'tpl', 'fill-00007', 'fill-00008', 'fill-00009']);
    // Extents 0-1 (img) and 3 (tpl) are taken: the fillers get 2, 4 and 5.
    const stripes = [...out.matchAll(/"pv0", (\d+)/g)].map((m) => Number(m[1]));
    expect(stripes).toEqual([0, 3, 2, 4, 5]);
    expect(out.match(/cowstack_parent:imgimg/g)).toHaveLength(4);
    expect(out.match(/"cowstack_role:image"/g)).toHaveLength(1);
    const ids = [...out.matchAll(/\t\t\tid = "([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
    // Braces still balance and the VG's closing lines are where they were.
    expect(out.split('{').length).toBe(out.split('}').length);
    expect(out.endsWith('\t}\n}\n')).toBe(true);
  });

  it('drops the last fillers, and nothing else', () => {
    const out = dropFillers(addFillers(VG, 'tpl', 3, 0), 2);
    const lvs = out.slice(out.indexOf('logical_volumes'));
    expect([...lvs.matchAll(/\n\t\t(\S+) \{/g)].map((m) => m[1])).toEqual(['img', 'tpl', 'fill-00000']);
    expect(out.split('{').length).toBe(out.split('}').length);
    const blank = (t: string) => t.replace(/\n\n+/g, '\n');
    expect(blank(dropFillers(addFillers(VG, 'tpl', 1, 0), 1))).toBe(blank(VG));
    expect(() => dropFillers(VG, 1)).toThrow('the VG holds 0 fillers, 1 were to go');
  });

  it('refuses when the extents or the template are missing', () => {
    expect(() => addFillers(VG, 'tpl', 6, 0)).toThrow('no free extent left for filler 6 of 6');
    expect(() => addFillers(VG, 'nope', 1, 0)).toThrow('no LV nope');
  });

  it('makes LVM-shaped uuids', () => {
    expect(lvmUuid()).toMatch(/^[A-Za-z0-9]{6}(-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}$/);
  });
});
