/**
 * The TM action tests' script language over the recording runner, and the fixtures of the
 * VM disk both test files use. SYNTHETIC: LV rows and dm devices come from repoFixtures; the
 * image is `img` (64 MiB), the VM's disk 0 is `one-7-0`.
 */
import { promises as fsp } from 'node:fs';
import type { RecordingRunner } from '../../src/exec/recordingRunner.js';
import type { RunRequest, RunResult, Runner } from '../../src/exec/types.js';
import { runTm, type TmEnv } from '../../src/tm/actions.js';
import { parseTmArgs } from '../../src/tm/args.js';
import {
  MiB,
  U,
  VG,
  cloneRow,
  expectObserve,
  expectObserveRepo,
  lvcreateArgv,
  lvcreateInactive,
  imageRow,
  commitMarkArgv,
  journalBegin,
  journalEnd,
  lvDev,
  rwDev,
  type Activation,
  type Dev,
  markLiveArgv,
  markLiveLog,
  newImageLv,
  sealArgv,
} from './repoFixtures.js';
import { chainToDeviceReq } from '../../src/tools/qemuImg.js';
import { capture, deltaDumpArgv, leaseDump, leaseDumpArgv, lvsArgv, lvsJson, vgsArgv, vgsJson } from './support.js';

// ---- a small script language over the recording runner ------------------------------------------

export interface World {
  rows: Array<Record<string, unknown>>;
  devs?: Dev[];
}
export type Step =
  | 'O'
  | 'R'
  | { lv: string }
  | { mark: string; release: boolean }
  | { argv: readonly string[]; kind: 'read' | 'write'; exitCode?: number; stdout?: string; stderr?: string };
/** An observation (lvs, dmsetup info, lvmlockctl) answered with the next world. */
export const O = 'O' as const;
/** The repository alone (clone create: lvs, lvmlockctl only when needed), answered with the next world. */
export const R = 'R' as const;
/** A lockless re-read of one LV, answered from the current world or the next one that has it. */
export const lv = (name: string): Step => ({ lv: name });
/** The mark that makes a new clone live, answered with LVM's command log naming its uuid (next world's row). */
export const mark = (name: string, release = true): Step => ({ mark: name, release });
export const wr = (argv: readonly string[], o: { exitCode?: number; stderr?: string } = {}): Step => ({
  argv,
  kind: 'write',
  ...o,
});
export const rd = (argv: readonly string[], o: { exitCode?: number; stdout?: string } = {}): Step => ({
  argv,
  kind: 'read',
  ...o,
});

export function script(r: RecordingRunner, worlds: World[], steps: Step[]): RecordingRunner {
  let i = -1;
  for (const s of steps) {
    if (s === 'O' || s === 'R') {
      i = Math.min(i + 1, worlds.length - 1);
      if (s === 'O') expectObserve(r, worlds[i]!.rows, worlds[i]!.devs ?? []);
      else expectObserveRepo(r, worlds[i]!.rows);
    } else if ('mark' in s) {
      const row = worlds
        .slice(Math.max(i, 0))
        .map((w) => w.rows.find((x) => x.lv_name === s.mark))
        .find(Boolean);
      r.expect(markLiveArgv(`${VG}/${s.mark}`, s.release), {
        kind: 'write',
        stdout: row ? markLiveLog(`${VG}/${s.mark}`, String(row.lv_uuid)) : '',
      });
    } else if ('lv' in s) {
      const row = worlds
        .slice(Math.max(i, 0))
        .map((w) => w.rows.find((x) => x.lv_name === s.lv))
        .find(Boolean);
      r.expect(lvsArgv(`${VG}/${s.lv}`), { kind: 'read', stdout: lvsJson(row ? [row] : []) });
    } else r.expect(s.argv, s);
  }
  return r;
}

/**
 * Run one action with a runner per host; every runner must have run exactly its script. The
 * action's info messages also land in `info`, which a failing run leaves to the caller.
 */
