import type { Readable } from 'node:stream';
import { HeaderCollector, buildHeader } from '../util/header-fields.js';

/** The header block of a stored message (up to the blank line, at most maxBytes); stops reading there. */
export async function readHeaderBlock(message: Readable, maxBytes = 64 * 1024): Promise<Buffer> {
  let head = Buffer.alloc(0);
  try {
    // A file stream reads 64 KB at a time: one chunk holds the whole header of almost any message.
    for await (const chunk of message as AsyncIterable<Buffer>) {
      head = Buffer.concat([head, chunk]);
      const end = headerEnd(head);
      if (end !== undefined || head.length >= maxBytes) return head.subarray(0, Math.min(end ?? maxBytes, maxBytes));
    }
  } catch {
    return Buffer.alloc(0); // gone meanwhile (delivered or deleted)
  } finally {
    message.destroy();
  }
  return head;
}

function headerEnd(head: Buffer): number | undefined {
  const crlf = head.indexOf('\r\n\r\n');
  const lf = head.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return crlf + 2;
  return lf >= 0 ? lf + 1 : undefined;
}

/** Only the named fields (lower-case names) of a stored message's header, as received. */
export async function readHeaderFields(message: Readable, names: ReadonlySet<string>): Promise<Buffer> {
  const collector = new HeaderCollector();
  const section = collector.push(await readHeaderBlock(message)) ?? collector.finish();
  return buildHeader(section.fields.filter((field) => names.has(field.key)));
}
