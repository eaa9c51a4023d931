/**
 * Which nodes a TM action changes (devices, activations, LVs): their node locks are taken
 * before the action observes anything (core/nodeLock.ts). In name order, so that two
 * actions that both lock two nodes (mv A->B and mv B->A) cannot each hold one and wait
 * for the other. The front-end holds no repository devices and is not locked.
 */
import type { TmRequest } from './args.js';

export function hostsToLock(req: TmRequest, frontends: readonly string[]): string[] {
  const hosts = ((): string[] => {
    switch (req.action) {
      case 'clone':
      case 'ln':
      case 'mkimage':
      case 'mkswap':
      case 'context':
        return [req.dst.host];
      case 'mvds':
      case 'cpds':
        return [req.src.host];
      case 'mv':
        return [req.src.host, req.dst.host];
      case 'delete':
      case 'resize':
      case 'snap_create':
      case 'snap_create_live':
      case 'snap_delete':
      case 'snap_revert':
        return [req.target.host];
      case 'activate':
      case 'prebackup':
      case 'prebackup_live':
      case 'postbackup':
      case 'postbackup_live':
      case 'restore':
        return [req.host];
      case 'premigrate':
      case 'postmigrate':
      case 'failmigrate':
      case 'monitor':
        return [];
    }
  })();
  return [...new Set(hosts)].filter((h) => h !== 'localhost' && !frontends.includes(h)).sort();
}
