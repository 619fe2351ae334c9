import { Headers } from '@zone-eu/mailsplit';
import addressparser from 'nodemailer/lib/addressparser';
import libmime from 'libmime';
import { messageDate, newMessageId } from '../util/rfc5322.js';

export interface SenderRules {
  /** The mailbox the account is authorised for. */
  mailbox: string;
  /** Lower-cased addresses the mailbox may send as; a From among them is kept. */
  sendAs: readonly string[];
  /** The device's MAIL FROM, standing in for the author when there is no From header. */
  envelopeFrom: string;
}

export interface SenderDecision {
  /** MAIL FROM for the upstream. */
  envelopeFrom: string;
  /** The author's address as the device gave it, if any. */
  originalFrom?: string;
  fromRewritten: boolean;
}

interface Mailbox {
  name: string;
  address: string;
}

/**
 * Applies the sender rules to a parsed header block: From becomes the mailbox (display name
 * kept) unless it is an allowed send-as address, the original author goes to Reply-To, Sender
 * goes, and Date and Message-ID are added when missing. Other header lines stay byte for byte.
 */
export function applySenderRules(headers: Headers, rules: SenderRules): SenderDecision {
  const lines = headers.getList();
  const fromValues = lines.filter((line) => line.key === 'from').map((line) => line.line.slice(line.line.indexOf(':') + 1));
  const author = fromValues.length > 0 ? firstMailbox(fromValues[0]) : undefined;
  const originalFrom = author?.address || rules.envelopeFrom || undefined;
  headers.remove('sender');
  ensureDateAndMessageId(headers, rules.mailbox);

  const keep = fromValues.length === 1 && author !== undefined && rules.sendAs.includes(author.address.toLowerCase());
  if (keep) return { envelopeFrom: author.address, originalFrom, fromRewritten: false };

  // The new From takes the old one's place; a message without one gets it at the top.
  const position = Math.max(0, lines.findIndex((line) => line.key === 'from'));
  headers.remove('from');
  headers.add('From', formatMailbox({ name: author?.name ?? '', address: rules.mailbox }), position);
  if (originalFrom && originalFrom.toLowerCase() !== rules.mailbox.toLowerCase() && !headers.hasHeader('reply-to')) {
    headers.add('Reply-To', formatMailbox({ name: author?.name ?? '', address: originalFrom }), position + 1);
  }
  return { envelopeFrom: rules.mailbox, originalFrom, fromRewritten: true };
}

function ensureDateAndMessageId(headers: Headers, mailbox: string): void {
  const end = headers.getList().length;
  if (!headers.hasHeader('date')) headers.add('Date', messageDate(), end);
  if (!headers.hasHeader('message-id')) headers.add('Message-ID', newMessageId(mailbox), end + 1);
}

/** The first mailbox of a raw (binary string; possibly folded, encoded or 8-bit) From value. */
function firstMailbox(rawValue: string): Mailbox | undefined {
  const text = libmime.decodeWords(decodeHeaderBytes(rawValue).replace(/\r?\n(?=[ \t])/g, ''));
  const flattened = addressparser(text, { flatten: true }) as { name?: string; address?: string }[];
  const found = flattened.find((entry) => entry.address);
  return found && { name: (found.name ?? '').trim(), address: found.address!.trim() };
}

/**
 * Header lines come as binary strings (one char per byte). 8-bit headers are UTF-8 from modern
 * senders and Latin-1 from old ones: UTF-8 when the bytes are valid UTF-8, otherwise Latin-1.
 */
function decodeHeaderBytes(binary: string): string {
  const bytes = Buffer.from(binary, 'binary');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

/** Display name plus address, 7-bit clean: encoded words for non-ASCII, quotes for specials. */
export function formatMailbox({ name, address }: Mailbox): string {
  if (!name) return address;
  if (/[^\x20-\x7e]/.test(name)) return `${libmime.encodeWord(name, 'Q', 52)} <${address}>`;
  if (/[()<>[\]:;@\\,."]/.test(name)) return `"${name.replace(/(["\\])/g, '\\$1')}" <${address}>`;
  return `${name} <${address}>`;
}
