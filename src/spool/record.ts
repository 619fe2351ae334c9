import type { DeclaredContent, DsnRequest } from '../envelope.js';

/** What the spool keeps beside each message: its envelope and its delivery history. */
export interface QueueRecord {
  id: string;
  account: string;
  envelope: { from: string; to: string[] };
  size: number;
  receivedAt: string;
  /** Device user and address it came from, for `queue show` and the logs. */
  user?: string;
  clientIp?: string;
  /** The author's address before the rewrite: where a failure report goes. */
  originalFrom?: string;
  /** A delivery report the relay wrote itself: a failure of it is never reported again. */
  isReport?: boolean;
  /** A bounce from the device (null MAIL FROM): never reported on (RFC 5321 6.1). */
  bounce?: boolean;
  /** The device's DSN parameters (RFC 3461): honoured in reports, passed upstream. */
  dsn?: DsnRequest;
  /** BODY=8BITMIME and SMTPUTF8 as the device declared them: declared upstream too. */
  content?: DeclaredContent;
  /** Set once a delay report (NOTIFY=DELAY) went out: there is one per message. */
  delayReported?: boolean;
  attempts: number;
  nextAttemptAt: string;
  lastAttemptAt?: string;
  /** The upstream's (or the relay's) last reply, e.g. "451 4.3.2 ...". */
  lastReply?: string;
  /** Recipients the upstream accepted: never sent to again. */
  delivered: string[];
  /** Recipients that failed for good, with the reply. */
  failedRecipients: { address: string; reply: string }[];
  /** Set (and saved) when the message failed for good, before its report and its move to failed/. */
  failedAt?: string;
  /**
   * Its failure reports, decided with failedAt: one message per recipient (each sees only its own
   * To), queued at most once under `${id}1`, `${id}2`, ... even across a crash.
   */
  report?: { id: string; to: string[]; explanation: string; sender?: string };
}

/** A record for a message just received: due now, nothing tried yet. */
export function newQueueRecord(fields: Pick<QueueRecord, 'id' | 'account' | 'envelope' | 'size'> & Partial<QueueRecord>): QueueRecord {
  const now = new Date().toISOString();
  return { receivedAt: now, nextAttemptAt: now, attempts: 0, delivered: [], failedRecipients: [], ...fields };
}

/** Recipients still to be delivered. */
export function pendingRecipients(record: QueueRecord): string[] {
  const done = new Set([...record.delivered, ...record.failedRecipients.map((failure) => failure.address)]);
  return record.envelope.to.filter((address) => !done.has(address));
}
