/**
 * OpenNebula datastore (DS_MAD) driver arguments, parsed and validated before anything runs.
 * oned's one_datastore driver runs datastore/cowstack/<action> on the front-end as
 * `<action> ID` with the driver action, base64-encoded DS_DRIVER_ACTION_DATA XML (an IMAGE
 * and a DATASTORE element), on stdin (OpenNebula 6.8 and later, #6162); before 6.8 it came as
 * the first argument and the id as the second (`<action> DRV_ACTION ID`). Both are accepted:
 * one argument means stdin. Every value comes from image and datastore templates users
 * write, so each must match a narrow shape and an error names the bad one.
 *
 * Naming: image N of the datastore is the LV `one-img-N` of the repository VG; its SOURCE
 * (what oned stores and hands the TM driver) is `<vg>/one-img-N`.
 */
import { usageError } from '../exec/errors.js';
import { validateHostName, validateLvName, validateVgName } from '../core/validate.js';
import { isUrl } from '../core/catalog/stream.js';
import { parseId, decodeXml } from '../tm/args.js';
import { parseXml, xmlText, type XmlElement } from './xml.js';

export const DS_ACTIONS = ['cp', 'mkfs', 'rm', 'stat', 'monitor', 'clone', 'export', 'snap_flatten'] as const;
export type DsAction = (typeof DS_ACTIONS)[number];

/** The repository LV of OpenNebula image `id`. */
export const imageLv = (id: number): string => `one-img-${id}`;

/** What every action gets from the DATASTORE element. */
export interface DsDatastore {
  id: number;
  /** BRIDGE_LIST: the nodes that reach the repository VG, in the order to try them. */
  bridges: string[];
}

interface Base {
  /** The id oned passed as the argument: the image's (the marketplace app's for export, a request's for stat). */
  id: number;
  ds: DsDatastore;
}

export type DsRequest =
  | (Base & { action: 'cp'; image: number; path: string })
  | (Base & { action: 'mkfs'; image: number; sizeMb: number; saveAs: boolean; fs?: string; format: string })
  | (Base & { action: 'rm'; image: number; source: { vg: string; lv: string } })
  | (Base & { action: 'stat'; path: string })
  | (Base & { action: 'monitor' })
  | (Base & { action: 'clone'; image: number; from: { vg: string; lv: string } })
  | (Base & { action: 'export'; source: { vg: string; lv: string }; sizeMb?: number })
  | (Base & { action: 'snap_flatten'; image: number; snapshot?: number });

const bad = (what: string, value: string | undefined, rule: string) =>
  usageError(
    `${what} ${value === undefined ? 'is missing' : `"${value}" is invalid`}: ${rule}`,
    'this is what OpenNebula passes to the datastore driver; check the image and datastore templates',
  );

/** OpenNebula's default RESTRICTED_DIRS: images are never read from there unless SAFE_DIRS says so. */
export const DEFAULT_RESTRICTED = ['/etc'];

