/**
 * What this node accepted last, per list id: a root-owned file under
 * /var/lib/cowstack/catalog (COWSTACK_CATALOG_DIR in tests), one per list. It is node-local
 * on purpose: rollback protection must not trust the shared LUN, which any node (or an
 * attacker with the LUN) can rewrite; each node remembers the highest version it saw.
 * Read and written through the runner as root, so it works over ssh too. A file that
 * exists but cannot be read as JSON fails closed: it is never treated as "nothing seen".
 */
import { CowstackError, EXIT } from '../../exec/errors.js';
import type { Runner } from '../../exec/types.js';
import { listDir, readFile, writeRootFileReq } from '../../tools/files.js';
import type { Step } from '../plan.js';
import type { Accepted } from './verify.js';

export const catalogDir = (): string => process.env.COWSTACK_CATALOG_DIR ?? '/var/lib/cowstack/catalog';
export const statePath = (id: string): string => `${catalogDir()}/${id}.json`;

export async function readAccepted(runner: Runner, id: string): Promise<Accepted | undefined> {
  const text = await readFile(runner, statePath(id));
  if (text === undefined) return undefined;
  try {
    const doc = JSON.parse(text) as Accepted;
    if (doc.id !== id || !Number.isSafeInteger(doc.version)) throw new Error('no id or version');
    return doc;
  } catch (e) {
    throw new CowstackError(EXIT.FAILED, `${statePath(id)} on ${runner.target} is damaged: ${(e as Error).message}`, {
      hint:
        'it holds the last accepted list version (rollback protection): restore it, or remove it to accept ' +
        'whatever version comes next',
    });
  }
}

/** Every list this node accepted. */
export async function readAllAccepted(runner: Runner): Promise<Accepted[]> {
  const names = (await listDir(runner, catalogDir())).filter((n) => n.endsWith('.json'));
  const out: Accepted[] = [];
  for (const n of names) {
    const a = await readAccepted(runner, n.slice(0, -'.json'.length));
    if (a) out.push(a);
  }
  return out;
}

export const writeAcceptedSteps = (a: Accepted): Step[] => [
  {
    title: `remember ${a.id} version ${a.version} as accepted on this node`,
    req: writeRootFileReq(statePath(a.id), `${JSON.stringify(a, null, 2)}\n`),
  },
];
