import type { Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Config, ResolvedAccount } from './config/index.js';
import { formatByteSize } from './config/index.js';
import type { Transaction } from './listener/index.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics/metrics.js';
import { LineEndingGuard, SenderRewriter, SizeGuard, type LineEndingPolicy, type SenderDecision } from './rewrite/index.js';
import { newQueueRecord, type DeliveryAgent, type Spool, type StagedMessage } from './spool/index.js';
import { LiveSend, recipientReplies, type Upstream } from './upstream/index.js';
import { DEVICE_INPUT_REASONS, SmtpError, asSmtpError, defer, reject } from './reply.js';
import { messageDate } from './util/rfc5322.js';
import { upstreamDsn } from './envelope.js';
import type { HealthBoard } from './health.js';
import type { ReceivedEvent, TraceSink } from './trace/index.js';

export interface Route {
  account: ResolvedAccount;
  upstream: Upstream;
}

/** The pipeline's settings from the config (the same in one process and in every worker). */
export function pipelineSettings(config: Config, hostname: string): Pick<PipelineOptions, 'maxMessageSize' | 'maxHeaderBytes' | 'maxHeaderLines' | 'bareLineEndings' | 'receivedHeader' | 'hostname' | 'traceSubjects'> {
  const { smtp } = config;
  return { maxMessageSize: smtp.maxMessageSize, maxHeaderBytes: smtp.maxHeaderSize, maxHeaderLines: smtp.maxHeaderLines, bareLineEndings: smtp.bareLineEndings, receivedHeader: smtp.receivedHeader, hostname, traceSubjects: config.trace.subjects };
}

export interface PipelineOptions {
  routes: Map<string, Route>;
  spool: Spool;
  /** Takes each committed message (the delivery agent, or the primary process that runs it). */
  agent: Pick<DeliveryAgent, 'add'>;
  metrics: Metrics;
  health: Pick<HealthBoard, 'relayed' | 'failed'>;
  logger: Logger;
  maxMessageSize: number;
  maxHeaderBytes: number;
  maxHeaderLines: number;
  bareLineEndings: LineEndingPolicy;
  receivedHeader: 'full' | 'minimal' | 'off';
  /** The relay's name in Received fields. */
  hostname: string;
  /** The delivery log. */
  trace: TraceSink;
  /** Whether the delivery log keeps each message's Subject (trace.subjects). */
  traceSubjects: boolean;
}

/**
 * listener → rewrite → spool → upstream for one message. The message streams through the size
 * guard and the sender rewrite into a spool file. Queue mode then commits it durably and answers
 * 250 (the delivery agent takes it from there); direct mode streams it upstream at the same time,
 * lets the upstream's final dot go only once the whole message passed every check, and answers
 * with the upstream's verdict.
 */
export class Pipeline {
  constructor(private readonly options: PipelineOptions) {}

  /** Refuses new mail early (at MAIL FROM) when the spool has no room for it. */
  readonly admit = (declaredSize: number | undefined): Promise<void> => this.options.spool.ensureRoom(declaredSize ?? 0);

