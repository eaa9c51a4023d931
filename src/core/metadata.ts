/**
 * Cluster-wide truth lives in LV tags (they change atomically with the VG metadata and
 * every node sees them). This module is the only place that knows the tag vocabulary:
 *   cowstack_role:image|clone       what the LV is
 *   cowstack_state:STATE            image: initializing|writable|sealed
 *                                   clone: initializing|live|committed
 *   cowstack_parent:LVUUID          a clone's parent (image or committed clone)
 *   cowstack_chunk:SECTORS          a clone's dm-snapshot chunk size
 *   cowstack_sha256:HEX             content checksum recorded at import (images)
 *   cowstack_srcsha256:HEX          the imported file's checksum, as given (images)
 *   cowstack_catalog:LIST:NAME:VER  imported by `catalog sync` from that list (images; none: by hand)
 *   cowstack_sha512:HEX             the raw disk's sha512 the list endorsed, checked before sealing
 *   cowstack_endorsed:UNIXTIME      the last accepted list names it, until that list expires
 *   cowstack_handover:ALLOC:META    a live clone released by its source host for a live migration: the
 *                                   snapshot's allocated and metadata sectors there (acquire compares)
 * and on the repository VG itself (site decisions that exist before any LV does):
 *   cowstack_approved:NAME:VER      the site approved that catalogue image version
 */
import type { LvInfo } from '../tools/lvm.js';

export const TAG = {
  role: 'cowstack_role:',
  state: 'cowstack_state:',
  parent: 'cowstack_parent:',
  chunk: 'cowstack_chunk:',
  sha256: 'cowstack_sha256:',
  sourceSha256: 'cowstack_srcsha256:',
  catalog: 'cowstack_catalog:',
  sha512: 'cowstack_sha512:',
  endorsed: 'cowstack_endorsed:',
  approved: 'cowstack_approved:',
  handover: 'cowstack_handover:',
} as const;

/** Where a catalogue image came from: the list's id and the image's name and version in it. */
export interface CatalogOrigin {
  list: string;
  name: string;
  version: string;
}

export type ImageState = 'initializing' | 'writable' | 'sealed';
export type CloneState = 'initializing' | 'live' | 'committed';

interface Base {
  name: string;
  vg: string;
  uuid: string;
  sizeBytes: number;
  lv: LvInfo;
  tags: string[];
}
export interface ImageObj extends Base {
  kind: 'image';
  state: ImageState;
  sha256?: string;
  /** sha256 of the file it was imported from (compressed or not, as given). */
  sourceSha256?: string;
  /** Set when `catalog sync` imported it; hand-imported images have none. */
  catalog?: CatalogOrigin;
  sha512?: string;
  /** Unix seconds until which the last accepted list endorses it (none: not endorsed now). */
  endorsedUntil?: number;
}
export interface CloneObj extends Base {
  kind: 'clone';
  state: CloneState;
  parentUuid: string;
  chunkSectors: number;
  /** Set by a live migration's release on the source, cleared by the acquire on the destination. */
  handover?: Handover;
}
/** What a source host recorded of a clone's snapshot when it released it (dm-snapshot status). */
export interface Handover {
  allocatedSectors: number;
  metadataSectors: number;
}
export type CowObj = ImageObj | CloneObj;

const tagValue = (tags: string[], prefix: string): string | undefined =>
  tags.find((t) => t.startsWith(prefix))?.slice(prefix.length);

function parseOrigin(v: string | undefined): CatalogOrigin | undefined {
  const [list, name, version] = v?.split(':') ?? [];
  return list && name && version ? { list, name, version } : undefined;
}

const numberOrUndefined = (v: string | undefined): number | undefined =>
  v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;

/** The hand-over record among a clone's tags, if its value has the right shape. */
function handoverOf(tags: string[]): { handover?: Handover } {
  const m = /^(\d+):(\d+)$/.exec(tagValue(tags, TAG.handover) ?? '');
  return m ? { handover: { allocatedSectors: Number(m[1]), metadataSectors: Number(m[2]) } } : {};
}

/** Every hand-over tag on an LV (normally none or one). */
export const handoverTags = (tags: readonly string[]): string[] => tags.filter((t) => t.startsWith(TAG.handover));

/** Read-only parents: a sealed image or a committed clone. Only these may have children. */
export const isFrozen = (o: CowObj): boolean => (o.kind === 'image' ? o.state === 'sealed' : o.state === 'committed');