export async function tm(
  action: string,
  args: string[],
  runners: Record<string, Runner>,
  stdin = '',
  info: string[] = [],
  extra: Partial<TmEnv> = {},
) {
  const out: string[] = [];
  const env: TmEnv = {
    vg: VG,
    scope: {},
    runnerFor: runnerOf(runners),
    hosts: ['node1', 'node2'],
    cowPercent: 25,
    chunk: '4K',
    frontends: ['fe'],
    info: (m) => info.push(m),
    out: (t) => out.push(t),
    ...extra,
  };
  let error: unknown;
  try {
    await runTm(env, parseTmArgs(action, args, stdin));
  } catch (e) {
    error = e;
  }
  verifyAll(runners);
  if (error) throw error;
  return { info, out };
}

/** The runner a test gave for a host; any other host is an error. */
export const runnerOf =
  <R extends Runner>(runners: Record<string, R>) =>
  (host: string): R => {
    const r = runners[host];
    if (!r) throw new Error(`no runner for ${host}`);
    return r;
  };

/** Every recording runner must have run exactly its script. */
export function verifyAll(runners: Record<string, Runner>): void {
  for (const r of Object.values(runners)) if ('verify' in r) (r as RecordingRunner).verify();
}
export const on = (r: RecordingRunner) => ({ node1: r });

// ---- fixtures -------------------------------------------------------------------------------------

export const DIR = '/var/lib/one/datastores/0/7';
export const D = `node1:${DIR}/disk.0`;
export const img = (active?: Activation) => imageRow('img', U.image, { active, open: Boolean(active), minor: 3 });
/** The disk's top: a live COW on `parent` (the image unless said). */
export const top = (o: Parameters<typeof cloneRow>[3] = {}, parent: string = U.image, uuid: string = U.c3) =>
  cloneRow('one-7-0', uuid, parent, o);
export const snap3 = (uuid: string = U.c3) => cloneRow('one-7-0-s3', uuid, U.image, { state: 'committed' });
/** The disk mapped here for a running VM: image shared, COW exclusive, rw device (open count `open`). */
export const mapped = (open = 0): World => ({
  rows: [img('shared'), top({ active: 'exclusive', open: true, minor: 8 })],
  devs: [lvDev('img', U.image, 3, 1, true), lvDev('one-7-0', U.c3, 8, 1), rwDev(U.c3, 9, open)],
});
export const rwName = (uuid: string) => `cowstack-rw-${uuid.replace(/-/g, '')}`;
export const roName = (uuid: string) => `cowstack-ro-${uuid.replace(/-/g, '')}`;
export const link = (device: string, disk = 0): Step[] => [
  wr(['mkdir', '-p', '--', DIR]),
  wr(['ln', '-sfn', '--', device, `${DIR}/disk.${disk}`]),
];

/** createClone's writes after its observation, and its final re-read. */
export const createTop = (parentUuid: string, o: { failAt?: 'lvcreate' } = {}): Step[] => {
  const lvcreate = wr(lvcreateArgv('one-7-0', parentUuid, 16 * MiB, 8), o.failAt === 'lvcreate' ? { exitCode: 5 } : {});
  if (o.failAt === 'lvcreate')
    return [wr(journalBegin('one-7-0', 'create-clone')), lvcreate, wr(journalEnd('one-7-0', 'create-clone'))];
  return [
    wr(journalBegin('one-7-0', 'create-clone')),
    lvcreate,
    mark('one-7-0'),
    wr(journalEnd('one-7-0', 'create-clone')),
  ];
};
/** commitClone of the disk's unmapped top after its observation: held, re-read under its lock, marked, released. */
export const commitTop: Step[] = [
  wr(journalBegin('one-7-0', 'commit')),
  wr(['lvchange', '-aey', 'vg/one-7-0']),
  lv('one-7-0'),
  wr(commitMarkArgv('vg/one-7-0')),
  wr(journalEnd('one-7-0', 'commit')),
];
/** mapClone of a new top `topUuid` straight on the image, after its observation. */
export const mapOnImage = (topUuid: string): Step[] => [
  wr(journalBegin('one-7-0', 'map')),
  wr(['lvchange', '-asy', 'vg/img']),
  wr(['lvchange', '-aey', 'vg/one-7-0']),
  lv('one-7-0'),
  wr([
    'dmsetup',
    'create',
    rwName(topUuid),
    '--uuid',
    `COWSTACK-rw-${topUuid.replace(/-/g, '')}`,
    '--table',
    '0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-one--7--0 PO 8',
  ]),
  wr(journalEnd('one-7-0', 'map')),
];
/** mapClone of top `topUuid` on snapshot `snapUuid` (`snap`, one-7-0-s3) on the image, after its observation. */
export const mapOnSnap = (snapUuid: string, topUuid: string, snap = 'one-7-0-s3'): Step[] => [
  wr(journalBegin('one-7-0', 'map')),
  wr(['lvchange', '-asy', 'vg/img']),
  wr(['lvchange', '-asy', `vg/${snap}`]),
  wr([
    'dmsetup',
    'create',
    roName(snapUuid),
    '--uuid',
    `COWSTACK-ro-${snapUuid.replace(/-/g, '')}`,
    '--readonly',
    '--table',
    `0 131072 snapshot /dev/mapper/vg-img /dev/mapper/vg-${snap.replace(/-/g, '--')} P 8`,
  ]),
  wr(['lvchange', '-aey', 'vg/one-7-0']),
  lv('one-7-0'),
  wr([
    'dmsetup',
    'create',
    rwName(topUuid),
    '--uuid',
    `COWSTACK-rw-${topUuid.replace(/-/g, '')}`,
    '--table',
    `0 131072 snapshot /dev/mapper/${roName(snapUuid)} /dev/mapper/vg-one--7--0 PO 8`,
  ]),
  wr(journalEnd('one-7-0', 'map')),
];