  /** @param signal aborted when the device hangs up before the end of DATA. */
  readonly handle = async (stream: Readable, transaction: Transaction, signal: AbortSignal): Promise<string> => {
    const { spool, metrics, routes } = this.options;
    const route = routes.get(transaction.user.account);
    if (!route) throw defer('internal', 'No account for this user', '4.3.5');
    const account = route.account.name;
    const id = spool.newId();
    const log = this.options.logger.child({ id, session: transaction.sessionId, clientIp: transaction.clientIp, user: transaction.user.username, account });

    // The account's transport may take less than the listener (Graph's MIME send: about 3 MB).
    const sizeLimit = Math.min(this.options.maxMessageSize, route.upstream.maxMessageSize ?? Infinity);
    const guard = new SizeGuard(sizeLimit);
    const lineEndings = new LineEndingGuard(transaction.user.bareLineEndings ?? this.options.bareLineEndings);
    const rewriter = new SenderRewriter(
      { mailbox: route.account.mailbox, sendAs: route.account.sendAs, envelopeFrom: transaction.mailFrom, received: this.received(transaction, id) },
      { maxHeaderBytes: this.options.maxHeaderBytes, maxHeaderLines: this.options.maxHeaderLines },
    );
    const live = this.liveSend(route, transaction, rewriter);
    let staged: StagedMessage | undefined;
    let receivedAt: string | undefined;
    try {
      // The device's stream is piped, not part of the pipeline: a failure here must not destroy
      // it, or the rest of DATA would be read as commands. A hang-up aborts the pipeline instead.
      staged = await spool.stage(id, stream.pipe(guard), live ? [lineEndings, rewriter, live.tee] : [lineEndings, rewriter], signal);
      receivedAt = new Date().toISOString();
      if (lineEndings.repairs > 0) log.info({ repairs: lineEndings.repairs }, 'bare CR/LF or NUL in the message normalised to CRLF');
      metrics.messagesReceived.inc({ account });
      metrics.messageSize.observe({ account }, guard.bytes);
      if (guard.exceeded) throw reject('too_large', 552, '5.3.4', `Message exceeds the size limit of ${formatByteSize(sizeLimit)}`);
      route.upstream.checkHeaderRecipients(rewriter.recipientFields, transaction.rcptTo);
      const context = { log, route, transaction, staged, decision: rewriter.decision, traced: this.receivedEvent(id, route, transaction, rewriter, guard.bytes, receivedAt) };
      return route.account.delivery === 'queue' ? await this.enqueue(context) : await this.relay(context, live);
    } catch (error) {
      live?.abandon(error);
      const refusal = this.fail(log, account, signal.aborted ? signal.reason : error, guard.bytes);
      // A message the device finished sending is in the log with the answer it got; a hang-up is not a message.
      if (!signal.aborted) this.traceRefusal(this.receivedEvent(id, route, transaction, rewriter, guard.bytes, receivedAt), refusal);
      throw refusal;
    } finally {
      if (staged) await spool.discard(staged); // gone already once committed to the queue
    }
  };

  /**
   * Direct mode sends upstream while the device is still sending (see LiveSend), unless the
   * recipients need several upstream transactions: those are sent one after the other afterwards.
   */
  private liveSend(route: Route, transaction: Transaction, rewriter: SenderRewriter): LiveSend | undefined {
    if (route.account.delivery === 'queue') return undefined;
    if (transaction.rcptTo.length > (route.upstream.maxRecipientsPerTransaction ?? Infinity)) return undefined;
    return new LiveSend(route.upstream, () => ({ from: rewriter.decision.envelopeFrom, to: transaction.rcptTo, dsn: upstreamDsn(transaction.dsn, transaction.rcptTo), content: transaction.content }));
  }

  /**
   * The Received field (RFC 5321 4.4) that traces the message to the device, with the protocol
   * keyword of RFC 3848 (ESMTPSA: EHLO, TLS, AUTH). `minimal` leaves out the device's address,
   * its EHLO name and its user name.
   */
  private received(transaction: Transaction, id: string): string | undefined {
    const mode = this.options.receivedHeader;
    if (mode === 'off') return undefined;
    const protocol = `${transaction.esmtp ? 'ESMTP' : 'SMTP'}${transaction.secure ? 'S' : ''}${transaction.authenticated ? 'A' : ''}`;
    const by = `by ${this.options.hostname} (smtp-oauth-relay) with ${protocol} id ${id}; ${messageDate()}`;
    if (mode === 'minimal') return by;
    const helo = /^[A-Za-z0-9.:[\]_-]{1,255}$/.test(transaction.helo) ? transaction.helo : 'unknown';
    const address = transaction.clientIp.includes(':') ? `IPv6:${transaction.clientIp}` : transaction.clientIp;
    // Inside a comment: parentheses and backslashes quoted, anything but printable ASCII replaced.
    const name = transaction.user.username.replace(/[^\x21-\x7e]/g, '?').replace(/([()\\])/g, '\\$1');
    const user = transaction.authenticated ? `\r\n\t(Authenticated sender: ${name})` : '';
    return `from ${helo} ([${address}])${user}\r\n\t${by}`;
  }

  /** The delivery log's first word on a message: who sent it, as whom, to whom. */
  private receivedEvent(id: string, route: Route, transaction: Transaction, rewriter: SenderRewriter, size: number, receivedAt = new Date().toISOString()): ReceivedEvent {
    const decision = rewriter.hasDecision ? rewriter.decision : undefined;
    return {
      at: receivedAt,
      event: 'received',
      id,
      account: route.account.name,
      mode: route.account.delivery,
      user: transaction.user.username,
      clientIp: transaction.clientIp,
      size,
      from: decision?.originalFrom,
      sentAs: decision?.envelopeFrom ?? route.account.mailbox,
      to: transaction.rcptTo,
      subject: this.options.traceSubjects ? rewriter.subject : undefined,
      messageId: rewriter.hasDecision ? rewriter.messageId : undefined,
    };
  }

