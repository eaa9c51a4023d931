// Builds dist/cowstack.mjs: one self-contained file that runs on a hypervisor with only
// Node >= 20 (no node_modules there). Checks that src/cli/version.ts matches package.json.
import { build } from 'esbuild';
import { readFileSync, chmodSync, statSync } from 'node:fs';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const versionSrc = readFileSync('src/cli/version.ts', 'utf8');
if (!versionSrc.includes(`'${pkg.version}'`)) {
  console.error(`src/cli/version.ts does not say ${pkg.version} (package.json): update it`);
  process.exit(1);
}
const out = 'dist/cowstack.mjs';
await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outfile: out,
  legalComments: 'none',
  // Some dependencies still call require(); give the ESM bundle one.
  banner: {
    js:
      "#!/usr/bin/env node\nimport { createRequire as __cowstackRequire } from 'node:module';\n" +
      'const require = __cowstackRequire(import.meta.url);',
  },
});
chmodSync(out, 0o755);
console.error(`wrote ${out} (${Math.round(statSync(out).size / 1024)} KiB)`);
