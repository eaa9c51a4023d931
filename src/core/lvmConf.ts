/**
 * Minimal, comment-preserving edits of lvm.conf-style files: set `key = value` inside a
 * top-level `section { }`. Only the one active line changes; everything else (comments,
 * the admin's other settings) stays byte for byte, so the edit is safe to re-run.
 */

interface Span {
  open: number; // index of the line with "section {"
  close: number; // index of the line with the matching "}"
}

const stripComment = (line: string): string => {
  let inString = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') inString = !inString;
    else if (c === '#' && !inString) return line.slice(0, i);
  }
  return line;
};

function findSection(lines: string[], section: string): Span | undefined {
  const opener = new RegExp(`^\\s*${section}\\s*\\{`);
  let depth = 0;
  let open = -1;
  for (let i = 0; i < lines.length; i++) {
    const code = stripComment(lines[i]!);
    if (depth === 0 && open < 0 && opener.test(code)) open = i;
    for (const c of code) {
      if (c === '{') depth++;
      else if (c === '}') {
        depth--;
        if (depth === 0 && open >= 0) return { open, close: i };
      }
    }
  }
  return undefined;
}

/** Where the body of a section opened and closed on one line (`local { host_id = 1 }`) lies. */
function oneLineBody(line: string): { start: number; end: number } {
  const code = stripComment(line);
  return { start: code.indexOf('{') + 1, end: code.lastIndexOf('}') };
}

/** `key = value` inside a one-line body; value is a string, a [list] or a bare word. */
const inlineSetting = (key: string) => new RegExp(`((?:^|\\s)${key}\\s*=\\s*)("[^"]*"|\\[[^\\]]*\\]|[^\\s]+)`);

export function getConfValue(text: string, section: string, key: string): string | undefined {
  const lines = text.split('\n');
  const span = findSection(lines, section);
  if (!span) return undefined;
  if (span.open === span.close) {
    const line = lines[span.open]!;
    const { start, end } = oneLineBody(line);
    return inlineSetting(key).exec(line.slice(start, end))?.[2];
  }
  const re = new RegExp(`^\\s*${key}\\s*=\\s*(.*)$`);
  for (let i = span.open + 1; i < span.close; i++) {
    const m = re.exec(stripComment(lines[i]!));
    if (m) return m[1]!.trim();
  }
  return undefined;
}

export function setConfValue(text: string, section: string, key: string, value: string | number): string {
  const lines = text.split('\n');
  const setting = `${key} = ${value}`;
  const span = findSection(lines, section);
  if (!span) {
    const tail = text.endsWith('\n') || text === '' ? '' : '\n';
    return `${text}${tail}${section} {\n\t# set by cowstack\n\t${setting}\n}\n`;
  }
  const re = new RegExp(`^(\\s*)${key}\\s*=`);
  for (let i = span.open + 1; i < span.close; i++) {
    const m = re.exec(stripComment(lines[i]!));
    if (m) {
      lines[i] = `${m[1]}${setting}`;
      return lines.join('\n');
    }
  }
  if (span.open === span.close) {
    // A one-line section: edit the setting in place, "local { }" becomes a block, otherwise
    // the setting is appended inside the braces. The rest of the line stays as it was.
    const line = lines[span.open]!;
    const { start, end } = oneLineBody(line);
    const body = line.slice(start, end);
    const inline = inlineSetting(key);
    if (inline.test(body))
      lines[span.open] = `${line.slice(0, start)}${body.replace(inline, `$1${value}`)}${line.slice(end)}`;
    else if (!body.trim()) lines[span.open] = `${line.slice(0, start)}\n\t${setting}\n${line.slice(end)}`;
    else lines[span.open] = `${line.slice(0, start)}${body.trimEnd()} ${setting} ${line.slice(end)}`;
  } else {
    lines.splice(span.close, 0, `\t# set by cowstack`, `\t${setting}`);
  }
  return lines.join('\n');
}
