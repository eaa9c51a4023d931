/**
 * `catalog list/show`: every catalogue image this node knows of, from four sources that
 * are each authoritative for one thing: the lists this node accepted (endorsed), the VG's
 * approval tags (approved, cluster-wide), the repository's LVs (present, sealed) and this
 * node's cache VG (replicated: what `cache replicate` or `catalog stage` left here).
 */
import { usableReplica } from '../cache/replica.js';
import { cacheVgOf, observeCache } from '../cache/vg.js';
import { observeNode } from '../observe.js';
import type { NodeSession } from '../node.js';
import { vgApprovals, trustOf } from './gate.js';
import { lvNameOf } from './list.js';
import { readAllAccepted } from './state.js';

export interface CatalogRow {
  name: string;
  version: string;
  lv: string;
  list?: string;
  /** Named by a current (unexpired) list this node accepted, or by the endorsement tag of its LV. */
  endorsed: boolean;
  approved: boolean;
  present: boolean;
  /** present and both endorsed and approved: clone create accepts it. */
  clonable: boolean;
  /** This node holds a complete replica made from this LV and verified against its sha256. */
  replicated: boolean;
  size?: number;
  sha256?: string;
  /** The signed info hash of its torrent, when the list distributes it peer to peer. */
  infoHash?: string;
  clones?: number;
}

export interface CatalogStatus {
  node: string;
  lists: Array<{ id: string; version: number; expires: string; expired: boolean; acceptedAt: string; images: number }>;
  images: CatalogRow[];
}

export async function catalogStatus(ctx: NodeSession, now = new Date()): Promise<CatalogStatus> {
  const accepted = await readAllAccepted(ctx.runner);
  const approved = await vgApprovals(ctx);
  const state = await observeNode(ctx);
  const cache = await observeCache(ctx.runner, cacheVgOf(ctx));
  const rows = new Map<string, CatalogRow>();
  const row = (name: string, version: string): CatalogRow => {
    const key = `${name}:${version}`;
    let r = rows.get(key);
    if (!r) {
      const lv = lvNameOf({ name, version });
      r = {
        name,
        version,
        lv,
        endorsed: false,
        approved: approved.has(key),
        present: false,
        clonable: false,
        replicated: false,
      };
      rows.set(key, r);
    }
    return r;
  };
  for (const a of accepted) {
    const current = Date.parse(a.list.expires) > now.getTime();
    for (const i of a.list.images) {
      const r = row(i.name, i.version);
      r.list = a.id;
      r.size = i.size;
      if (i.torrent) r.infoHash = i.torrent.infoHash;
      r.endorsed ||= current;
    }
  }
  for (const o of state.repo.byName.values()) {
    if (o.kind !== 'image' || !o.catalog) continue;
    const r = row(o.catalog.name, o.catalog.version);
    const t = trustOf(o, approved, now);
    r.list ??= o.catalog.list;
    r.lv = o.name;
    r.present = o.state === 'sealed';
    r.endorsed = t.endorsed;
    r.sha256 = o.sha256;
    r.clones = state.repo.childrenOf(o).length;
    r.clonable = r.present && t.endorsed && t.approved;
    r.replicated = r.present && Boolean(usableReplica(cache, o));
  }
  for (const k of approved) {
    const [name, version] = k.split(':');
    if (name && version) row(name, version);
  }
  return {
    node: ctx.node,
    lists: accepted.map((a) => ({
      id: a.id,
      version: a.version,
      expires: a.expires,
      expired: Date.parse(a.expires) <= now.getTime(),
      acceptedAt: a.acceptedAt,
      images: a.list.images.length,
    })),
    images: [...rows.values()].sort((a, b) => a.lv.localeCompare(b.lv)),
  };
}
