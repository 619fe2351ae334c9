import { randomBytes } from 'node:crypto';
import type { QueueRecord } from './record.js';
import { messageDate, newMessageId } from '../util/rfc5322.js';

export interface ReportInput {
  record: QueueRecord;
  /** The failed message's header block (for the text/rfc822-headers part). */
  originalHeaders: Buffer;
  reportingHost: string;
  from: string;
  to: string;
  reason: string;
}

/**
 * A delivery status notification (RFC 3464 multipart/report): a human-readable part, the
 * machine-readable message/delivery-status with one block per failed recipient and the upstream's
 * reply, and the failed message's headers (never its body).
 */
export function buildFailureReport(input: ReportInput): Buffer {
  const { record, reportingHost } = input;
  const boundary = `=_report_${randomBytes(12).toString('hex')}`;
  const date = messageDate();
  const failures = record.failedRecipients;
  const explanation = [
    `This is the smtp-oauth-relay on ${reportingHost}.`,
    '',
    `A message received ${record.receivedAt} from device user ${record.user ?? 'unknown'} could not be`,
    `delivered to ${failures.length === 1 ? 'this recipient' : 'these recipients'}:`,
    '',
    ...failures.map((failure) => `  <${failure.address}>: ${failure.reply}`),
    '',
    input.reason,
    record.delivered.length ? `It was delivered to: ${record.delivered.join(', ')}` : '',
    `The relay keeps a copy; an administrator can see it with: smtp-oauth-relay queue failed`,
  ].join('\r\n');
  const status = [
    `Reporting-MTA: dns; ${reportingHost}`,
    `X-Queue-ID: ${record.id}`,
    `Arrival-Date: ${messageDate(new Date(record.receivedAt))}`,
    '',
    ...failures.flatMap((failure) => [
      `Final-Recipient: rfc822; ${failure.address}`,
      'Action: failed',
      `Status: ${statusCode(failure.reply)}`,
      `Diagnostic-Code: smtp; ${failure.reply.replace(/[\r\n]+/g, ' ')}`,
      `Last-Attempt-Date: ${date}`,
      '',
    ]),
  ].join('\r\n');
  const lines = [
    `From: Mail Delivery System <${input.from}>`,
    `To: ${input.to}`,
    `Subject: Undelivered Mail Returned to Sender`,
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

/** The enhanced status code of a reply ("550 5.7.60 ..." → 5.7.60), 5.0.0 when it has none. */
function statusCode(reply: string): string {
  return /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply)?.[1]?.replace(/^[24]/, '5') ?? '5.0.0';
}
