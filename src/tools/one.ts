/**
 * OpenNebula's own programs on the front-end, as its TM `restore` uses them: the CLI for the
 * VM, backup image and datastore XML (what a Ruby driver reads through the XML-RPC API), and
 * the remotes' backup datastore driver `ls` and `downloader.sh`. They run as the user the TM
 * runs as (oneadmin, whose ONE_AUTH the CLI reads), never as root.
 */
import type { RunRequest } from '../exec/types.js';

export type OneObject = 'onevm' | 'oneimage' | 'onedatastore';

/** `onevm show -x ID` (and the image and datastore alike): the object's XML on stdout. */
export const showXmlReq = (cli: OneObject, id: number): RunRequest => ({
  argv: [cli, 'show', '-x', String(id)],
  kind: 'read',
  timeout: 'query',
});

/**
 * The backup datastore driver's `ls -i INC_ID` with the driver action XML on stdin: a JSON
 * object from disk id to the URL of that disk's backup up to increment INC_ID (-1: the chain).
 */
export const backupLsReq = (remotes: string, dsMad: string, incId: number, actionXml: string): RunRequest => ({
  argv: [`${remotes}/datastore/${dsMad}/ls`, '-i', String(incId)],
  kind: 'read',
  timeout: 'change',
  input: actionXml,
});

/**
 * `downloader.sh --nodecomp URL -`: the disk at that backup point, as one file (for a chain,
 * the datastore's downloader merges the full backup and its increments), into `localFile`.
 */
export const downloadReq = (remotes: string, url: string, localFile: string): RunRequest => ({
  argv: [`${remotes}/datastore/downloader.sh`, '--nodecomp', url, '-'],
  kind: 'write',
  timeout: 'data',
  stdoutFile: localFile,
  title: `download ${url}`,
});
