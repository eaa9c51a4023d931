// The testbed for people: npm run testbed -- up|down|status|boot NODE|ssh NODE [cmd...]|build|smoke|console NODE
import { spawnSync } from 'node:child_process';
import { Command, InvalidArgumentError } from 'commander';
import { ensureImage, readManifest } from './image.js';
import { runSmoke } from './smoke.js';
import { attach, bootNode, down, resolveStateDir, status, up } from './testbed.js';
import { tail } from './util.js';

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return n;
};

const program = new Command('testbed')
  .description('cowstack real-kernel test cluster: qemu TCG guests sharing one iSCSI LUN served by a host tgtd')
  .enablePositionalOptions()
  .showHelpAfterError();

program
  .command('build')
  .description('build (or find) the cached guest image')
  .option('--force', 'rebuild even if the cache has it')
  .option('--cache <dir>', 'cache dir (default $COWSTACK_TESTBED_CACHE or /var/cache/cowstack-testbed)')
  .action(async (o: { force?: boolean; cache?: string }) => {
    const img = await ensureImage({ cacheDir: o.cache, force: o.force });
    const m = await readManifest(img.dir);
    console.log(`${img.built ? 'built' : 'cached'}: ${img.dir} (${img.seconds.toFixed(1)} s)`);
    if (m) {
      console.log(`kernel ${m.kernel.release} (${m.kernel.package} ${m.kernel.version}), node ${m.node.version}`);
      console.log(
        `initramfs ${(m.sizes.initramfs / 2 ** 20).toFixed(0)} MiB, ${Object.keys(m.installed).length} ` +
          `packages, ${m.modules} modules; built ${m.builtAt} in ${m.buildSeconds} s`,
      );
    }
  });

program
  .command('up')
  .description('boot the testbed and leave it running')
  .option('-n, --nodes <n>', 'number of nodes', int('nodes'), 2)
  .option('--mem <MiB>', 'guest memory', int('mem'), 3072)
  .option('--lun-gib <GiB>', 'size of the shared LUN', int('lun-gib'), 4)
  .option('--state <dir>', 'state dir (default $COWSTACK_TESTBED_STATE or <repo>/.testbed)')
  .option('--smoke', 'run the smoke test after boot')
  .action(async (o: { nodes: number; mem: number; lunGib: number; state?: string; smoke?: boolean }) => {
    const t0 = Date.now();
    const tb = await up({ nodes: o.nodes, memMiB: o.mem, lunGiB: o.lunGib, stateDir: o.state });
    console.log(`testbed up in ${tb.stateDir}`);
    console.log(`  portal (from guests) ${tb.portal}   target ${tb.targetIqn}`);
    for (const n of tb.nodes)
      console.log(
        `  ${n.name}  ssh 127.0.0.1:${n.sshPort}  host_id ${n.hostId}  ${n.initiatorIqn}  local disk ${n.localDisk}`,
      );
    console.log(`ssh: ssh -F ${tb.sshConfig} node1`);
    console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    if (o.smoke) {
      const r = await runSmoke(tb);
      const passed = r.checks.filter((c) => c.ok).length;
      console.log(`smoke: ${passed} passed, ${r.checks.length - passed} failed`);
      if (!r.ok) process.exitCode = 1;
    }
  });

program
  .command('down')
  .description('stop everything the testbed started and remove its LUN and disks (idempotent)')
  .option('--state <dir>', 'state dir')
  .action(async (o: { state?: string }) => {
    await down(o.state);
    console.log(`testbed in ${resolveStateDir(o.state)} is down`);
  });

program
  .command('status')
  .description('show the testbed state and which processes are alive')
  .option('--state <dir>', 'state dir')
  .option('--json', 'machine-readable output')
  .action(async (o: { state?: string; json?: boolean }) => {
    const s = await status(o.state);
    if (o.json) {
      console.log(JSON.stringify(s, null, 2));
      return;
    }
    if (!s.state) {
      console.log(`no testbed in ${s.stateDir}`);
    } else {
      const st = s.state;
      console.log(`testbed in ${st.stateDir} (created ${st.createdAt}, image ${st.imageHash})`);
      console.log(
        `  tgtd pid ${st.tgtd.pid ?? '-'} ${s.tgtdRunning ? 'running' : 'NOT RUNNING'} on ${st.hostPortal}; ` +
          `guests use ${st.portal}, ${st.targetIqn}`,
      );
      for (const n of st.nodes) {
        const state = n.running ? 'running' : n.poweredOff ? 'powered off' : 'NOT RUNNING';
        console.log(
          `  ${n.name}  qemu pid ${n.pid ?? '-'} ${state}  ssh 127.0.0.1:${n.sshPort}  console ${n.consoleLog}`,
        );
      }
      if (st.timings) console.log(`  boot to ssh ${st.timings.bootToSshSeconds?.toFixed(1)} s`);
      console.log(`ssh: ssh -F ${st.sshConfig} node1`);
    }
    if (s.strays.length) {
      console.log(
        'leftover processes of this state dir (down removes ' +
          `them): ${s.strays.map((p) => `${p.kind}:${p.pid}`).join(' ')}`,
      );
    }
    const healthy = !!s.state && s.tgtdRunning && s.state.nodes.every((n) => n.running || n.poweredOff);
    if (!healthy) process.exitCode = 3;
  });

program
  .command('boot')
  .description('boot a node that is off: powered off, or its qemu killed (same ports and disks); waits for ssh')
  .argument('<node>')
  .option('--state <dir>', 'state dir')
  .action(async (node: string, o: { state?: string }) => {
    const t0 = Date.now();
    await bootNode(node, o.state);
    console.log(
      `${node} is up (${((Date.now() - t0) / 1000).toFixed(1)} s); /var/lib/cowstack is its persistent state disk`,
    );
  });

program
  .command('ssh')
  .description('ssh to a node (interactive without a command)')
  .argument('<node>')
  .argument('[cmd...]')
  .option('--state <dir>', 'state dir')
  .passThroughOptions()
  .action(async (node: string, cmd: string[], o: { state?: string }) => {
    const s = await status(o.state);
    if (!s.state) throw new Error(`no testbed in ${s.stateDir}`);
    const r = spawnSync('ssh', ['-F', s.state.sshConfig, node, ...cmd], { stdio: 'inherit' });
    process.exitCode = r.status ?? 255;
  });

program
  .command('console')
  .description('print the tail of a node serial console log')
  .argument('<node>')
  .option('-l, --lines <n>', 'lines', int('lines'), 60)
  .option('--state <dir>', 'state dir')
  .action(async (node: string, o: { lines: number; state?: string }) => {
    const s = await status(o.state);
    const n = s.state?.nodes.find((x) => x.name === node);
    if (!n) throw new Error(`no node ${node} in ${s.stateDir}`);
    console.log(await tail(n.consoleLog, o.lines));
  });

program
  .command('smoke')
  .description('run the smoke test on the running testbed')
  .option('--state <dir>', 'state dir')
  .option('--lifecycle', 'also crash (powerOff) and boot the last node')
  .action(async (o: { state?: string; lifecycle?: boolean }) => {
    const tb = await attach(o.state);
    const r = await runSmoke(tb, { lifecycle: o.lifecycle });
    const passed = r.checks.filter((c) => c.ok).length;
    console.log(`smoke: ${passed} passed, ${r.checks.length - passed} failed`);
    if (!r.ok) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`testbed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
