import type { Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { ResolvedAccount } from './config/index.js';
import type { Transaction } from './listener/index.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics/metrics.js';
import { SenderRewriter, SizeGuard } from './rewrite/index.js';
import type { Spool } from './spool/index.js';
import type { Upstream } from './upstream/index.js';
import { SmtpError, defer, reject } from './reply.js';
import { formatByteSize } from './config/index.js';
import type { HealthBoard } from './health.js';

export interface Route {
  account: ResolvedAccount;
  upstream: Upstream;
}

export interface PipelineOptions {
  routes: Map<string, Route>;
  spool: Spool;
  metrics: Metrics;
  health: HealthBoard;
  logger: Logger;
  maxMessageSize: number;
  maxHeaderBytes: number;
}

/**
 * listener → rewrite → spool → upstream, for one message in direct mode: the message streams
 * through the size guard and sender rewrite into a spool file, goes to the upstream from there,
 * and the device is answered with the upstream's verdict.
 */
export class Pipeline {
  constructor(private readonly options: PipelineOptions) {}

  readonly handle = async (stream: Readable, transaction: Transaction): Promise<string> => {
    const { spool, metrics, routes } = this.options;
    const route = routes.get(transaction.user.account);
    if (!route) throw defer('internal', 'No account for this user', '4.3.5');
    const account = route.account.name;
    const id = spool.newId();
    const log = this.options.logger.child({ id, session: transaction.sessionId, clientIp: transaction.clientIp, user: transaction.user.username, account });

    const guard = new SizeGuard(this.options.maxMessageSize);
    const rewriter = new SenderRewriter(
      { mailbox: route.account.mailbox, sendAs: route.account.sendAs, envelopeFrom: transaction.mailFrom },
      this.options.maxHeaderBytes,
    );
    const started = performance.now();
    let staged;
    try {
      staged = await spool.stage(id, stream.pipe(guard).pipe(rewriter));
    } catch (error) {
      throw this.fail(log, account, error, guard.bytes);
    }
    metrics.messagesReceived.inc({ account });
    metrics.messageSize.observe({ account }, guard.bytes);
    if (guard.exceeded) {
      await spool.discard(staged);
      throw this.fail(log, account, reject('too_large', 552, '5.3.4', `Message exceeds the size limit of ${formatByteSize(this.options.maxMessageSize)}`), guard.bytes);
    }

    const { envelopeFrom, originalFrom, fromRewritten } = rewriter.decision;
    const envelope = { from: envelopeFrom, to: transaction.rcptTo, size: staged.size };
    const sendStarted = performance.now();
    try {
      const receipt = await route.upstream.send(envelope, () => spool.open(staged));
      metrics.upstreamSendDuration.observe({ account }, (performance.now() - sendStarted) / 1000);
      metrics.messagesRelayed.inc({ account });
      this.options.health.relayed(account);
      log.info(
        {
          size: guard.bytes,
          from: envelopeFrom,
          originalFrom,
          fromRewritten,
          recipients: receipt.accepted.length,
          rejectedRecipients: receipt.rejected.length ? receipt.rejected : undefined,
          upstream: receipt.response,
          durationMs: Math.round(performance.now() - started),
        },
        'message relayed',
      );
      return `Ok: relayed as ${id}`;
    } catch (error) {
      metrics.upstreamSendDuration.observe({ account }, (performance.now() - sendStarted) / 1000);
      throw this.fail(log, account, error, guard.bytes);
    } finally {
      await spool.discard(staged);
    }
  };

  private fail(log: Logger, account: string, error: unknown, size: number): SmtpError {
    const smtpError = error instanceof SmtpError ? error : defer('internal', 'Local error while receiving; try again later', '4.3.0', error);
    this.options.metrics.messagesFailed.inc({ account, reason: smtpError.reason });
    this.options.health.failed(account, smtpError.reason, `${smtpError.reply.code} ${smtpError.message}`);
    const cause = smtpError.cause as { message?: string; hint?: string; response?: string } | undefined;
    log[smtpError.isTemporary ? 'warn' : 'error'](
      { size, reason: smtpError.reason, reply: `${smtpError.reply.code} ${smtpError.message}`, cause: cause?.message, hint: cause?.hint, upstream: cause?.response },
      'message not relayed',
    );
    return smtpError;
  }
}
