/**
 * LIO (the kernel's iSCSI target) through targetcli for changes and configfs for reads.
 *
 * targetcli is the supported way to change LIO, but its `ls` output is a drawing, not a
 * format: the state is read from configfs (/sys/kernel/config/target), which is what
 * targetcli itself renders. CHAP secrets never go through targetcli, because targetcli logs
 * every command line it runs (~/.targetcli/log.txt) and echoes parameters back: the secret is
 * written straight to the ACL's configfs attribute with `tee`, its value on stdin and tee's
 * copy on stdout discarded.
 */
import type { RootProgram, RunRequest, Runner } from '../exec/types.js';
import { bin, SERVER } from './program.js';

export const CONFIGFS = '/sys/kernel/config/target';
/** One target portal group per target: cowstack never creates a second one. */
export const TPG = 'tpg1';
export const tpgDir = (iqn: string) => `${CONFIGFS}/iscsi/${iqn}/tpgt_1`;

const cli = (args: string[], title: string): RunRequest => ({
  argv: ['targetcli', ...args],
  kind: 'write',
  root: true,
  timeout: 'change',
  title,
});

export type LioStore = 'block' | 'fileio';
export const storePath = (type: LioStore, name: string) => `/backstores/${type}/${name}`;

/** A block backstore submits bios to the device (no page cache of the target in between). */
export const createBlockReq = (name: string, dev: string) =>
  cli(['/backstores/block', 'create', `name=${name}`, `dev=${dev}`], `backstore block ${name} on ${dev}`);
/** A file backstore with write_back=false: every write is on stable storage before it is acknowledged. */
export const createFileReq = (name: string, file: string, sizeBytes: number) =>
  cli(
    ['/backstores/fileio', 'create', `name=${name}`, `file_or_dev=${file}`, `size=${sizeBytes}`, 'write_back=false'],
    `backstore fileio ${name} on ${file}`,
  );
export const deleteStoreReq = (type: LioStore, name: string) =>
  cli([`/backstores/${type}`, 'delete', name], `delete backstore ${name}`);
export const createTargetReq = (iqn: string) => cli(['/iscsi', 'create', iqn], `target ${iqn}`);
export const deleteTargetReq = (iqn: string) => cli(['/iscsi', 'delete', iqn], `delete target ${iqn}`);
/** LUN 1, as tgt numbers its first LUN: the initiator's by-path link is the same on both backends. */
export const createLunReq = (iqn: string, type: LioStore, name: string, lun = 1) =>
  cli([`/iscsi/${iqn}/${TPG}/luns`, 'create', storePath(type, name), `lun=${lun}`], `LUN ${lun} of ${iqn}`);
/** No demo mode: only initiators with an ACL may log in; CHAP is required once set up. */
export const tpgAttributesReq = (iqn: string, authentication: boolean) =>
  cli(
    [
      `/iscsi/${iqn}/${TPG}`,
      'set',
      'attribute',
      `authentication=${authentication ? 1 : 0}`,
      'generate_node_acls=0',
      'demo_mode_write_protect=1',
    ],
    `access of ${iqn}: ACLs only${authentication ? ', CHAP' : ''}`,
  );
export const createAclReq = (iqn: string, initiator: string) =>
  cli([`/iscsi/${iqn}/${TPG}/acls`, 'create', initiator], `allow ${initiator}`);
export const deleteAclReq = (iqn: string, initiator: string) =>
  cli([`/iscsi/${iqn}/${TPG}/acls`, 'delete', initiator], `revoke ${initiator}`);
export const saveReq = (): RunRequest =>
  cli(['saveconfig'], 'save the LIO configuration (/etc/rtslib-fb-target/saveconfig.json)');

/** Set one CHAP attribute of an ACL from stdin; tee's echo of it is thrown away. */
export function aclAuthReq(iqn: string, initiator: string, attr: 'userid' | 'password', value: string): RunRequest {
  return {
    argv: ['tee', `${tpgDir(iqn)}/acls/${initiator}/auth/${attr}`],
    kind: 'write',
    root: true,
    input: value,
    stdoutFile: '/dev/null',
    title: `set CHAP ${attr === 'userid' ? 'user' : 'secret'} for ${initiator}`,
  };
}

