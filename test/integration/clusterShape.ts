/**
 * How many nodes each suite cluster has (the global setup boots them so; attachMine hands
 * files the smallest cluster that fits). The first cluster has a third, smaller node for
 * peer-to-peer staging (distribute.test.ts); the others keep two. 2 GiB is enough for a node
 * that maps small clones (its root is its RAM-backed initramfs); two clusters plus it fit the
 * machine's 24 GiB.
 */
export const CLUSTER_NODES = (i: number): { nodes: number; nodeMemMiB?: Record<number, number> } =>
  i === 0 ? { nodes: 3, nodeMemMiB: { 3: 2048 } } : { nodes: 2 };
