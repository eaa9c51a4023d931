#!/usr/bin/env node
// Makes sure the host has the Debian packages the testbed needs (.ci/apt-packages) before
// `npm run demo` or `npm test` starts, so a newcomer's two commands need nothing installed
// by hand. As root with apt-get: installs what is missing. Otherwise: says what to run.
// Plain JavaScript on purpose: it runs before anything is built.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const wanted = readFileSync(path.join(root, '.ci/apt-packages'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

const has = (cmd) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;

function missingPackages() {
  if (!has('dpkg-query')) return undefined;
  return wanted.filter((p) => {
    const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' });
    return r.status !== 0 || !r.stdout.includes('install ok installed');
  });
}

const missing = missingPackages();
if (missing === undefined) {
  // Not Debian: check the programs themselves and name what is absent.
  const programs = ['qemu-system-x86_64', 'qemu-img', 'tgtd', 'debootstrap', 'cpio', 'ssh', 'zstd', 'minisign'];
  const absent = programs.filter((c) => !has(c));
  if (absent.length === 0) process.exit(0);
  process.stderr.write(`host-packages: no dpkg here, and ${absent.join(' ')} not found: install them\n`);
  process.exit(1);
}
if (missing.length === 0) process.exit(0);

const list = missing.join(' ');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot || !has('apt-get')) {
  process.stderr.write(
    `host-packages: missing Debian packages: ${list}\n` +
      `  install them as root, then run this again: apt-get update && apt-get install -y ${list}\n`,
  );
  process.exit(1);
}

process.stderr.write(`host-packages: installing ${list} (apt-get)\n`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
for (const argv of [
  ['apt-get', 'update', '-q'],
  ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...missing],
]) {
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (r.status !== 0) {
    process.stderr.write(`host-packages: ${argv.join(' ')} failed (exit ${r.status}); fix that and run again\n`);
    process.exit(1);
  }
}
