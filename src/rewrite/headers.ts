import addressparser from 'nodemailer/lib/addressparser';
import libmime from 'libmime';
import { messageDate, newMessageId } from '../util/rfc5322.js';
import { fieldValue, makeField, type HeaderField } from '../util/header-fields.js';

export interface SenderRules {
  /** The mailbox the account is authorised for. */
  mailbox: string;
  /** Lower-cased addresses the mailbox may send as; a From among them is kept. */
  sendAs: readonly string[];
  /** The device's MAIL FROM, standing in for the author when there is no usable From; '' for a bounce. */
  envelopeFrom: string;
  /** A Received field's value for the top of the header (RFC 5321 §4.4), when one is added. */
  received?: string;
}

export interface SenderDecision {
  /** MAIL FROM for the upstream. */
  envelopeFrom: string;
  /** The author's address as the device gave it (a valid address), if any. */
  originalFrom?: string;
  fromRewritten: boolean;
}

interface Mailbox {
  name: string;
  address: string;
}

/** An address a reply or a report can go to: local@domain, nothing that could hide another. */
const ADDRESS = /^[^\s@<>()[\]\\,;:"]+@[^\s@<>()[\]\\,;:".]+(?:\.[^\s@<>()[\]\\,;:".]+)*$/;
/** Exactly one mailbox and nothing else: `addr` or `phrase <addr>` (no groups, lists, comments). */
const SINGLE_MAILBOX = /^[ \t]*(?:(?:"(?:[^"\\\r\n]|\\[\x20-\x7e])*"|[^"<>@,;:\\()[\]\r\n]*?)[ \t]*<([^<>]+)>|([^<>\s"]+))[ \t]*$/;

/**
 * Applies the sender rules to a header section and returns the fields that leave. Exactly one
 * From leaves: the device's own, only when it is one mailbox from `sendAs` and nothing more;
 * otherwise the account's mailbox (display name kept). Several From, Sender or Reply-To fields
 * are never passed on: Sender goes, a lone Reply-To stays, the author goes to Reply-To when the
 * From was rewritten. Date and Message-ID are added when missing. Other fields stay byte for byte.
 */
export function applySenderRules(fields: readonly HeaderField[], rules: SenderRules): { fields: HeaderField[]; decision: SenderDecision } {
  const fromFields = fields.filter((field) => field.key === 'from');
  const author = fromFields.length > 0 ? firstMailbox(fieldValue(fromFields[0])) : undefined;
  const validAuthor = author && ADDRESS.test(author.address) ? author : undefined;
  // A bounce (null MAIL FROM) has no one to reply to or report to: its From is a MAILER-DAEMON.
  const bounce = rules.envelopeFrom === '';
  const originalFrom = bounce ? undefined : (validAuthor?.address ?? (ADDRESS.test(rules.envelopeFrom) ? rules.envelopeFrom : undefined));
  const kept = fromFields.length === 1 ? allowedFrom(fieldValue(fromFields[0]), rules.sendAs) : undefined;

  const replyTos = fields.filter((field) => field.key === 'reply-to');
  const firstFrom = fields.findIndex((field) => field.key === 'from');
  const out = fields.filter((field) => field.key !== 'from' && field.key !== 'sender' && (field.key !== 'reply-to' || replyTos.length === 1));
  const position = firstFrom < 0 ? 0 : fields.slice(0, firstFrom).filter((field) => out.includes(field)).length;
  // Rebuilt in one canonical form even when kept: a strict parser and Outlook then read what the relay decided.
  const sentAs = kept ?? rules.mailbox;
  out.splice(position, 0, makeField('From', formatMailbox({ name: displayName(author?.name ?? '', sentAs), address: sentAs })));
  if (!kept && originalFrom && originalFrom.toLowerCase() !== rules.mailbox.toLowerCase() && replyTos.length !== 1) {
    out.splice(position + 1, 0, makeField('Reply-To', formatMailbox({ name: displayName(validAuthor?.name ?? '', originalFrom), address: originalFrom })));
  }
  if (!out.some((field) => field.key === 'date')) out.push(makeField('Date', messageDate()));
  if (!out.some((field) => field.key === 'message-id')) out.push(makeField('Message-ID', newMessageId(rules.mailbox)));
  if (rules.received) out.unshift(makeField('Received', rules.received));
  const decision = kept ? { envelopeFrom: kept, originalFrom, fromRewritten: false } : { envelopeFrom: rules.mailbox, originalFrom, fromRewritten: true };
  return { fields: out, decision };
}

/** An at sign, or one that looks like it (fullwidth, small). */
const AT_SIGN = /[@\uFF20\uFE6B]/;

/**
 * The display name to keep: none when it names an address other than the one sent as. Outlook
 * shows the name, so `"ceo@bank.example" <scanner@contoso.com>` would pass for the CEO.
 */
function displayName(name: string, sentAs: string): string {
  if (!AT_SIGN.test(name)) return name;
  return name.replace(/^[\s"'<]+|[\s"'>]+$/g, '').toLowerCase() === sentAs.toLowerCase() ? name : '';
}

/** The address of a From value that is exactly one allowed mailbox, else undefined. */
function allowedFrom(rawValue: string, sendAs: readonly string[]): string | undefined {
  const match = SINGLE_MAILBOX.exec(rawValue);
  const address = match?.[1] ?? match?.[2];
  if (!address || !ADDRESS.test(address)) return undefined;
  return sendAs.includes(address.toLowerCase()) ? address : undefined;
}

/** The first mailbox of a raw (binary string; possibly encoded or 8-bit) From value. */
function firstMailbox(rawValue: string): Mailbox | undefined {
  const text = libmime.decodeWords(decodeHeaderBytes(rawValue));
  const flattened = addressparser(text, { flatten: true }) as { name?: string; address?: string }[];
  const found = flattened.find((entry) => entry.address);
  return found && { name: (found.name ?? '').trim(), address: found.address!.trim() };
}

/**
 * Header lines come as binary strings (one char per byte). 8-bit headers are UTF-8 from modern
 * senders and Latin-1 from old ones: UTF-8 when the bytes are valid UTF-8, otherwise Latin-1.
 */
function decodeHeaderBytes(binary: string): string {
  const bytes = Buffer.from(binary, 'latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

/** Display name plus address, 7-bit clean: encoded words for non-ASCII, quotes for specials. */
function formatMailbox({ name, address }: Mailbox): string {
  const cleanName = name.replace(/[\r\n\t]+/g, ' ');
  if (!cleanName) return address;
  if (/[^\x20-\x7e]/.test(cleanName)) return `${libmime.encodeWord(cleanName, 'Q', 52)} <${address}>`;
  if (/[()<>[\]:;@\\,."]/.test(cleanName)) return `"${cleanName.replace(/(["\\])/g, '\\$1')}" <${address}>`;
  return `${cleanName} <${address}>`;
}
