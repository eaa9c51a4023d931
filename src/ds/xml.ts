/**
 * A small, strict reader for the XML oned sends its datastore drivers (DS_DRIVER_ACTION_DATA):
 * elements, text, CDATA and the five predefined entities plus numeric references. Anything
 * else XML allows (DOCTYPE, entity declarations, processing instructions past the prolog) is
 * refused rather than interpreted: oned never sends it, and a DOCTYPE is how entity-expansion
 * attacks begin. Attributes are read and ignored (oned's documents have none that matter).
 */
import { usageError } from '../exec/errors.js';

export interface XmlElement {
  name: string;
  children: XmlElement[];
  /** The element's own text (CDATA included), entities decoded, untrimmed. */
  text: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*/;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
/** oned's documents are kilobytes; the image templates inside them too. */
const MAX_BYTES = 1 << 20;
const MAX_DEPTH = 32;

const malformed = (why: string, at: number) =>
  usageError(`the datastore driver XML is malformed: ${why} (at character ${at})`, 'oned sends well-formed XML');

function decodeEntities(text: string, at: number): string {
  return text.replace(/&([^;&\s]{0,10});/g, (_m, ref: string) => {
    if (ref in ENTITIES) return ENTITIES[ref]!;
    const code = /^#x([0-9a-fA-F]{1,6})$/.exec(ref)?.[1] ?? /^#([0-9]{1,7})$/.exec(ref)?.[1];
    const n = code === undefined ? NaN : ref.startsWith('#x') ? parseInt(code, 16) : Number(code);
    if (!Number.isInteger(n) || n < 1 || n > 0x10ffff) throw malformed(`unknown entity &${ref};`, at);
    return String.fromCodePoint(n);
  });
}

/** Parse one document; its root element. */
export function parseXml(xml: string): XmlElement {
  if (xml.length > MAX_BYTES) throw usageError(`the datastore driver XML is larger than ${MAX_BYTES} bytes`);
  let i = 0;
  const skipSpace = () => {
    while (i < xml.length && /\s/.test(xml[i]!)) i++;
  };
  skipSpace();
  if (xml.startsWith('<?xml', i)) {
    const end = xml.indexOf('?>', i);
    if (end < 0) throw malformed('unterminated XML declaration', i);
    i = end + 2;
  }
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  for (;;) {
    if (!stack.length) skipSpace();
    if (i >= xml.length) break;
    if (root && !stack.length) throw malformed('content after the root element', i);
    const lt = xml.indexOf('<', i);
    if (lt !== i) {
      const text = lt < 0 ? xml.slice(i) : xml.slice(i, lt);
      if (!stack.length) throw malformed('text outside the root element', i);
      if (text.includes(']]>')) throw malformed('"]]>" in text', i);
      stack.at(-1)!.text += decodeEntities(text, i);
      if (lt < 0) break;
      i = lt;
      continue;
    }
    if (xml.startsWith('<![CDATA[', i)) {
      const end = xml.indexOf(']]>', i);
      if (end < 0 || !stack.length) throw malformed('CDATA outside an element or unterminated', i);
      stack.at(-1)!.text += xml.slice(i + 9, end);
      i = end + 3;
      continue;
    }
    if (xml.startsWith('<!--', i)) {
      const end = xml.indexOf('-->', i);
      if (end < 0) throw malformed('unterminated comment', i);
      i = end + 3;
      continue;
    }
    if (xml.startsWith('<!', i) || xml.startsWith('<?', i))
      throw malformed('declarations and processing instructions are not accepted', i);
    if (xml[i + 1] === '/') {
      const name = NAME.exec(xml.slice(i + 2))?.[0];
      const open = stack.pop();
      if (!name || !open || open.name !== name) throw malformed(`unexpected </${name ?? ''}>`, i);
      i += 2 + name.length;
      skipSpace();
      if (xml[i] !== '>') throw malformed(`bad end tag </${name}`, i);
      i++;
      continue;
    }
    const name = NAME.exec(xml.slice(i + 1))?.[0];
    if (!name) throw malformed('a tag without a name', i);
    const gt = xml.indexOf('>', i);
    if (gt < 0) throw malformed(`unterminated <${name}`, i);
    const attrs = xml.slice(i + 1 + name.length, gt);
    const selfClosing = attrs.endsWith('/');
    if (!/^(\s+[A-Za-z_][A-Za-z0-9_.:-]*\s*=\s*("[^"<]*"|'[^'<]*'))*\s*\/?$/.test(attrs))
      throw malformed(`bad attributes in <${name}>`, i);
    const el: XmlElement = { name, children: [], text: '' };
    if (stack.length) stack.at(-1)!.children.push(el);
    else if (root) throw malformed('a second root element', i);
    else root = el;
    if (!selfClosing) stack.push(el);
    if (stack.length > MAX_DEPTH) throw malformed(`nested deeper than ${MAX_DEPTH}`, i);
    i = gt + 1;
  }
  if (stack.length) throw malformed(`<${stack.at(-1)!.name}> is not closed`, xml.length);
  if (!root) throw malformed('no root element', 0);
  return root;
}

/** The trimmed text of the element at `path` (names separated by "/") below `el`, or undefined. */
export function xmlText(el: XmlElement, path: string): string | undefined {
  let cur: XmlElement | undefined = el;
  for (const part of path.split('/')) cur = cur?.children.find((c) => c.name === part);
  return cur?.text.trim();
}
