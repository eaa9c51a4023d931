/** npm run bench -- NAME: side-by-side benchmarks in the testbed. */
import { benchCache } from './cache.js';
import { benchClone } from './clone.js';
import { benchDeploys } from './deploys.js';
import { benchDistribute } from './distribute.js';
import { benchLimit } from './limit.js';
import { benchLockio } from './lockio.js';
import { benchMigrate } from './migrate.js';
import { benchScale } from './scale.js';
import { benchTm } from './tm.js';

const benches: Record<string, () => Promise<void>> = {
  clone: benchClone,
  tm: benchTm,
  cache: benchCache,
  limit: benchLimit,
  deploys: benchDeploys,
  lockio: benchLockio,
  migrate: benchMigrate,
  distribute: benchDistribute,
  scale: benchScale,
};
const name = process.argv[2] ?? '';
const fn = benches[name];
if (!fn) {
  console.error(`usage: npm run bench -- ${Object.keys(benches).join('|')}`);
  process.exitCode = 2;
} else {
  fn().catch((e) => {
    console.error(`bench ${name} failed: ${e?.message ?? e}`);
    process.exitCode = 1;
  });
}