/** An absolute path without "." or ".." parts, of plain characters; or an http(s) URL. */
export function parseImagePath(text: string | undefined, what = 'image PATH'): string {
  if (text === undefined || text === '') throw bad(what, undefined, 'an absolute path or an http(s) URL');
  if (isUrl(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw bad(what, text, 'not a valid URL');
    }
    if (url.username || url.password || !/^[A-Za-z0-9.:[\]-]+$/.test(url.host) || /[\s"'`\\]/.test(text))
      throw bad(what, text, 'an http(s) URL without credentials, spaces or quotes');
    return url.toString();
  }
  if (!/^\/[A-Za-z0-9._/+@,=:-]*$/.test(text))
    throw bad(what, text, 'an absolute path of letters, digits and . _ / + @ , = : - (or an http(s) URL)');
  if (text.split('/').some((s) => s === '.' || s === '..'))
    throw bad(what, text, 'the path must not have "." or ".." parts');
  return text.replace(/\/+/g, '/');
}

/** A path under one of RESTRICTED_DIRS (and not under SAFE_DIRS) is refused, as OpenNebula's fs driver does. */
export function refuseRestricted(path: string, restricted: readonly string[], safe: readonly string[]): void {
  if (isUrl(path)) return;
  const under = (dir: string) => {
    const d = dir.replace(/\/+$/, '');
    return d === '' || path === d || path.startsWith(`${d}/`);
  };
  const r = restricted.find(under);
  if (r && !safe.some(under))
    throw usageError(
      `image PATH ${path} is under ${r}, one of the datastore's RESTRICTED_DIRS`,
      'copy the image elsewhere, or add its directory to SAFE_DIRS in the datastore template',
    );
}

const dirList = (text: string | undefined): string[] =>
  (text ?? '').split(/\s+/).filter((d) => d.startsWith('/') && !d.split('/').includes('..'));

/** `VG/LV`, the SOURCE this driver's cp, mkfs and clone print. */
export function parseImageSource(text: string | undefined, what = 'image SOURCE'): { vg: string; lv: string } {
  const parts = (text ?? '').split('/');
  if (text === undefined || text === '') throw bad(what, undefined, 'expected VG/LV');
  if (parts.length !== 2) throw bad(what, text, 'expected VG/LV (the SOURCE the cowstack datastore driver prints)');
  try {
    return { vg: validateVgName(parts[0]!), lv: validateLvName(parts[1]!, 'image LV') };
  } catch (e) {
    throw bad(what, text, (e as Error).message);
  }
}

function datastore(root: XmlElement, id: number, action: string): DsDatastore {
  const dsId = xmlText(root, 'DATASTORE/ID');
  const bridges = (xmlText(root, 'DATASTORE/TEMPLATE/BRIDGE_LIST') ?? '').split(/\s+/).filter(Boolean);
  for (const h of bridges) {
    try {
      validateHostName(h);
    } catch {
      throw bad('BRIDGE_LIST host', h, 'letters, digits, "-", "_" and "." only');
    }
  }
  // monitor's argument is the datastore id itself.
  const fallback = action === 'monitor' ? String(id) : undefined;
  return { id: parseId(dsId ?? fallback, 'datastore ID'), bridges };
}

function refuseOptionShaped(action: string, args: readonly string[]): void {
  args.forEach((arg, i) => {
    if (arg.startsWith('-'))
      throw usageError(
        `ds ${action}: argument ${i + 1} "${arg}" looks like an option: ` +
          'no OpenNebula datastore argument starts with "-"',
        'this is what OpenNebula passes to the datastore driver; check the image and datastore templates',
      );
  });
}

/**
 * `args` as oned passes them (`ID`, or `DRV_ACTION ID` before OpenNebula 6.8) and what came
 * on stdin. Nothing is run: the request is data.
 */
export function parseDsArgs(action: string, args: readonly string[], stdin = ''): DsRequest {
  if (!(DS_ACTIONS as readonly string[]).includes(action))
    throw usageError(`unknown datastore action "${action}"`, `one of: ${DS_ACTIONS.join(', ')}`);
  refuseOptionShaped(action, args);
  if (args.length < 1 || args.length > 2)
    throw usageError(
      `ds ${action} takes ID (driver action XML on stdin) or DRV_ACTION ID, got ${args.length} argument(s)`,
      `usage: cowstack ds ${action} ID < base64-xml`,
    );
  const [encoded, idText] = args.length === 2 ? [args[0]!, args[1]] : [stdin, args[0]];
  // stat is keyed by a request id, export by a marketplace app id: numbers all the same.
  const id = parseId(idText, action === 'monitor' ? 'datastore id' : 'id');
  const xml = decodeXml(encoded, 'the datastore driver action');
  if (!xml) throw usageError(`ds ${action}: no driver action XML`, 'oned sends it base64-encoded on stdin');
  const root = parseXml(xml);
  if (root.name !== 'DS_DRIVER_ACTION_DATA')
    throw usageError(`ds ${action}: the XML's root is <${root.name}>, expected <DS_DRIVER_ACTION_DATA>`);
  const ds = datastore(root, id, action);
  const imageId = () => {
    const own = xmlText(root, 'IMAGE/ID');
    const n = parseId(own, 'IMAGE/ID');
    if (n !== id) throw bad('IMAGE/ID', own, `it is not the image id ${id} oned passed as the argument`);
    return n;
  };
  const restricted = () => {
    const r = dirList(xmlText(root, 'DATASTORE/TEMPLATE/RESTRICTED_DIRS'));
    return r.length ? r : DEFAULT_RESTRICTED;
  };
  const safe = () => dirList(xmlText(root, 'DATASTORE/TEMPLATE/SAFE_DIRS'));
  const imagePath = () => {
    const path = parseImagePath(xmlText(root, 'IMAGE/PATH'));
    refuseRestricted(path, restricted(), safe());
    return path;
  };
  switch (action as DsAction) {
    case 'cp':
      return { action: 'cp', id, ds, image: imageId(), path: imagePath() };
    case 'stat':
      return { action: 'stat', id, ds, path: imagePath() };
    case 'mkfs': {
      const format = xmlText(root, 'IMAGE/FORMAT') || 'raw';
      const fs = xmlText(root, 'IMAGE/FS') || undefined;
      const size = xmlText(root, 'IMAGE/SIZE');
      const sizeMb = parseId(size, 'IMAGE/SIZE');
      if (sizeMb < 1 && format !== 'save_as') throw bad('IMAGE/SIZE', size, 'must be at least 1 (MiB)');
      if (fs !== undefined && !/^[a-z0-9]{1,16}$/.test(fs)) throw bad('IMAGE/FS', fs, 'a file system type');
      if (!/^[a-z0-9_]{1,16}$/.test(format)) throw bad('IMAGE/FORMAT', format, 'raw, or save_as');
      return { action: 'mkfs', id, ds, image: imageId(), sizeMb, saveAs: format === 'save_as', fs, format };
    }
    case 'rm':
      return { action: 'rm', id, ds, image: imageId(), source: parseImageSource(xmlText(root, 'IMAGE/SOURCE')) };
    case 'clone':
      // The new image's PATH is the SOURCE of the image it copies.
      return { action: 'clone', id, ds, image: imageId(), from: parseImageSource(xmlText(root, 'IMAGE/PATH'), 'PATH') };
    case 'export': {
      const size = xmlText(root, 'IMAGE/SIZE');
      return {
        action: 'export',
        id,
        ds,
        source: parseImageSource(xmlText(root, 'IMAGE/SOURCE')),
        ...(size ? { sizeMb: parseId(size, 'IMAGE/SIZE') } : {}),
      };
    }
    case 'snap_flatten': {
      const snap = xmlText(root, 'IMAGE/TARGET_SNAPSHOT');
      return {
        action: 'snap_flatten',
        id,
        ds,
        image: imageId(),
        ...(snap ? { snapshot: parseId(snap, 'TARGET_SNAPSHOT') } : {}),
      };
    }
    case 'monitor':
      return { action: 'monitor', id, ds };
  }
}
