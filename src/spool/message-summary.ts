import type { Readable } from 'node:stream';
import { MailParser, type AddressObject, type AttachmentStream, type MessageText } from 'mailparser';

/** What a person recognises a stored message by; never its text. */
export interface MessageSummary {
  subject?: string;
  from?: string;
  to?: string;
  date?: string;
  attachments: { filename?: string; contentType: string; size: number }[];
  /** Set when the parse stopped early (too many parts, too slow): the list is incomplete. */
  incomplete?: string;
}

const MAX_ATTACHMENTS = 100;
const TIMEOUT_MS = 10_000;

const addresses = (value: unknown) => (value ? [value as AddressObject | AddressObject[]].flat().map((entry) => entry.text).join(', ') : undefined);

/**
 * Parses a stored message with mailparser on demand (the console, `queue show`), never on the
 * hot path. Attachments are counted as they stream by and never held; text parts are skipped
 * unconverted. Bounded in parts and time: a hostile message cannot make this run for long.
 */
export function summarizeMessage(stream: Readable): Promise<MessageSummary> {
  return new Promise((resolve, reject) => {
    const parser = new MailParser({ skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true, maxHtmlLengthToParse: 0 });
    const summary: MessageSummary = { attachments: [] };
    const finish = (incomplete?: string) => {
      clearTimeout(timer);
      stream.unpipe(parser);
      stream.destroy();
      if (incomplete) summary.incomplete = incomplete;
      resolve(summary);
    };
    const timer = setTimeout(() => finish(`stopped after ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS);
    parser.on('headers', (headers) => {
      const date = headers.get('date');
      summary.subject = headers.get('subject') as string | undefined;
      summary.from = addresses(headers.get('from'));
      summary.to = addresses(headers.get('to'));
      summary.date = date instanceof Date && !Number.isNaN(date.getTime()) ? date.toISOString() : undefined;
    });
    parser.on('data', (part: AttachmentStream | MessageText) => {
      if (part.type !== 'attachment') return;
      if (summary.attachments.length >= MAX_ATTACHMENTS) return finish(`more than ${MAX_ATTACHMENTS} attachments`);
      const attachment = part as AttachmentStream;
      const entry = { filename: attachment.filename, contentType: attachment.contentType, size: 0 };
      summary.attachments.push(entry);
      attachment.content.on('data', (chunk: Buffer) => (entry.size += chunk.length));
      attachment.content.on('end', () => attachment.release?.());
    });
    parser.on('end', () => finish());
    parser.on('error', (error: Error) => {
      clearTimeout(timer);
      stream.destroy();
      reject(error);
    });
    stream.on('error', (error) => parser.destroy(error));
    stream.pipe(parser);
  });
}
