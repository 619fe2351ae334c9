import type { Readable } from 'node:stream';
import addressparser from 'nodemailer/lib/addressparser';
import { HeaderCollector, fieldValue, type HeaderField } from '../util/header-fields.js';

/** The header section is read into memory to learn its recipients; the body streams. */
const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * An HTTP mail API (Graph, Gmail) delivers to the addresses in To, Cc and Bcc, not to an envelope.
 * An address there that is not an envelope recipient would get the message past the relay's
 * recipient policy (allowRecipients), so such a message is not sent.
 */
export class RecipientsOutsideEnvelope extends Error {
  constructor(readonly addresses: string[]) {
    super(`the message's To/Cc/Bcc name ${addresses.length} address(es) that are not envelope recipients`);
    this.name = 'RecipientsOutsideEnvelope';
  }
}

/** A message as an API transport sends it: the header section read, the rest still to stream. */
export interface SplitMessage {
  fields: HeaderField[];
  /** The header section's bytes as received (its empty line included). */
  head: Buffer;
  /** The body, byte for byte. */
  body: AsyncIterable<Buffer>;
}

/** Reads the header section of `message`, leaving the body to stream. */
export async function splitAtBody(message: Readable): Promise<SplitMessage> {
  const collector = new HeaderCollector();
  const chunks = message[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  for (;;) {
    const next = await chunks.next();
    const section = next.done ? collector.finish() : collector.push(next.value);
    if (section) {
      // The spool holds CRLF lines (SMTP DATA), so the fields and an empty line are the head as received.
      const head = Buffer.concat([...section.fields.map((field) => field.raw), ...(section.blankLine ? [Buffer.from('\r\n')] : [])]);
      return { fields: section.fields, head, body: remaining(Buffer.from(section.rest), chunks, !!next.done) };
    }
    if (collector.size > MAX_HEADER_BYTES) throw new Error('the header section is larger than 1 MB');
  }
}

async function* remaining(first: Buffer, chunks: AsyncIterator<Buffer>, done: boolean): AsyncIterable<Buffer> {
  if (first.length) yield first;
  if (done) return;
  for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
}

const RECIPIENT_FIELDS = new Set(['to', 'cc', 'bcc']);

/** Every address the header names as a recipient (To, Cc, Bcc), lower-cased. */
export function headerRecipients(fields: readonly HeaderField[]): string[] {
  const addresses = fields
    .filter((field) => RECIPIENT_FIELDS.has(field.key))
    .flatMap((field) => (addressparser(Buffer.from(fieldValue(field), 'latin1').toString('utf8'), { flatten: true }) as { address?: string }[]).map((entry) => entry.address?.trim().toLowerCase() ?? ''))
    .filter(Boolean);
  return [...new Set(addresses)];
}

/** The header's recipients; throws when one of them is not an envelope recipient. */
export function checkHeaderRecipients(fields: readonly HeaderField[], envelopeTo: readonly string[]): string[] {
  const named = headerRecipients(fields);
  const envelope = new Set(envelopeTo.map((address) => address.toLowerCase()));
  const outside = named.filter((address) => !envelope.has(address));
  if (outside.length) throw new RecipientsOutsideEnvelope(outside);
  return named;
}

/**
 * The header an API transport sends: as it is, with a Bcc field first for the envelope recipients
 * the header does not name (the provider delivers to them and removes the field from every copy).
 * Throws when the header names a recipient the envelope does not have.
 */
export function headerForApi(split: SplitMessage, envelopeTo: readonly string[]): Buffer {
  const named = checkHeaderRecipients(split.fields, envelopeTo);
  const unnamed = envelopeTo.filter((address) => !named.includes(address.toLowerCase()));
  if (!unnamed.length) return split.head;
  return Buffer.concat([Buffer.from(`Bcc: ${unnamed.join(',\r\n ')}\r\n`, 'utf8'), split.head]);
}
