import { randomBytes } from 'node:crypto';

/** A Date header value: "Sun, 22 Nov 2026 03:05:32 +0000" (RFC 5322 prefers a numeric zone to GMT). */
export function messageDate(date = new Date()): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

/** A fresh Message-ID in the sending mailbox's domain. */
export function newMessageId(mailbox: string): string {
  const domain = mailbox.slice(mailbox.lastIndexOf('@') + 1);
  return `<${Date.now().toString(36)}.${randomBytes(8).toString('hex')}@${domain}>`;
}
