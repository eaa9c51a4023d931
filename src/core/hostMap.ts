/**
 * Which host name owns which sanlock host_id, kept as VG tags `cowstack_host:ID:NAME` so
 * every node can name the holder of a lock (sanlock itself only knows host ids).
 */
export const HOST_TAG_PREFIX = 'cowstack_host:';

export const hostTag = (hostId: number, name: string): string =>
  `${HOST_TAG_PREFIX}${hostId}:${name.replace(/[^A-Za-z0-9_+.\-/=!:#&]/g, '_')}`;

export function hostMapFromTags(tags: string[]): Map<number, string> {
  const map = new Map<number, string>();
  for (const t of tags) {
    if (!t.startsWith(HOST_TAG_PREFIX)) continue;
    const [id, ...name] = t.slice(HOST_TAG_PREFIX.length).split(':');
    map.set(Number(id), name.join(':'));
  }
  return map;
}
