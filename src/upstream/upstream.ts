import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { ResolvedAccount } from '../config/index.js';
import type { AccessTokens } from '../oauth/index.js';
import type { Logger } from '../log.js';
import { SmtpError } from '../reply.js';
import type { Metrics } from '../metrics/index.js';
import type { SessionSlot, UpstreamShare } from '../cluster-state/index.js';
import { Pacer } from './pacing.js';
import type { Envelope, SendReceipt, Transport } from './transport.js';
import { createTransport } from './transports.js';
import { checkHeaderRecipients } from './header-recipients.js';
import type { HeaderField } from '../util/header-fields.js';

export type { Envelope, SendReceipt } from './transport.js';

/**
 * The message for attempt 1, 2, ... of one send (the one retry reads it afresh). A message still
 * arriving from the device is a promise for its second reading: the retry waits until it is whole.
 */
export type OpenMessage = (attempt: number) => Readable | Promise<Readable>;

/** Each recipient with the upstream's answer for it (the delivery log's view of a send). */
export function recipientReplies(receipt: SendReceipt): { address: string; reply: string }[] {
  return [...receipt.accepted.map((address) => ({ address, reply: receipt.response })), ...receipt.rejected.map(({ address, response }) => ({ address, reply: response }))];
}

/** A send waits this long at most for the pace to allow it (well within a device's DATA timeout). */
const PACE_WAIT_MS = 10_000;
/** How often a send waiting for a cluster-wide session slot asks again (plus jitter). */
const SESSION_POLL_MS = 25;

/**
 * One account's way out, whatever its transport (SMTP with XOAUTH2, Graph, the Gmail API): the
 * provider's pace, the mailbox's session slots, recipient batches and one immediate retry around
 * the transport's attempts.
 */
export class Upstream {
  private readonly transport: Transport;
  /** Direct mode without a cluster paces here (with one, the cluster paces every send). */
  private readonly directPacer?: Pacer;
  /** Until when the provider asked for no sends (Retry-After). */
  private pausedUntil = 0;

  constructor(
    readonly account: ResolvedAccount,
    tokens: AccessTokens,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    hostname: string,
    private readonly cluster: UpstreamShare,
    /** Where a transport may keep a message's parts while it sends them (Graph's large attachments). */
    scratchDir: string,
  ) {
    if (account.delivery === 'direct' && !cluster.sharesSessions) this.directPacer = new Pacer(account.limits);
    // The provider never sees more than maxConnections sessions of the mailbox, cluster-wide: an
    // SMTP connection holds a slot while it is open (idle in the pool too), an API call while it lasts.
    const sessions = {
      take: (signal?: AbortSignal) => this.waitForSession(signal),
      takeIfFree: () => cluster.takeSession(account.name, account.upstream.maxConnections, randomUUID(), false),
      wantedElsewhere: () => cluster.sessionsWanted(account.name),
      shared: cluster.sharesSessions,
    };
    this.transport = createTransport(account, tokens, hostname, { sessions, scratchDir, logger: logger.child({ account: account.name }) });
  }

  /**
   * Sends a message read from `openMessage` (called again for the one retry). Resolves with the
   * upstream's receipt or rejects with an SmtpError saying what the device should be told.
   * Aborting `signal` while the message is streaming closes the connection before the final dot,
   * so the upstream discards what it got (RFC 5321 4.1.1.4: only the dot completes a message).
   */
  async send(envelope: Envelope, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
    await this.keepPace(envelope.to.length, signal);
    const started = performance.now();
    try {
      return await this.sendInParts(envelope, openMessage, signal);
    } finally {
      this.metrics.upstreamSendDuration.observe({ account: this.account.name, transport: this.transport.name }, (performance.now() - started) / 1000);
    }
  }

