import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import nodemailer, { type Mail, type SMTPPoolOptions } from 'nodemailer';
import type { ResolvedAccount } from '../config/index.js';
import type { TokenManager } from '../oauth/index.js';
import type { Logger } from '../log.js';
import { classifySendError, type NodemailerError } from './classify.js';
import { SmtpError } from '../reply.js';
import type { Metrics } from '../metrics/index.js';
import type { ClusterState, SessionSlot } from '../cluster/index.js';
import { Pacer } from './pacing.js';
import { RELAY_LOGIN_METHOD, XOAuth2Rejected, logInWithXOAuth2, type LoginContext } from './xoauth2-login.js';

export interface Envelope {
  from: string;
  to: string[];
  /** RFC 3461 parameters for this transaction; sent only when the upstream offers DSN. */
  dsn?: { ret?: string; envid?: string; notify?: string[] };
}

/**
 * The message for attempt 1, 2, ... of one send (the one retry reads it afresh). A message still
 * arriving from the device is a promise for its second reading: the retry waits until it is whole.
 */
export type OpenMessage = (attempt: number) => Readable | Promise<Readable>;

export interface SendReceipt {
  accepted: string[];
  /** Recipients the upstream refused while it took the message for the others. */
  rejected: { address: string; response: string }[];
  response: string;
}

/** Each recipient with the upstream's answer for it (the delivery log's view of a send). */
export function recipientReplies(receipt: SendReceipt): { address: string; reply: string }[] {
  return [...receipt.accepted.map((address) => ({ address, reply: receipt.response })), ...receipt.rejected.map(({ address, response }) => ({ address, reply: response }))];
}

/** A send waits this long at most for the pace to allow it (well within a device's DATA timeout). */
const PACE_WAIT_MS = 10_000;
/** How often a send waiting for a cluster-wide session slot asks again (plus jitter). */
const SESSION_POLL_MS = 25;

/**
 * One account's way out: a pooled nodemailer transport that must use STARTTLS with a verified
 * certificate and logs in with AUTH XOAUTH2 using the token manager's token. Nodemailer's own
 * OAuth2 client is bypassed (it caches per connection and does not retry Office 365's plain 535).
 */
export class Upstream {
  private readonly transport: Mail;
  /** Direct mode without a cluster paces here (with one, the cluster paces every send). */
  private readonly directPacer?: Pacer;

  constructor(
    readonly account: ResolvedAccount,
    tokens: TokenManager,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    hostname: string,
    private readonly cluster: ClusterState,
  ) {
    const upstream = account.upstream;
    if (account.delivery === 'direct' && !cluster.sharesSessions) this.directPacer = new Pacer(account.limits);
    this.transport = nodemailer.createTransport({
      // In a cluster every send holds a cluster-wide session slot and its own connection, so that
      // the provider never sees more than maxConnections sessions (an idle pooled one counts too).
      pool: !cluster.sharesSessions,
      maxConnections: upstream.maxConnections,
      host: upstream.host,
      port: upstream.port,
      secure: false,
      requireTLS: true,
      // SNI carries host names only (RFC 6066); an IP address is still checked against the certificate.
      tls: { ca: upstream.ca ? readFileSync(upstream.ca) : undefined, minVersion: 'TLSv1.2', servername: isIP(upstream.host) ? undefined : upstream.host },
      name: hostname,
      connectionTimeout: upstream.timeoutMs,
      greetingTimeout: upstream.timeoutMs,
      socketTimeout: upstream.timeoutMs,
      logger: false,
      // nodemailer would re-send a message whose connection closed mid-send from the same, already
      // read stream; the retry is ours (below, and the queue), from a fresh read of the file.
      maxRequeues: 0,
      // XOAUTH2 only, whatever else the server lists, and no password at all (xoauth2-login.ts).
      // forceAuth: a server that lists no AUTH is still "logged in to", so the handler refuses it
      // instead of the message going out unauthenticated.
      forceAuth: true,
      auth: { type: 'custom', method: RELAY_LOGIN_METHOD, user: account.mailbox },
      customAuth: { [RELAY_LOGIN_METHOD]: (ctx: LoginContext) => logInWithXOAuth2(ctx, account.mailbox, tokens, hostname) },
    } as SMTPPoolOptions & { pool: true });
  }

  /**
   * Sends a message read from `openMessage` (called again for the one retry). Resolves with the
   * upstream's receipt or rejects with an SmtpError saying what the device should be told.
   * Aborting `signal` while the message is streaming closes the connection before the final dot,
   * so the upstream discards what it got (RFC 5321 4.1.1.4: only the dot completes a message).
   */
  async send(envelope: Envelope & { size?: number }, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
    await this.keepPace(envelope.to.length, signal);
    const started = performance.now();
    try {
      return await this.sendInParts(envelope, openMessage, signal);
    } finally {
      this.metrics.upstreamSendDuration.observe({ account: this.account.name }, (performance.now() - started) / 1000);
    }
  }