// ---- reads (configfs) -------------------------------------------------------------------

export interface LioLun {
  lun: number;
  store: string;
  type: string;
  device: string;
}

export interface LioTarget {
  iqn: string;
  luns: LioLun[];
  acls: string[];
  portals: string[];
  authentication: boolean;
  /** Initiators with a session now (from each ACL's `info`). */
  sessions: string[];
}

async function ls(runner: Runner, dir: string): Promise<string[]> {
  const r = await runner.run({ argv: ['ls', '-1', '-A', '--', dir], kind: 'read', allowFailure: true });
  return r.exitCode === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

async function cat(runner: Runner, file: string): Promise<string | undefined> {
  const r = await runner.run({ argv: ['cat', '--', file], kind: 'read', root: true, allowFailure: true });
  return r.exitCode === 0 ? r.stdout : undefined;
}

const isTargetName = (n: string) => /^(iqn\.|eui\.|naa\.)/.test(n);

export async function listTargetNames(runner: Runner): Promise<string[]> {
  return (await ls(runner, `${CONFIGFS}/iscsi`)).filter(isTargetName);
}

/** Backstores by type: name -> device or file path (udev_path). */
export async function listStores(
  runner: Runner,
): Promise<Array<{ type: string; name: string; hba: string; device: string }>> {
  const out: Array<{ type: string; name: string; hba: string; device: string }> = [];
  for (const hba of (await ls(runner, `${CONFIGFS}/core`)).filter((h) => /^(iblock|fileio)_\d+$/.test(h))) {
    for (const name of (await ls(runner, `${CONFIGFS}/core/${hba}`)).filter(
      (n) => n !== 'hba_info' && n !== 'hba_mode',
    )) {
      const device = ((await cat(runner, `${CONFIGFS}/core/${hba}/${name}/udev_path`)) ?? '').trim();
      out.push({ type: hba.startsWith('iblock') ? 'block' : 'fileio', name, hba, device });
    }
  }
  return out;
}

export async function readTarget(runner: Runner, iqn: string): Promise<LioTarget | undefined> {
  const dir = tpgDir(iqn);
  if (!(await listTargetNames(runner)).includes(iqn)) return undefined;
  const stores = await listStores(runner);
  const luns: LioLun[] = [];
  for (const l of (await ls(runner, `${dir}/lun`)).filter((x) => /^lun_\d+$/.test(x))) {
    // The LUN directory holds one symlink to its backstore: core/<hba>/<name>.
    const link = await runner.run({
      argv: ['find', `${dir}/lun/${l}`, '-maxdepth', '1', '-type', 'l', '-printf', '%l\n'],
      kind: 'read',
      allowFailure: true,
    });
    const target = link.stdout.trim().split('/').filter(Boolean);
    const [hba, name] = target.slice(-2);
    const store = stores.find((s) => s.hba === hba && s.name === name);
    luns.push({ lun: Number(l.slice(4)), store: name ?? '', type: store?.type ?? '', device: store?.device ?? '' });
  }
  const acls = await ls(runner, `${dir}/acls`);
  const sessions: string[] = [];
  for (const a of acls) {
    const info = (await cat(runner, `${dir}/acls/${a}/info`)) ?? '';
    if (info && !/No active iSCSI Session/i.test(info)) sessions.push(a);
  }
  const portals = await ls(runner, `${dir}/np`);
  const authentication = ((await cat(runner, `${dir}/attrib/authentication`)) ?? '0').trim() === '1';
  return { iqn, luns: luns.sort((a, b) => a.lun - b.lun), acls, portals, authentication, sessions };
}

export const ROOT_PROGRAMS: readonly RootProgram[] = [
  bin('targetcli', 'targetcli-fb', 'LIO backstores, targets, LUNs, ACLs, saveconfig', SERVER),
  bin('tee', 'coreutils', 'write a CHAP user/secret into an LIO ACL from stdin; append a journal record'),
];
