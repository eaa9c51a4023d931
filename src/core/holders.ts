/** Who holds a device: dm/md holders from sysfs and processes from fuser, for refusal messages. */
import type { Runner } from '../exec/types.js';
import { holders } from '../tools/files.js';

export async function whoHolds(runner: Runner, device: string): Promise<string[]> {
  const out = (await holders(runner, device)).map((h) => `device ${h.name}`);
  const f = await runner.run({ argv: ['fuser', '-v', device], kind: 'read', root: true, allowFailure: true });
  // fuser -v prints "USER PID ACCESS COMMAND" rows on stderr.
  for (const line of f.stderr.split('\n')) {
    const m = /^\s*(?:\S+:)?\s*(\S+)\s+(\d+)\s+\S+\s+(\S+)\s*$/.exec(line);
    if (m) out.push(`process ${m[3]} (pid ${m[2]}, user ${m[1]})`);
  }
  return out;
}
