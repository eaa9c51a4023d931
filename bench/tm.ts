/**
 * npm run bench -- tm: one VM's deploy (TM clone + context) and terminate (TM delete of the
 * VM directory) through the tm/cowstack scripts, against a full-copy deploy of the same
 * image into a new LV (OpenNebula fs_lvm's way); and deploying 10 VMs of one image on one
 * node. Round trips = commands cowstack ran on the host (each one ssh round trip over the
 * shared connection; the connection itself is one handshake per action).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { REPO_VG, table, timedCli, timedSsh, withCluster } from './harness.js';
import { DS, FE, tmHarness, type TmResult } from '../test/integration/tm-harness.js';

const tag = Date.now().toString(36).slice(-4);
const node = 'node1';
const MB = 256;
const roundTrips = (r: TmResult) => r.stderr.split('\n').filter((l) => /\] [$>] /.test(l)).length;

export async function benchTm(): Promise<void> {
  await withCluster(async (tb) => {
    const tm = await tmHarness(tb, ['node1', 'node2'], { verbose: true });
    const image = `tmb-${tag}`;
    await timedCli(tb, node, ['image', 'create', image, '--size', `${MB}M`, '--vg', REPO_VG]);
    await timedCli(tb, node, ['image', 'seal', image, '--vg', REPO_VG]);
    const ctxFile = path.join(tm.dir, 'context.sh');
    await fsp.writeFile(ctxFile, "HOSTNAME='bench'\n");
    const vm = 5000 + (parseInt(tag, 36) % 1000);
    const D = (v: number, disk: number) => `${node}:${DS}/0/${v}/disk.${disk}`;

    const clone = await tm.ok('clone', [`${FE}:${REPO_VG}/${image}`, D(vm, 0), String(vm), '1']);
    const context = await tm.ok('context', [ctxFile, D(vm, 1), String(vm), '0']);
    const del = await tm.ok('delete', [`${node}:${DS}/0/${vm}/`, String(vm), '0']);

    // fs_lvm: a new LV per VM, activated, the whole image copied in (then the same context).
    const started = process.hrtime.bigint();
    const copy = `tmbcopy-${tag}`;
    const steps = [
      ['lvcreate', '-an', '-Zn', '-Wn', '--setautoactivation', 'n', '-L', `${MB}m`, '-n', copy, REPO_VG],
      ['lvchange', '-asy', `${REPO_VG}/${image}`],
      ['lvchange', '-aey', `${REPO_VG}/${copy}`],
      [
        'dd',
        `if=/dev/${REPO_VG}/${image}`,
        `of=/dev/${REPO_VG}/${copy}`,
        'bs=4M',
        'iflag=direct',
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ],
    ];
    for (const argv of steps) await timedSsh(tb, node, argv);
    const copySeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const t2 = process.hrtime.bigint();
    await timedSsh(tb, node, ['lvchange', '-an', `${REPO_VG}/${copy}`]);
    await timedSsh(tb, node, ['lvremove', '-y', `${REPO_VG}/${copy}`]);
    const copyDelete = Number(process.hrtime.bigint() - t2) / 1e9;

    console.log(`\nOne VM, ${MB} MiB image, ${node} (qemu TCG, iSCSI LUN from tgtd on the host):`);
    console.log(
      table([
        { step: 'deploy: tm clone', seconds: clone.seconds.toFixed(1), 'round trips': roundTrips(clone) },
        { step: 'deploy: tm context', seconds: context.seconds.toFixed(1), 'round trips': roundTrips(context) },
        { step: 'terminate: tm delete VM_DIR/', seconds: del.seconds.toFixed(1), 'round trips': roundTrips(del) },
        {
          step: 'full copy deploy (lvcreate+activate+dd)',
          seconds: copySeconds.toFixed(1),
          'round trips': steps.length,
        },
        { step: 'full copy terminate (lvchange -an, lvremove)', seconds: copyDelete.toFixed(1), 'round trips': 2 },
      ]),
    );

    // Ten VMs of one image on one node, one after the other (oned serializes per datastore).
    const t3 = process.hrtime.bigint();
    const per: number[] = [];
    for (let i = 0; i < 10; i++)
      per.push(
        (await tm.ok('clone', [`${FE}:${REPO_VG}/${image}`, D(vm + 1 + i, 0), String(vm + 1 + i), '1'])).seconds,
      );
    const ten = Number(process.hrtime.bigint() - t3) / 1e9;
    console.log(
      `\n10 VMs of one image on ${node}: ${ten.toFixed(1)} s (first ${per[0]!.toFixed(1)} s, ` +
        `last ${per[9]!.toFixed(1)} s, mean ${(ten / 10).toFixed(1)} s)`,
    );
    for (let i = 0; i < 10; i++) await tm.ok('delete', [`${node}:${DS}/0/${vm + 1 + i}/`, String(vm + 1 + i), '0']);
    await timedCli(tb, node, ['image', 'rm', image, '--vg', REPO_VG]);
  });
}
