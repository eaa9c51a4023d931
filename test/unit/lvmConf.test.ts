import { describe, expect, it } from 'vitest';
import { getConfValue, setConfValue } from '../../src/core/lvmConf.js';

// SYNTHETIC: shaped like Debian's /etc/lvm/lvm.conf (abridged): long comment blocks, the commented-out
// default of use_lvmlockd, a trailing comment containing a brace, and a nested tags section.
const LVM_CONF = `# This is an example configuration file for the LVM2 system.
# It contains the default settings that would be used if there was no
# /etc/lvm/lvm.conf file.
#
# Refer to 'man lvm.conf' for further information including the file layout.

config {
	checks = 1
	abort_on_errors = 0
	profile_dir = "/etc/lvm/profile"
}

devices {
	dir = "/dev"
	scan = [ "/dev" ]
	# filter = [ "a|.*|" ]
	obtain_device_list_from_udev = 1
}

global {
	# Configuration option global/umask.
	umask = 077

	# Configuration option global/units.
	units = "r"

	# Configuration option global/use_lvmlockd.
	# Use lvmlockd for locking among hosts using LVM on shared storage.
	# Applicable only if LVM is compiled with lockd support in which
	# case there is also lvmlockd(8) man page available for more
	# information.
	# This configuration option has an automatic default value.
	# use_lvmlockd = 0
	locking_dir = "/run/lock/lvm" # not a section: {
	etc = "/etc#not-a-comment"
}

tags {
	hosttags = 0
	tag1 {
		host_list = [ "node1" ]
	}
}

activation {
	udev_sync = 1
	volume_list = [ "vg0", "@tag1" ]
}
`;

const LVMLOCAL_CONF = `# This is a local configuration file template for the LVM2 system
# which should be installed as /etc/lvm/lvmlocal.conf .
#
# Refer to 'man lvm.conf' for information about the file layout.

local {
	# Configuration option local/system_id.
	# system_id = ""

	# Configuration option local/host_id.
	# The lvmlockd sanlock host_id.
	# This must be unique among all hosts, and must be between 1 and 2000.
	# host_id = 0
}
`;

/** The lines of `after` with `count` lines removed at `at` must equal the lines of `before`. */
function expectOnlyInserted(before: string, after: string, at: number, inserted: string[]): void {
  const a = after.split('\n');
  expect(a.slice(at, at + inserted.length)).toEqual(inserted);
  a.splice(at, inserted.length);
  expect(a).toEqual(before.split('\n'));
}

describe('getConfValue', () => {
  it('reads active settings of a section, ignoring comments', () => {
    expect(getConfValue(LVM_CONF, 'global', 'umask')).toBe('077');
    expect(getConfValue(LVM_CONF, 'global', 'units')).toBe('"r"');
    expect(getConfValue(LVM_CONF, 'global', 'locking_dir')).toBe('"/run/lock/lvm"');
    expect(getConfValue(LVM_CONF, 'global', 'etc')).toBe('"/etc#not-a-comment"');
    expect(getConfValue(LVM_CONF, 'devices', 'scan')).toBe('[ "/dev" ]');
    expect(getConfValue(LVM_CONF, 'activation', 'udev_sync')).toBe('1');
  });

  it('does not read a commented-out setting', () => {
    expect(getConfValue(LVM_CONF, 'global', 'use_lvmlockd')).toBeUndefined();
    expect(getConfValue(LVM_CONF, 'devices', 'filter')).toBeUndefined();
    expect(getConfValue(LVMLOCAL_CONF, 'local', 'host_id')).toBeUndefined();
  });

  it('reads only inside the named section', () => {
    expect(getConfValue(LVM_CONF, 'devices', 'umask')).toBeUndefined();
    expect(getConfValue(LVM_CONF, 'local', 'host_id')).toBeUndefined();
    expect(getConfValue('', 'global', 'use_lvmlockd')).toBeUndefined();
  });

  it('only matches top-level sections: a nested "local" tag is not local/', () => {
    const text = 'tags {\n\tlocal {\n\t\thost_list = [ "node1" ]\n\t}\n}\n';
    expect(getConfValue(text, 'local', 'host_list')).toBeUndefined();
  });

  it('reads a value with a trailing comment', () => {
    expect(getConfValue('local {\n\thost_id = 7  # node7\n}\n', 'local', 'host_id')).toBe('7');
  });

  it('reads one-line sections', () => {
    expect(getConfValue('local { host_id = 7 }\n', 'local', 'host_id')).toBe('7');
    expect(getConfValue('local { system_id = "n 1" host_id = 12 }  # set by hand\n', 'local', 'host_id')).toBe('12');
    expect(getConfValue('local { system_id = "n 1" host_id = 12 }\n', 'local', 'system_id')).toBe('"n 1"');
    expect(getConfValue('local { }\n', 'local', 'host_id')).toBeUndefined();
  });
});