/**
 * A recording runner that also does what the real runner does with local files: it writes a
 * command's stdout to its `stdoutFile` (mv's `cat` of a VM file) and reads a `stdin` stream
 * (`dd of=...`), keeping what each command was sent, so a test sees which bytes went where.
 */
export function withFiles(
  r: RecordingRunner,
): Runner & { verify(): void; sent: Map<string, string>; calls: RunRequest[] } {
  const sent = new Map<string, string>();
  return {
    target: r.target,
    sent,
    calls: r.calls,
    verify: () => r.verify(),
    close: () => r.close(),
    run: async (req: RunRequest): Promise<RunResult> => {
      if (req.stdin) {
        const chunks: Buffer[] = [];
        for await (const c of req.stdin as AsyncIterable<Buffer | string>) chunks.push(Buffer.from(c));
        sent.set(req.argv.join(' '), Buffer.concat(chunks).toString());
      }
      const res = await r.run(req);
      if (req.stdoutFile && res.exitCode === 0) await fsp.writeFile(req.stdoutFile, res.stdout);
      return res;
    },
  };
}

/** `vgs` of the fixture VG: 100 GiB, half of it free, sanlock. */
export const VGS_ROW = vgsJson([
  {
    vg_name: VG,
    vg_uuid: 'x',
    vg_size: 100 * 1024 * MiB,
    vg_free: 50 * 1024 * MiB,
    vg_extent_size: 4 * MiB,
    vg_lock_type: 'sanlock',
    vg_shared: 1,
    vg_tags: [],
    pv_count: 1,
    lv_count: 3,
  },
]);

/**
 * What cowstack reads to name the holder of an LV it found locked (LOCK_CONFLICT): the LV
 * again, its lease (held by sanlock host `hostId`), the VG, and the hosts' delta leases (REAL
 * capture: node1 is host 1, node2 host 2).
 */
export const heldBy = (name: string, uuid: string, hostId: 1 | 2): Step[] => [
  lv(name),
  rd(leaseDumpArgv(VG, 70254592), {
    stdout: leaseDump({ offset: 70254592, vg: VG, uuid, owner: hostId, timestamp: 734 }),
  }),
  rd(vgsArgv(VG), { stdout: VGS_ROW }),
  rd(deltaDumpArgv(VG), { stdout: capture('sanlock-dump-delta.txt').replace(/lvm_repo/g, 'lvm_vg') }),
];

// ---- copies into a new image (cpds, ds clone) --------------------------------------------------------