  /**
   * More recipients than the provider takes in one transaction (upstream.maxRecipientsPerMessage)
   * go in several transactions of the same content, one after the other. Once a part went through,
   * a later part's failure is reported per recipient (a 4xx keeps them pending in the queue), so
   * that what was delivered is never sent again.
   */
  private async sendInParts(envelope: Envelope & { size?: number }, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
    const size = this.maxRecipientsPerTransaction ?? envelope.to.length;
    if (envelope.to.length <= size) return this.sendWithRetry(envelope, openMessage, signal);
    const receipt: SendReceipt = { accepted: [], rejected: [], response: '' };
    for (let start = 0; start < envelope.to.length; start += size) {
      const to = envelope.to.slice(start, start + size);
      try {
        const part = await this.sendWithRetry({ ...envelope, to }, openMessage, signal);
        receipt.accepted.push(...part.accepted);
        receipt.rejected.push(...part.rejected);
        receipt.response = part.response;
      } catch (error) {
        if (receipt.accepted.length === 0) throw error;
        const reply = error instanceof SmtpError ? `${error.reply.code} ${error.message}` : '451 4.3.0 Local error';
        receipt.rejected.push(...to.map((address) => ({ address, response: reply })));
      }
    }
    return receipt;
  }

  /** Recipients per upstream transaction, when the provider limits them (upstream.maxRecipientsPerMessage). */
  get maxRecipientsPerTransaction(): number | undefined {
    return this.account.upstream.maxRecipientsPerMessage;
  }

  close(): void {
    this.transport.close();
  }

  private async sendWithRetry(envelope: Envelope & { size?: number }, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
    try {
      return await this.sendOnce(envelope, await openMessage(1), signal);
    } catch (error) {
      if (!isLoginRejection(error) && !isStaleConnection(error)) throw classifySendError(error, this.account.name);
      // A refused token was dropped when the login failed, and a pooled connection the upstream had
      // closed is gone: one more try, on a new connection (with a fresh token).
      this.logger.warn({ account: this.account.name, upstream: (error as NodemailerError).response, code: (error as NodemailerError).code }, 'upstream login refused or connection lost; retrying once');
      try {
        return await this.sendOnce(envelope, await openMessage(2), signal);
      } catch (retryError) {
        throw classifySendError(retryError, this.account.name);
      }
    }
  }


  private async sendOnce(envelope: Envelope & { size?: number }, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    // A send that fails before DATA never reads the stream; it must not keep its file open (nor,
    // while the message is still arriving, hold up the device).
    const slot = await this.waitForSession(signal).catch((error: unknown) => {
      message.destroy();
      throw error;
    });
    const info = await this.transport
      .sendMail({ envelope: { from: envelope.from, to: envelope.to, size: envelope.size }, raw: message, dsn: envelope.dsn, signal })
      .finally(() => {
        message.destroy();
        void slot.release();
      });
    const rejectedErrors = ((info as { rejectedErrors?: NodemailerError[] }).rejectedErrors ?? []).map((error) => ({
      address: String((error as { recipient?: string }).recipient ?? ''),
      response: error.response ?? error.message,
    }));
    return { accepted: (info.accepted as string[]) ?? [], rejected: rejectedErrors, response: info.response ?? '' };
  }

  /**
   * The provider's pace (`limits`) before a send: across the cluster when there is one; in this
   * process for direct mode (the queue paces its own deliveries). A short wait is waited out (a
   * device in DATA keeps its session); a longer one defers with 451, so the device or the queue
   * tries again later.
   */
  private async keepPace(recipients: number, signal?: AbortSignal): Promise<void> {
    const transactions = Math.max(1, Math.ceil(recipients / (this.maxRecipientsPerTransaction ?? Infinity)));
    const giveUpAt = Date.now() + PACE_WAIT_MS;
    for (;;) {
      const wait = this.directPacer ? this.localPace(this.directPacer, recipients, transactions) : await this.cluster.pace(this.account.name, this.account.limits, transactions, recipients);
      if (wait === 0) return;
      if (Date.now() + wait > giveUpAt) {
        const seconds = Math.ceil(wait / 1000);
        throw new SmtpError({ code: 451, enhanced: '4.7.0', text: `Sending pace of ${this.account.name} reached (limits); try again in ${seconds} s` }, 'upstream_deferred');
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
      signal?.throwIfAborted();
    }
  }

  private localPace(pacer: Pacer, recipients: number, transactions: number): number {
    const now = Date.now();
    const wait = pacer.waitMs(recipients, now, transactions);
    if (wait === 0) pacer.record(recipients, now, transactions);
    return wait;
  }

  /**
   * One of the mailbox's upstream sessions, cluster-wide (upstream.maxConnections; Exchange allows
   * 3). While all are taken elsewhere this waits, up to the upstream timeout, then defers.
   */
  private async waitForSession(signal?: AbortSignal): Promise<SessionSlot> {
    const giveUpAt = Date.now() + this.account.upstream.timeoutMs;
    for (;;) {
      const slot = await this.cluster.takeSession(this.account.name, this.account.upstream.maxConnections);
      if (slot) return slot;
      signal?.throwIfAborted();
      if (Date.now() > giveUpAt) {
        throw new SmtpError({ code: 451, enhanced: '4.3.2', text: `All upstream sessions of ${this.account.name} are busy across the cluster; try again later` }, 'upstream_deferred');
      }
      await new Promise((resolve) => setTimeout(resolve, SESSION_POLL_MS + Math.random() * SESSION_POLL_MS));
    }
  }
}

function isStaleConnection(error: unknown): boolean {
  return (error as NodemailerError).code === 'ECONNECTION';
}

function isLoginRejection(error: unknown): boolean {
  // nodemailer re-labels the handler's error as EAUTH but keeps the object.
  return error instanceof XOAuth2Rejected;
}
