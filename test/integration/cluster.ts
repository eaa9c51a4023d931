/**
 * Brings the testbed cluster up with cowstack's own commands (initiator login, cluster
 * init on node1, cluster join on the others), exactly as an admin would from a front-end.
 */
import type { Testbed } from '../testbed/index.js';
import { cowstack } from './cli.js';

export const REPO_VG = 'repo';

export async function bringUpCluster(
  tb: Testbed,
  log: (s: string) => void = () => {},
): Promise<{ device: string; seconds: number }> {
  const started = Date.now();
  // The logins are independent of each other: all nodes at once.
  const devices = await Promise.all(
    tb.nodes.map(async (node) => {
      const r = await cowstack(tb, ['--host', node.name, '--json', 'initiator', 'login', tb.portal, tb.targetIqn], {
        check: true,
      });
      log(`${node.name}: logged in, ${r.json.result.device}`);
      return r.json.result.device as string;
    }),
  );
  const device = devices[0]!;
  const setUp = async (node: Testbed['nodes'][number]) => {
    const args = node.hostId === 1 ? ['cluster', 'init', device] : ['cluster', 'join'];
    const r = await cowstack(
      tb,
      ['--host', node.name, '--json', ...args, '--vg', REPO_VG, '--host-id', String(node.hostId)],
      { check: true, timeoutMs: 900_000 },
    );
    log(`${node.name}: ${args[1]} done: ${r.json.result.changed.join('; ')}`);
  };
  // init first (it creates the VG); then every other node joins at the same instant, as an
  // admin joining a rack would: each acquires its own host_id's delta lease (tens of seconds).
  await setUp(tb.nodes.find((n) => n.hostId === 1)!);
  await Promise.all(tb.nodes.filter((n) => n.hostId !== 1).map(setUp));
  return { device, seconds: (Date.now() - started) / 1000 };
}

/**
 * The COWs `name` reads through down to its image, its own included, found by walking the
 * parent tags as `lvs` shows them on `node`: the test's own count, not cowstack's.
 */
export async function chainLevels(tb: Testbed, node: string, name: string, vg = REPO_VG): Promise<number> {
  const r = await tb.ssh(node, ['lvs', '--noheadings', '--separator', ';', '-o', 'lv_name,lv_uuid,lv_tags', vg]);
  if (r.exitCode !== 0) throw new Error(`lvs on ${node}: ${r.stderr}`);
  const rows = r.stdout
    .split('\n')
    .map((l) => l.trim().split(';'))
    .filter((f) => f.length === 3);
  const parentOf = (lv: string) => {
    const tag = rows
      .find((f) => f[0] === lv)?.[2]
      ?.split(',')
      .find((t) => t.startsWith('cowstack_parent:'));
    return tag && rows.find((f) => f[1] === tag.slice('cowstack_parent:'.length))?.[0];
  };
  let levels = 0;
  for (let lv: string | undefined = name; lv && parentOf(lv); lv = parentOf(lv)) levels++;
  return levels;
}
