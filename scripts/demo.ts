/**
 * npm run demo: the main job on the built-in default, the local testbed cluster.
 * Builds the guest image if needed (cached), boots two nodes and a repository LUN,
 * brings the cluster up with cowstack's own commands and shows the result through the
 * real CLI. Stops everything at the end unless --keep is given.
 */
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { attach, down, ensureImage, up, type Testbed } from '../test/testbed/index.js';
import { bringUpCluster, REPO_VG } from '../test/integration/cluster.js';
import { CLI } from '../test/integration/cli.js';

const keep = process.argv.includes('--keep');
const say = (s: string) => process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);

async function show(tb: Testbed, args: string[]): Promise<number> {
  process.stdout.write(`\n$ cowstack ${args.join(' ')}\n`);
  const r = await execa('node', [CLI, ...args], {
    reject: false,
    stdio: 'inherit',
    env: { COWSTACK_SSH_CONFIG: tb.sshConfig, COWSTACK_CONFIG: '/dev/null' },
  });
  return r.exitCode ?? 1;
}

async function main(): Promise<void> {
  say('testbed image (Debian bookworm, kernel 6.1, lvm2 + lvmlockd + sanlock + open-iscsi)');
  const img = await ensureImage({ log: (s) => process.stderr.write(`  ${s}\n`) });
  console.log(`image ${img.hash}: ${img.built ? `built in ${img.seconds.toFixed(0)}s` : 'cached'} (${img.dir})`);

  let tb = await attach().catch(() => undefined);
  if (tb) {
    say(`reusing the running testbed (${tb.stateDir})`);
  } else {
    say('booting 2 nodes under qemu and a repository LUN served by tgtd on 127.0.0.1');
    tb = await up({ nodes: 2, log: (s) => process.stderr.write(`  ${s}\n`) });
    say('bringing the cluster up with cowstack (initiator login, cluster init on node1, join on node2)');
    const c = await bringUpCluster(tb, (s) => console.log(`  ${s}`));
    console.log(`cluster up in ${c.seconds.toFixed(0)}s`);
  }
  console.log(`ssh config for your own commands: COWSTACK_SSH_CONFIG=${tb.sshConfig}`);

  say('what exists: node health, the shared VG, the lock manager');
  await show(tb, ['--host', 'node1', 'doctor', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'cluster', 'status', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'initiator', 'sessions']);

  say('the cluster lock at work: an LV exclusive on node1 is refused on node2');
  await tb.ssh('node1', ['lvremove', '-y', `${REPO_VG}/demo`]);
  await tb.ssh('node1', ['lvcreate', '-an', '--setautoactivation', 'n', '-L', '16M', '-n', 'demo', REPO_VG]);
  await show(tb, ['--host', 'node1', 'activate', `${REPO_VG}/demo`, '--exclusive']);
  const code = await show(tb, ['--host', 'node2', 'activate', `${REPO_VG}/demo`, '--exclusive']);
  console.log(`(exit code ${code}: lock-conflict)`);
  await show(tb, ['--host', 'node1', '--dry-run', 'deactivate', `${REPO_VG}/demo`]);
  await show(tb, ['--host', 'node1', 'deactivate', `${REPO_VG}/demo`]);
  await show(tb, ['--host', 'node2', 'activate', `${REPO_VG}/demo`, '--exclusive']);
  await show(tb, ['--host', 'node2', 'deactivate', `${REPO_VG}/demo`]);
  await tb.ssh('node1', ['lvremove', '-y', `${REPO_VG}/demo`]);

  say('copy-on-write clones: import an image, clone it on node1, write, sync back, clone again on node2');
  const dir = await mkdtemp(path.join(tmpdir(), 'cowstack-demo-'));
  const file = path.join(dir, 'base.raw');
  await writeFile(file, randomBytes(16 << 20));
  const sha = createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
  console.log(`demo image: 16 MiB of random data, sha256 ${sha}`);
  await show(tb, ['--host', 'node1', 'image', 'import', 'demo-base', file, '--vg', REPO_VG]);
  await show(tb, ['--host', 'node1', 'clone', 'create', 'vm1-disk', '--from', 'demo-base', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node1', 'clone', 'map', 'vm1-disk', '--vg', REPO_VG]);
  const dev = (await tb.ssh('node1', ['sh', '-c', 'ls /dev/mapper/cowstack-rw-*'])).stdout.trim();
  console.log(`\n(the "VM" on node1 writes 4 MiB into ${dev})`);
  await tb.ssh('node1', [
    'dd',
    'if=/dev/urandom',
    `of=${dev}`,
    'bs=1M',
    'count=4',
    'seek=2',
    'oflag=direct',
    'conv=fsync',
    'status=none',
  ]);
  const written = (await tb.ssh('node1', ['sha256sum', dev])).stdout.split(' ')[0];
  await show(tb, ['--host', 'node1', 'status', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node1', 'clone', 'commit', 'vm1-disk', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'clone', 'create', 'vm2-disk', '--from', 'vm1-disk', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'clone', 'map', 'vm2-disk', '--vg', REPO_VG]);
  const dev2 = (await tb.ssh('node2', ['sh', '-c', 'ls /dev/mapper/cowstack-rw-*'])).stdout.trim();
  const seen = (await tb.ssh('node2', ['sha256sum', dev2])).stdout.split(' ')[0];
  console.log(
    `\nnode1 wrote ${written}\nnode2 reads ${seen} through its own clone of the committed ` +
      `clone: ${written === seen ? 'identical' : 'DIFFERENT'}`,
  );
  await show(tb, ['--host', 'node2', 'tree', '--vg', REPO_VG]);
  console.log("\n(node1 tries to map node2's live clone: the cluster lock refuses it)");
  await show(tb, ['--host', 'node1', 'clone', 'map', 'vm2-disk', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'clone', 'discard', 'vm2-disk', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'clone', 'rm', 'vm1-disk', '--vg', REPO_VG]);
  await show(tb, ['--host', 'node2', 'image', 'rm', 'demo-base', '--vg', REPO_VG]);
  await rm(dir, { recursive: true, force: true });

  if (keep) {
    say('left running: try  npm run testbed -- ssh node1   and stop it with  npm run testbed -- down');
  } else {
    say('stopping the testbed (npm run demo -- --keep leaves it running)');
    await down(tb.stateDir);
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e?.message ?? e}`);
  process.exitCode = 1;
});
