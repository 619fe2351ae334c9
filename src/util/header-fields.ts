/**
 * The header block as a receiving MTA reads it (RFC 5322 §2.2, §3.6 and the obsolete syntax of
 * §4.5): a field starts with a name of printable characters and a colon, with optional white space
 * before the colon (`From :` is a From field); a line starting with white space continues the field
 * before it; the block ends at the first empty line or at the first line that is neither (an mbox
 * `From ` line, an HTTP request line, body text). There is no other special case: the relay and the
 * upstream must agree on which lines are fields, or a forged field could slip past the rewrite.
 */
export interface HeaderField {
  /** Lower-cased field name, without the white space before the colon. */
  key: string;
  /** The field's bytes as received, folded lines and final line ending included. */
  raw: Buffer;
}

const FIELD_NAME = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;
const SP = 0x20;
const HT = 0x09;
const CR = 0x0d;
const LF = 0x0a;

export type LineKind = 'blank' | 'continuation' | 'field' | 'body';

/** What one complete header-section line is. */
export function classifyLine(line: Buffer): LineKind {
  if (line[0] === LF || (line[0] === CR && line[1] === LF)) return 'blank';
  if (line[0] === SP || line[0] === HT) return 'continuation';
  // A field name is at most a few dozen bytes; reading a bounded prefix keeps this cheap.
  return FIELD_NAME.test(line.subarray(0, 256).toString('latin1')) ? 'field' : 'body';
}

export function fieldKey(line: Buffer): string {
  return FIELD_NAME.exec(line.subarray(0, 256).toString('latin1'))![1].toLowerCase();
}

/** The value of a field: after the colon, folding removed, as a binary string (one char per byte). */
export function fieldValue(field: HeaderField): string {
  const text = field.raw.toString('latin1');
  return text.slice(text.indexOf(':') + 1).replace(/\r?\n(?=[ \t])/g, '').replace(/\r?\n$/, '');
}

/** A new field from text (UTF-8 where it is not ASCII: an internationalized address, RFC 6532). */
export function makeField(name: string, value: string): HeaderField {
  return { key: name.toLowerCase(), raw: Buffer.from(`${name}: ${value}\r\n`, 'utf8') };
}

/**
 * Collects a message's header section from the front of a stream, in linear time: bytes are
 * appended to a buffer that grows by doubling, and only new bytes are searched for line ends.
 */
export class HeaderCollector {
  private buffer = Buffer.alloc(4096);
  private length = 0;
  private lineStart = 0;
  private readonly fields: HeaderField[] = [];
  private current?: { start: number; key: string };

  /** Bytes held so far. */
  get size(): number {
    return this.length;
  }

  get fieldCount(): number {
    return this.fields.length + (this.current ? 1 : 0);
  }

  /**
   * Adds bytes; once the header section is complete, returns its fields and where the body starts
   * in the bytes held (`blankLine` says whether an empty line separated them).
   */
  push(chunk: Buffer): HeaderSection | undefined {
    this.append(chunk);
    const held = this.buffer.subarray(0, this.length);
    for (let end = held.indexOf(LF, this.lineStart); end !== -1; end = held.indexOf(LF, this.lineStart)) {
      const done = this.takeLine(end + 1);
      if (done) return done;
    }
    return undefined;
  }

  /** The end of the stream came before the end of the header section. */
  finish(): HeaderSection {
    if (this.lineStart < this.length) {
      // A last line without a line ending: a field if it looks like one, otherwise body.
      const line = this.buffer.subarray(this.lineStart, this.length);
      const kind = classifyLine(line);
      if (kind === 'field' || (kind === 'continuation' && this.current)) {
        this.append(Buffer.from('\r\n'));
        const done = this.takeLine(this.length);
        if (done) return done;
      }
    }
    return this.section(this.lineStart, false);
  }

  private takeLine(end: number): HeaderSection | undefined {
    const line = this.buffer.subarray(this.lineStart, end);
    const kind = classifyLine(line);
    if (kind === 'blank') return this.section(end, true);
    if (kind === 'body' || (kind === 'continuation' && !this.current)) return this.section(this.lineStart, false);
    if (kind === 'field') {
      this.closeField();
      this.current = { start: this.lineStart, key: fieldKey(line) };
    }
    this.lineStart = end;
    return undefined;
  }

  private closeField(): void {
    if (!this.current) return;
    this.fields.push({ key: this.current.key, raw: Buffer.from(this.buffer.subarray(this.current.start, this.lineStart)) });
    this.current = undefined;
  }

  /** The header section ends where the current line starts; the body at bodyStart. */
  private section(bodyStart: number, blankLine: boolean): HeaderSection {
    this.closeField();
    return { fields: this.fields, blankLine, rest: this.buffer.subarray(bodyStart, this.length) };
  }

  private append(chunk: Buffer): void {
    if (this.length + chunk.length > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + chunk.length));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    chunk.copy(this.buffer, this.length);
    this.length += chunk.length;
  }
}

export interface HeaderSection {
  fields: HeaderField[];
  /** Whether the original had an empty line between header and body (it is not part of `rest`). */
  blankLine: boolean;
  /** Everything after the header section: the body, byte for byte. */
  rest: Buffer;
}

/** The header section as bytes: each field, then the empty line that ends it. */
export function buildHeader(fields: readonly HeaderField[]): Buffer {
  return Buffer.concat([...fields.map((field) => field.raw), Buffer.from('\r\n')]);
}

/** RFC 5322 §2.1.1: a line is at most 998 octets, CRLF not counted. */
export const MAX_LINE_OCTETS = 998;

/**
 * The field with every line over 998 octets folded (RFC 5322 §2.2.3): at white space where there is
 * some, otherwise by inserting a folding space at the limit, as Postfix does for long lines
 * (smtp_line_length_limit). The field's words survive with a space where it was cut; a UTF-8
 * character is never cut in two.
 */
export function foldLongLines(field: HeaderField): HeaderField {
  if (field.raw.length <= MAX_LINE_OCTETS + 2) return field; // nearly every field: no line can be too long
  const text = field.raw.toString('latin1');
  const lines = text.replace(/\r\n$/, '').split('\r\n');
  if (lines.every((line) => line.length <= MAX_LINE_OCTETS)) return field;
  const folded: string[] = [];
  for (let line of lines) {
    while (line.length > MAX_LINE_OCTETS) {
      // The last white space that leaves a first part within the limit (not the one that starts a continuation).
      const space = Math.max(line.lastIndexOf(' ', MAX_LINE_OCTETS), line.lastIndexOf('\t', MAX_LINE_OCTETS));
      const cut = space > 0 ? space : characterStart(line, MAX_LINE_OCTETS);
      folded.push(line.slice(0, cut));
      line = space > 0 ? line.slice(cut) : ` ${line.slice(cut)}`;
    }
    folded.push(line);
  }
  return { key: field.key, raw: Buffer.from(`${folded.join('\r\n')}\r\n`, 'latin1') };
}

/** The position at or before `at` where a UTF-8 character starts (a binary string: one char per byte). */
function characterStart(binary: string, at: number): number {
  let position = at;
  while (position > at - 3 && (binary.charCodeAt(position) & 0xc0) === 0x80) position--;
  return position;
}