export function fromLv(lv: LvInfo): CowObj | undefined {
  const role = tagValue(lv.tags, TAG.role);
  const base = { name: lv.name, vg: lv.vg, uuid: lv.uuid, sizeBytes: lv.sizeBytes, lv, tags: lv.tags };
  if (role === 'image') {
    return {
      ...base,
      kind: 'image',
      state: (tagValue(lv.tags, TAG.state) ?? 'initializing') as ImageState,
      sha256: tagValue(lv.tags, TAG.sha256),
      sourceSha256: tagValue(lv.tags, TAG.sourceSha256),
      catalog: parseOrigin(tagValue(lv.tags, TAG.catalog)),
      sha512: tagValue(lv.tags, TAG.sha512),
      endorsedUntil: numberOrUndefined(tagValue(lv.tags, TAG.endorsed)),
    };
  }
  if (role === 'clone') {
    return {
      ...base,
      kind: 'clone',
      state: (tagValue(lv.tags, TAG.state) ?? 'initializing') as CloneState,
      parentUuid: tagValue(lv.tags, TAG.parent) ?? '',
      chunkSectors: Number(tagValue(lv.tags, TAG.chunk) ?? 8),
      ...handoverOf(lv.tags),
    };
  }
  return undefined;
}

/** The repository as one snapshot of its tags: every object, by name and by uuid, with children. */
export class Repo {
  readonly byName = new Map<string, CowObj>();
  readonly byUuid = new Map<string, CowObj>();
  readonly children = new Map<string, CloneObj[]>();
  /** LVs of the VG that cowstack does not manage (never touched). */
  readonly foreign: LvInfo[] = [];

  constructor(
    readonly vg: string,
    /** The LVs it was built from (a caller adds one it created: observe.withLv). */
    readonly lvs: LvInfo[],
  ) {
    for (const lv of lvs) {
      const o = fromLv(lv);
      if (!o) {
        this.foreign.push(lv);
        continue;
      }
      this.byName.set(o.name, o);
      this.byUuid.set(o.uuid, o);
    }
    for (const o of this.byName.values()) {
      if (o.kind !== 'clone') continue;
      const list = this.children.get(o.parentUuid) ?? [];
      list.push(o);
      this.children.set(o.parentUuid, list);
    }
  }

  childrenOf(o: CowObj): CloneObj[] {
    return this.children.get(o.uuid) ?? [];
  }

  /** [o, parent, grandparent, ..., image]; throws if a link is missing (a broken chain). */
  chain(o: CowObj): CowObj[] {
    const out: CowObj[] = [o];
    let cur = o;
    while (cur.kind === 'clone') {
      const parent = this.byUuid.get(cur.parentUuid);
      if (!parent)
        throw new Error(
          `clone ${cur.name} points to parent ${cur.parentUuid}, which is not in ${this.vg}: the chain is broken`,
        );
      if (out.includes(parent)) throw new Error(`clone ${cur.name} has a cyclic parent chain`);
      out.push(parent);
      cur = parent;
    }
    return out;
  }

  /**
   * The COWs `o` reads through down to its image, its own included (0 for an image); undefined
   * for a broken chain, which status reports (a reader of numbers does not fail on it).
   */
  levels(o: CowObj): number | undefined {
    try {
      return this.chain(o).length - 1;
    } catch {
      return undefined;
    }
  }

  /** Every descendant, depth first. */
  descendants(o: CowObj): CloneObj[] {
    return this.childrenOf(o).flatMap((c) => [c, ...this.descendants(c)]);
  }
}

export const stateTag = (s: ImageState | CloneState): string => `${TAG.state}${s}`;
export const roleTag = (r: 'image' | 'clone'): string => `${TAG.role}${r}`;
export const parentTag = (uuid: string): string => `${TAG.parent}${uuid}`;
export const chunkTag = (sectors: number): string => `${TAG.chunk}${sectors}`;
export const shaTag = (hex: string): string => `${TAG.sha256}${hex}`;
export const sourceShaTag = (hex: string): string => `${TAG.sourceSha256}${hex}`;
export const catalogTag = (o: CatalogOrigin): string => `${TAG.catalog}${o.list}:${o.name}:${o.version}`;
export const sha512Tag = (hex: string): string => `${TAG.sha512}${hex}`;
export const endorsedTag = (unixSeconds: number): string => `${TAG.endorsed}${unixSeconds}`;
export const handoverTag = (h: Handover): string => `${TAG.handover}${h.allocatedSectors}:${h.metadataSectors}`;
export const approvedTag = (name: string, version: string): string => `${TAG.approved}${name}:${version}`;

/** The image versions a VG's tags approve, as NAME:VERSION keys. */
export const approvals = (vgTags: readonly string[]): Set<string> =>
  new Set(vgTags.filter((t) => t.startsWith(TAG.approved)).map((t) => t.slice(TAG.approved.length)));
