// The backup datastore's part of OpenNebula's restore, for the TM harness (tm-harness.ts):
// what OpenNebula's rsync datastore driver does, on this host as the rsync server, in its
// file layout (<BASE_PATH>/<vm>/<backup dir>/disk.<id>.<increment>), and nothing more.
//   ls -i INC_ID       (DS_DRIVER_ACTION_DATA on stdin) prints {"<disk>": "rsync://<ds>//<chain>/<file>"},
//                      chain = "<increment>:<backup dir>,..." up to INC_ID (-1: all), as rsync/ls does.
//   download URL       (downloader.sh --nodecomp URL -) writes the disk at that point to stdout as one
//                      qcow2: a chain is rebased (qemu-img rebase -u) and merged (qemu-img convert), as
//                      OpenNebula's rsync_downloader.rb does with TransferManager::BackupImage.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const [, , verb, ...args] = process.argv;
const value = (xml, tag) => new RegExp(`<${tag}>(?:<!\\[CDATA\\[)?([^<\\]]*)`).exec(xml)?.[1];

if (verb === 'ls') {
  const inc = Number(args[args.indexOf('-i') + 1] ?? -1);
  const xml = readFileSync(0, 'utf8');
  const ds = value(xml, 'ID');
  const base = value(xml, 'BASE_PATH');
  // The VM the backup was taken of (IMAGE/VMS/ID, as BackupImage reads it): restore may target another.
  const vm = /<VMS>\s*<ID>(\d+)<\/ID>/.exec(xml)[1];
  const incs = [...xml.matchAll(/<INCREMENT>\s*<ID>(\d+)<\/ID>\s*<SOURCE>([^<]+)<\/SOURCE>/g)]
    .map((m) => [Number(m[1]), m[2]])
    .filter(([id]) => inc === -1 || id <= inc);
  const [last, dir] = incs.at(-1);
  const chain = incs.map(([id, d]) => `${id}:${d}`).join(',');
  const disks = {};
  for (const f of readdirSync(path.join(base, vm, dir))) {
    const m = /^disk\.(\d+)\.(\d+)$/.exec(f);
    if (m && Number(m[2]) === last) disks[m[1]] = `rsync://${ds}//${chain}${path.join(base, vm, dir, f)}`;
  }
  process.stdout.write(JSON.stringify(disks));
} else if (verb === 'download') {
  const url = args.find((a) => a.startsWith('rsync://'));
  const m = /^rsync:\/\/\d+\/[^/]*\/([^/]+)(\/.*)$/.exec(url);
  const chain = m[1].split(',').map((c) => c.split(':'));
  const file = m[2];
  const [, disk] = /disk\.(\d+)\.\d+$/.exec(file);
  const vmDir = path.dirname(path.dirname(file));
  const files = chain.map(([id, dir]) => path.join(vmDir, dir, `disk.${disk}.${id}`));
  const work = mkdtempSync(path.join(tmpdir(), 'rsync-dl-'));
  try {
    const copies = files.map((f, i) => {
      const c = path.join(work, `${i}.qcow2`);
      copyFileSync(f, c);
      return c;
    });
    for (let i = 1; i < copies.length; i++)
      execFileSync('qemu-img', ['rebase', '-u', '-F', 'qcow2', '-b', copies[i - 1], copies[i]]);
    const out = path.join(work, 'merged.qcow2');
    execFileSync('qemu-img', ['convert', '-O', 'qcow2', copies.at(-1), out]);
    process.stdout.write(readFileSync(out));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
} else {
  process.stderr.write(`rsyncDatastore: unknown verb ${verb}\n`);
  process.exit(2);
}