  /**
   * More recipients than the provider takes in one transaction (upstream.maxRecipientsPerMessage)
   * go in several transactions of the same content, one after the other. Once a part went through,
   * a later part's failure is reported per recipient (a 4xx keeps them pending in the queue), so
   * that what was delivered is never sent again.
   */
  private async sendInParts(envelope: Envelope, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
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

  /**
   * Before a message is taken (250): for a transport that delivers to the header's recipients, a
   * To/Cc/Bcc the device did not send to is refused now, with the reply the delivery would get.
   */
  checkHeaderRecipients(fields: readonly HeaderField[], envelopeTo: readonly string[]): void {
    if (!this.transport.deliversToHeader) return;
    try {
      checkHeaderRecipients(fields, envelopeTo);
    } catch (error) {
      throw this.transport.classify(error, this.account.name);
    }
  }

  /** The largest message the account's transport can send, when it has a limit of its own. */
  get maxMessageSize(): number | undefined {
    return this.transport.maxMessageSize;
  }

  /** Recipients per upstream transaction, when the provider limits them (upstream.maxRecipientsPerMessage). */
  get maxRecipientsPerTransaction(): number | undefined {
    return this.transport.maxRecipientsPerAttempt;
  }

  close(): void {
    this.transport.close();
  }

  private async sendWithRetry(envelope: Envelope, openMessage: OpenMessage, signal?: AbortSignal): Promise<SendReceipt> {
    try {
      return await this.sendOnce(envelope, await openMessage(1), signal);
    } catch (error) {
      this.pauseIfAsked(error);
      if (!this.transport.worthOneRetry(error)) throw this.transport.classify(error, this.account.name);
      // A refused token was dropped, a stale connection is gone: one more try, afresh.
      this.logger.warn({ account: this.account.name, transport: this.transport.name, upstream: (error as { response?: string }).response, code: (error as { code?: string }).code }, 'upstream refused the token or lost the connection; retrying once');
      try {
        return await this.sendOnce(envelope, await openMessage(2), signal);
      } catch (retryError) {
        this.pauseIfAsked(retryError);
        throw this.transport.classify(retryError, this.account.name);
      }
    }
  }

  private async sendOnce(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    // A send that fails before DATA never reads the stream; it must not keep its file open (nor,
    // while the message is still arriving, hold up the device).
    const slot = this.transport.sessionsPerConnection
      ? undefined
      : await this.waitForSession(signal).catch((error: unknown) => {
          message.destroy();
          throw error;
        });
    return this.transport.deliver(envelope, message, signal).finally(() => {
      message.destroy();
      void slot?.release();
    });
  }

  /** The provider's Retry-After stops this account's sends here, and on every replica. */
  private pauseIfAsked(error: unknown): void {
    const ms = this.transport.pauseAsked(error);
    if (ms === undefined) return;
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + ms);
    void this.cluster.pauseSending(this.account.name, ms);
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
      const paused = this.pausedUntil - Date.now();
      const wait = paused > 0 ? paused : this.directPacer ? this.localPace(this.directPacer, recipients, transactions) : await this.cluster.pace(this.account.name, this.account.limits, transactions, recipients);
      if (wait === 0) return;
      if (Date.now() + wait > giveUpAt) {
        const seconds = Math.ceil(wait / 1000);
        const why = paused > 0 ? `The provider asked ${this.account.name} to wait (Retry-After)` : `Sending pace of ${this.account.name} reached (limits)`;
        throw new SmtpError({ code: 451, enhanced: '4.7.0', text: `${why}; try again in ${seconds} s` }, 'upstream_deferred');
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
    const waiter = randomUUID();
    for (;;) {
      const slot = await this.cluster.takeSession(this.account.name, this.account.upstream.maxConnections, waiter);
      if (slot) return slot;
      signal?.throwIfAborted();
      if (Date.now() > giveUpAt) {
        throw new SmtpError({ code: 451, enhanced: '4.3.2', text: `All upstream sessions of ${this.account.name} are busy across the cluster; try again later` }, 'upstream_deferred');
      }
      await new Promise((resolve) => setTimeout(resolve, SESSION_POLL_MS + Math.random() * SESSION_POLL_MS));
    }
  }
}
