import type { Readable } from 'node:stream';
import type { TransportName } from '../config/index.js';
import type { DeclaredContent } from '../envelope.js';
import type { SmtpError } from '../reply.js';

export interface Envelope {
  from: string;
  to: string[];
  /** RFC 3461 parameters for this transaction; sent only when the upstream offers DSN. */
  dsn?: { ret?: string; envid?: string; notify?: string[] };
  /** The message's size in bytes, when known before it is read. */
  size?: number;
  /** What the device declared of the content (8BITMIME, SMTPUTF8): declared upstream where the server offers it. */
  content?: DeclaredContent;
}

export interface SendReceipt {
  accepted: string[];
  /** Recipients the upstream refused while it took the message for the others. */
  rejected: { address: string; response: string }[];
  response: string;
}

/**
 * One way of handing an account's message to its provider: SMTP with XOAUTH2, Microsoft Graph's
 * sendMail or the Gmail API's messages.send. Pacing, session slots, recipient batches and the one
 * immediate retry are the caller's (Upstream); a transport does one attempt and reads its own errors.
 */
export interface Transport {
  readonly name: TransportName;
  /**
   * One attempt with the message read from `message`. Aborting `signal` while the message is
   * being read must leave the provider with nothing it would send (no final dot, no finished request).
   */
  deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt>;
  /** A failure that one more attempt at once can cure: a token refused (and dropped), a connection gone stale. */
  worthOneRetry(error: unknown): boolean;
  /** Milliseconds the provider asked the account to wait before sending again (HTTP Retry-After), if it did. */
  pauseAsked(error: unknown): number | undefined;
  /** What the device (or the queue) is told about a failed attempt. */
  classify(error: unknown, account: string): SmtpError;
  /** The largest message this transport can send, when it is smaller than any device would meet otherwise: the listener refuses larger ones at DATA. */
  readonly maxMessageSize?: number;
  /**
   * Whether the provider delivers to the header's To, Cc and Bcc rather than to an envelope (the
   * HTTP APIs): then a header naming a recipient the device did not send to is refused at DATA.
   */
  readonly deliversToHeader: boolean;
  /**
   * Whether the transport holds the account's session slots itself, one per open connection (SMTP's
   * pool, so that a cluster reuses connections as a single relay does); otherwise each attempt holds one.
   */
  readonly sessionsPerConnection: boolean;
  /** Recipients one attempt may carry (the provider's per-message limit), or undefined for no split. */
  readonly maxRecipientsPerAttempt?: number;
  close(): void;
}