describe('setConfValue', () => {
  const insertsMissingKey =
    'inserts a missing key before the closing brace of an existing section, leaving every other line as it was';
  it(insertsMissingKey, () => {
    const after = setConfValue(LVM_CONF, 'global', 'use_lvmlockd', 1);
    const close = LVM_CONF.split('\n').indexOf('\tetc = "/etc#not-a-comment"') + 1;
    expectOnlyInserted(LVM_CONF, after, close, ['\t# set by cowstack', '\tuse_lvmlockd = 1']);
    expect(getConfValue(after, 'global', 'use_lvmlockd')).toBe('1');
  });

  it('replaces an active setting in place, keeping its indentation', () => {
    const before = LVM_CONF.replace('\t# use_lvmlockd = 0\n', '\t# use_lvmlockd = 0\n    use_lvmlockd = 0\n');
    const after = setConfValue(before, 'global', 'use_lvmlockd', 1);
    const b = before.split('\n');
    const a = after.split('\n');
    expect(a).toHaveLength(b.length);
    const changed = a.flatMap((line, i) => (line === b[i] ? [] : [i]));
    expect(changed).toEqual([b.indexOf('    use_lvmlockd = 0')]);
    expect(a[changed[0]!]).toBe('    use_lvmlockd = 1');
  });

  it('creates a missing section at the end', () => {
    const after = setConfValue(LVM_CONF, 'local', 'host_id', 3);
    expect(after).toBe(`${LVM_CONF}local {\n\t# set by cowstack\n\thost_id = 3\n}\n`);
    expect(getConfValue(after, 'local', 'host_id')).toBe('3');
  });

  it('creates a section in an empty file and after a last line without newline', () => {
    expect(setConfValue('', 'local', 'host_id', 1)).toBe('local {\n\t# set by cowstack\n\thost_id = 1\n}\n');
    expect(setConfValue('# only a comment', 'local', 'host_id', 1)).toBe(
      '# only a comment\nlocal {\n\t# set by cowstack\n\thost_id = 1\n}\n',
    );
  });

  it('does not mistake the nested tag "local" for the local section', () => {
    const text = 'tags {\n\tlocal {\n\t\thost_list = [ "node1" ]\n\t}\n}\n';
    expect(setConfValue(text, 'local', 'host_id', 4)).toBe(`${text}local {\n\t# set by cowstack\n\thost_id = 4\n}\n`);
  });

  it('replaces a key in a section that contains a nested section', () => {
    const after = setConfValue(LVM_CONF, 'tags', 'hosttags', 1);
    const b = LVM_CONF.split('\n');
    const a = after.split('\n');
    expect(a.filter((l, i) => l !== b[i])).toEqual(['\thosttags = 1']);
    expect(getConfValue(after, 'tags', 'hosttags')).toBe('1');
  });

  it('inserts after the nested section, before the closing brace of the outer one', () => {
    const after = setConfValue(LVM_CONF, 'tags', 'cowstack_test', 1);
    const lines = LVM_CONF.split('\n');
    const outerClose = lines.indexOf('\t\thost_list = [ "node1" ]') + 2;
    expect(lines[outerClose]).toBe('}');
    expectOnlyInserted(LVM_CONF, after, outerClose, ['\t# set by cowstack', '\tcowstack_test = 1']);
  });

  it('sets host_id in the stock lvmlocal.conf next to its commented default', () => {
    const after = setConfValue(LVMLOCAL_CONF, 'local', 'host_id', 2);
    expectOnlyInserted(LVMLOCAL_CONF, after, LVMLOCAL_CONF.split('\n').length - 2, [
      '\t# set by cowstack',
      '\thost_id = 2',
    ]);
    expect(getConfValue(after, 'local', 'host_id')).toBe('2');
  });

  it('turns a one-line empty section into a block', () => {
    expect(setConfValue('local { }\n', 'local', 'host_id', 5)).toBe('local {\n\thost_id = 5\n}\n');
    expect(setConfValue('# mine\nlocal {}\n', 'local', 'host_id', 5)).toBe('# mine\nlocal {\n\thost_id = 5\n}\n');
  });

  it('edits a one-line section in place and keeps what else is on the line', () => {
    expect(setConfValue('local { host_id = 7 }\n', 'local', 'host_id', 5)).toBe('local { host_id = 5 }\n');
    expect(setConfValue('local { system_id = "a" }  # by hand\n', 'local', 'host_id', 5)).toBe(
      'local { system_id = "a" host_id = 5 }  # by hand\n',
    );
  });

  it.each([
    ['lvm.conf', LVM_CONF, 'global', 'use_lvmlockd', 1],
    ['lvmlocal.conf', LVMLOCAL_CONF, 'local', 'host_id', 9],
    ['empty file', '', 'local', 'host_id', 9],
    ['one-line', 'local { }\n', 'local', 'host_id', 9],
    ['one-line with a value', 'local { host_id = 3 }\n', 'local', 'host_id', 9],
    ['one-line with another key', 'local { system_id = "x" }\n', 'local', 'host_id', 9],
  ] as const)('is idempotent on %s: setting twice gives the same text', (_name, text, section, key, value) => {
    const once = setConfValue(text, section, key, value);
    expect(getConfValue(once, section, key)).toBe(String(value));
    expect(setConfValue(once, section, key, value)).toBe(once);
  });

  it('changes a value it set before instead of adding a second line', () => {
    const once = setConfValue(LVMLOCAL_CONF, 'local', 'host_id', 2);
    const twice = setConfValue(once, 'local', 'host_id', 3);
    expect(twice).toBe(once.replace('\thost_id = 2', '\thost_id = 3'));
    expect(twice.match(/^\s*host_id =/gm)).toHaveLength(1);
  });
});
