import { randomBytes } from 'node:crypto';
import libmime from 'libmime';

/** A Date header value: "Sun, 22 Nov 2026 03:05:32 +0000" (RFC 5322 prefers a numeric zone to GMT). */
export function messageDate(date = new Date()): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

/** A fresh Message-ID in the sending mailbox's domain. */
export function newMessageId(mailbox: string): string {
  const domain = mailbox.slice(mailbox.lastIndexOf('@') + 1);
  return `<${Date.now().toString(36)}.${randomBytes(8).toString('hex')}@${domain}>`;
}

/**
 * A short text/plain message the relay writes itself (a test message, a notification), from the
 * account's mailbox. A non-ASCII subject is encoded (RFC 2047); the body is UTF-8.
 */
export function plainTextMessage({ from, to, subject, lines, autoSubmitted }: { from: string; to: string; subject: string; lines: string[]; autoSubmitted?: boolean }): Buffer {
  return Buffer.from(
    [
      `From: smtp-oauth-relay <${from}>`,
      `To: <${to}>`,
      `Subject: ${/^[\x20-\x7e]*$/.test(subject) ? subject : libmime.encodeWord(subject, 'Q')}`,
      `Date: ${messageDate()}`,
      `Message-ID: ${newMessageId(from)}`,
      ...(autoSubmitted ? ['Auto-Submitted: auto-generated'] : []),
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      ...lines,
      '',
    ].join('\r\n'),
  );
}