  private traceRefusal(received: ReceivedEvent, refusal: SmtpError): void {
    const { trace } = this.options;
    trace.record(received);
    trace.record({ at: new Date().toISOString(), event: 'refused', id: received.id, account: received.account, reply: `${refusal.reply.code} ${refusal.message}` });
  }

  private async enqueue({ log, route, transaction, staged, decision, traced }: StageResult): Promise<string> {
    const { spool, agent } = this.options;
    const record = newQueueRecord({
      id: staged.id,
      account: route.account.name,
      envelope: { from: decision.envelopeFrom, to: transaction.rcptTo },
      size: staged.size,
      user: transaction.user.username,
      clientIp: transaction.clientIp,
      originalFrom: decision.originalFrom,
      bounce: transaction.mailFrom === '' || undefined,
      dsn: transaction.dsn,
      content: Object.keys(transaction.content).length ? transaction.content : undefined,
    });
    await spool.commit(staged, record);
    this.options.trace.record(traced);
    // Delivery starts after the 250 is on its way: the device does not wait for the agent's work.
    setImmediate(() => agent.add(record));
    log.info({ size: staged.size, from: decision.envelopeFrom, originalFrom: decision.originalFrom, fromRewritten: decision.fromRewritten, recipients: transaction.rcptTo.length }, 'message queued');
    return `Ok: queued as ${staged.id}`;
  }

  private async relay({ log, route, transaction, staged, decision, traced }: StageResult, live: LiveSend | undefined): Promise<string> {
    const { spool, metrics, health, trace } = this.options;
    const account = route.account.name;
    const envelope = { from: decision.envelopeFrom, to: transaction.rcptTo, size: staged.size, dsn: upstreamDsn(transaction.dsn, transaction.rcptTo), content: transaction.content };
    const started = performance.now();
    const open = () => spool.openStaged(staged);
    const receipt = await (live ? live.finish(open) : route.upstream.send(envelope, open)).catch((error: unknown) => {
      this.traceFailedAttempt(staged.id, account, transaction.rcptTo, error, started);
      throw error;
    });
    metrics.messagesRelayed.inc({ account });
    health.relayed(account);
    const durationMs = Math.round(performance.now() - started);
    const at = new Date().toISOString();
    trace.record(traced);
    trace.record({ at, event: 'attempt', id: staged.id, account, result: 'delivered', reply: receipt.response, recipients: recipientReplies(receipt), durationMs });
    trace.record({ at, event: 'final', id: staged.id, account, status: 'delivered' });
    log.info(
      {
        size: staged.size,
        from: decision.envelopeFrom,
        originalFrom: decision.originalFrom,
        fromRewritten: decision.fromRewritten,
        recipients: receipt.accepted.length,
        rejectedRecipients: receipt.rejected.length ? receipt.rejected : undefined,
        upstream: receipt.response,
        durationMs,
      },
      'message relayed',
    );
    return `Ok: relayed as ${staged.id}`;
  }

  /** Direct mode: the upstream's answer to a send that did not go through, in the provider's own words. */
  private traceFailedAttempt(id: string, account: string, to: string[], error: unknown, started: number): void {
    const failure = asSmtpError(error);
    const reply = (failure.cause as { response?: string } | undefined)?.response?.split(/\r?\n/)[0] ?? `${failure.reply.code} ${failure.message}`;
    const result = failure.holdsAccount ? 'held' : failure.isTemporary ? 'deferred' : 'failed';
    this.options.trace.record({ at: new Date().toISOString(), event: 'attempt', id, account, result, reply, recipients: to.map((address) => ({ address, reply })), durationMs: Math.round(performance.now() - started) });
  }

  private fail(log: Logger, account: string, error: unknown, size: number): SmtpError {
    const smtpError = asSmtpError(error);
    this.options.metrics.messagesFailed.inc({ account, reason: smtpError.reason });
    this.options.health.failed(account, smtpError.reason, `${smtpError.reply.code} ${smtpError.message}`, smtpError.hint);
    const cause = smtpError.cause as { message?: string; response?: string } | undefined;
    log[smtpError.isTemporary || DEVICE_INPUT_REASONS.has(smtpError.reason) ? 'warn' : 'error'](
      { size, reason: smtpError.reason, reply: `${smtpError.reply.code} ${smtpError.message}`, cause: cause?.message, hint: smtpError.hint, upstream: cause?.response },
      'message not accepted',
    );
    return smtpError;
  }
}

interface StageResult {
  log: Logger;
  route: Route;
  transaction: Transaction;
  staged: StagedMessage;
  decision: SenderDecision;
  traced: ReceivedEvent;
}
