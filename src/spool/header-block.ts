import { open } from 'node:fs/promises';
import { HeaderCollector, buildHeader } from '../util/header-fields.js';

/** The header block of a stored message (up to the blank line, at most maxBytes). */
export async function readHeaderBlock(file: string, maxBytes = 64 * 1024): Promise<Buffer> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return Buffer.alloc(0);
  try {
    const buffer = Buffer.alloc(maxBytes);
    const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
    const head = buffer.subarray(0, bytesRead);
    const crlf = head.indexOf('\r\n\r\n');
    const lf = head.indexOf('\n\n');
    const end = crlf >= 0 ? crlf + 2 : lf >= 0 ? lf + 1 : head.length;
    return head.subarray(0, end);
  } finally {
    await handle.close();
  }
}

/** Only the named fields (lower-case names) of a stored message's header, as received. */
export async function readHeaderFields(file: string, names: ReadonlySet<string>): Promise<Buffer> {
  const collector = new HeaderCollector();
  const section = collector.push(await readHeaderBlock(file)) ?? collector.finish();
  return buildHeader(section.fields.filter((field) => names.has(field.key)));
}