export const SHA = 'a'.repeat(64);
export const SAVED = '/dev/mapper/vg-saved';
export const MARK = `cowstack_saved_from:${U.c3}`;
/** The image a copy made: sealed, its checksum and the marker naming what it was copied from. */
export const savedRow = (mark = MARK, name = 'saved') => {
  const row = imageRow(name, U.img2, { sha: SHA });
  return { ...row, lv_tags: [...(row.lv_tags as string[]), mark] };
};
/** copyDeviceIntoImage from `from` (a device) into the new 64 MiB image `name`, to its final re-read. */
export const copyInto = (from: string, o: { failDd?: boolean; mark?: string; name?: string } = {}): Step[] => {
  const name = o.name ?? 'saved';
  const dev = `/dev/mapper/vg-${name.replace(/-/g, '--')}`;
  return [
    wr(journalBegin(name, 'flatten')),
    wr(lvcreateInactive(name, 64 * MiB, ['cowstack_role:image', 'cowstack_state:initializing', o.mark ?? MARK], 'vg')),
    wr(['lvchange', '-aey', `vg/${name}`]),
    wr(
      ['dd', `if=${from}`, `of=${dev}`, 'bs=4M', 'iflag=direct', 'oflag=direct', 'conv=fsync', 'status=none'],
      o.failDd ? { exitCode: 1 } : {},
    ),
    ...(o.failDd
      ? [wr(['lvchange', '-an', `vg/${name}`]), wr(['lvremove', '-y', `vg/${name}`]), wr(journalEnd(name, 'flatten'))]
      : [
          rd(['sha256sum', dev], { stdout: `${SHA}  ${dev}\n` }),
          wr(sealArgv(`vg/${name}`, 'initializing', SHA)),
          wr(['lvchange', '-an', `vg/${name}`]),
          wr(journalEnd(name, 'flatten')),
          lv(name),
        ]),
  ];
};

/** createImage of a zeroed image `name` (an empty VG: after its vgs), to its final re-read. */
export const createImageSteps = (name: string, bytes: number, o: { failDd?: boolean } = {}): Step[] => {
  const dev = `/dev/mapper/vg-${name.replace(/-/g, '--')}`;
  const zero = ['dd', 'if=/dev/zero', `of=${dev}`, 'bs=4M', `count=${bytes / (4 * MiB)}`, 'oflag=direct'];
  return [
    wr(journalBegin(name, 'create-image')),
    wr(newImageLv(name, bytes)),
    wr(['lvchange', '-aey', `vg/${name}`]),
    wr([...zero, 'conv=fsync', 'status=none'], o.failDd ? { exitCode: 1 } : {}),
    wr(['lvchange', '-an', `vg/${name}`]),
    ...(o.failDd
      ? [wr(['lvremove', '-y', `vg/${name}`]), wr(journalEnd(name, 'create-image'))]
      : [
          wr([
            'lvchange',
            '--deltag',
            'cowstack_state:initializing',
            '--addtag',
            'cowstack_state:writable',
            `vg/${name}`,
          ]),
          wr(journalEnd(name, 'create-image')),
          lv(name),
        ]),
  ];
};

/**
 * core/backups.ts restoreImage after its observation: each file's virtual size, then the new
 * image `name` filled from the chain (qemu opens the files as one), checksummed and sealed.
 */
export const restoreImageSteps = (name: string, files: readonly string[], o: { sha: string; mark: string }): Step[] => {
  const dev = `/dev/mapper/vg-${name.replace(/-/g, '--')}`;
  const info = `{"virtual-size": ${64 * MiB}, "filename": "x", "format": "qcow2"}`;
  return [
    ...files.map((f) => rd(['qemu-img', 'info', '--output=json', '-f', 'qcow2', f], { stdout: info })),
    wr(journalBegin(name, 'flatten')),
    wr(lvcreateInactive(name, 64 * MiB, ['cowstack_role:image', 'cowstack_state:initializing', o.mark], VG)),
    wr(['lvchange', '-aey', `${VG}/${name}`]),
    wr(chainToDeviceReq(files, dev).argv),
    rd(['sha256sum', dev], { stdout: `${o.sha}  ${dev}\n` }),
    wr(sealArgv(`${VG}/${name}`, 'initializing', o.sha)),
    wr(['lvchange', '-an', `${VG}/${name}`]),
    wr(journalEnd(name, 'flatten')),
    lv(name),
  ];
};
