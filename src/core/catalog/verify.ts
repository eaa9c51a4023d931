/**
 * The rules a list must pass before anything in it is used (those of the grid sites'
 * image-list tools): a good signature by the one trusted key, not expired, and a version
 * not lower than the last one this node accepted (a replayed old list could bring back
 * an image the endorser withdrew). An equal version is the same list again: accepted.
 */
import { refused } from '../../exec/errors.js';
import { parseList, type ImageList } from './list.js';
import { parseSignature, verifySignature, type PublicKey } from './minisign.js';

export interface Accepted {
  id: string;
  version: number;
  keyId: string;
  expires: string;
  acceptedAt: string;
  /** The list as accepted: `catalog list` and `approve` read it on this node. */
  list: ImageList;
}

export interface VerifyInput {
  data: Buffer;
  /** The .minisig file's text; undefined when there was none. */
  signature?: string;
  key: PublicKey;
  now: Date;
  /** What this node accepted last for the list's id (state.ts), if anything. */
  last?: Pick<Accepted, 'version'>;
  where: string;
}

export function verifyList(i: VerifyInput): ImageList {
  if (i.signature === undefined)
    throw refused(`${i.where} has no signature (${i.where}.minisig)`, 'an unsigned list is never used');
  const sig = parseSignature(i.signature, `${i.where}.minisig`);
  const comment = verifySignature(i.data, sig, i.key, i.where);
  const list = parseList(i.data, comment);
  if (list.endorser.keyId.toUpperCase() !== sig.keyId)
    throw refused(`${i.where} names endorser key ${list.endorser.keyId} but is signed with ${sig.keyId}`);
  if (Date.parse(list.expires) <= i.now.getTime())
    throw refused(
      `${i.where} (${list.id} version ${list.version}) expired at ${list.expires}`,
      'fetch a current list from the endorser',
      {
        expires: list.expires,
      },
    );
  refuseRollback(list, i.last, i.where);
  return list;
}

export function refuseRollback(list: ImageList, last: Pick<Accepted, 'version'> | undefined, where: string): void {
  if (last && list.version < last.version)
    throw refused(
      `${where} (${list.id}) is version ${list.version}, older than version ${last.version} accepted before: ` +
        'refusing a rollback',
      'fetch the current list; an endorser never lowers the version',
      { version: list.version, accepted: last.version },
    );
}
