import { randomBytes } from 'node:crypto';
import type { QueueRecord } from './record.js';
import { messageDate, newMessageId } from '../util/rfc5322.js';

export interface ReportInput {
  record: QueueRecord;
  /** failed: these recipients will never get it; delayed: not yet, the relay keeps trying. */
  action: 'failed' | 'delayed';
  /** The recipients reported on, with the last reply for each. */
  entries: { address: string; reply: string }[];
  /** The message's header fields the report quotes (for the text/rfc822-headers part). */
  originalHeaders: Buffer;
  reportingHost: string;
  from: string;
  to: string;
  reason: string;
  /** For a delay report: when the relay gives up. */
  willRetryUntil?: Date;
}

/**
 * A delivery status notification (RFC 3464 multipart/report): a human-readable part, the
 * machine-readable message/delivery-status with one block per recipient and the upstream's reply
 * (with the device's ENVID and ORCPT, RFC 3461), and the message's headers (never its body).
 */
export function buildDeliveryReport(input: ReportInput): Buffer {
  const { record, reportingHost, entries, action } = input;
  const boundary = `=_report_${randomBytes(12).toString('hex')}`;
  const date = messageDate();
  const failed = action === 'failed';
  const explanation = [
    `This is the smtp-oauth-relay on ${reportingHost}.`,
    '',
    `A message received ${record.receivedAt} from device user ${record.user ?? 'unknown'} ${failed ? 'could not be' : 'has not yet been'}`,
    `delivered to ${entries.length === 1 ? 'this recipient' : 'these recipients'}:`,
    '',
    ...entries.map((entry) => `  <${entry.address}>: ${entry.reply}`),
    '',
    input.reason,
    record.delivered.length ? `It was delivered to: ${record.delivered.join(', ')}` : '',
    failed ? 'The relay keeps a copy; an administrator can see it with: smtp-oauth-relay queue failed' : 'No action is needed; you will be told if it fails for good.',
  ].join('\r\n');
  const orcpt = (address: string) => record.dsn?.recipients?.[address]?.orcpt;
  const status = [
    `Reporting-MTA: dns; ${reportingHost}`,
    ...(record.dsn?.envid ? [`Original-Envelope-Id: ${record.dsn.envid}`] : []),
    `X-Queue-ID: ${record.id}`,
    `Arrival-Date: ${messageDate(new Date(record.receivedAt))}`,
    '',
    ...entries.flatMap((entry) => [
      ...(orcpt(entry.address) ? [`Original-Recipient: ${orcpt(entry.address)!.replace(/;\s*/, '; ')}`] : []),
      `Final-Recipient: rfc822; ${entry.address}`,
      `Action: ${action}`,
      `Status: ${statusCode(entry.reply, failed ? '5' : '4')}`,
      `Diagnostic-Code: smtp; ${entry.reply.replace(/[\r\n]+/g, ' ')}`,
      `Last-Attempt-Date: ${date}`,
      ...(input.willRetryUntil ? [`Will-Retry-Until: ${messageDate(input.willRetryUntil)}`] : []),
      '',
    ]),
  ].join('\r\n');
  const lines = [
    `From: Mail Delivery System <${input.from}>`,
    `To: ${input.to}`,
    `Subject: ${failed ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)'}`,
    `Date: ${date}`,
    `Message-ID: ${newMessageId(input.from)}`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated delivery status notification.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    explanation,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    status,
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    input.originalHeaders.toString('utf8').replace(/\r?\n/g, '\r\n').trimEnd(),
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'));
}

/** The enhanced status code of a reply ("550 5.7.60 ..." → 5.7.60) in the given class, x.0.0 when it has none. */
function statusCode(reply: string, cls: '4' | '5'): string {
  return /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply)?.[1]?.replace(/^[245]/, cls) ?? `${cls}.0.0`;
}
