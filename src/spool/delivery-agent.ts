import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { TokenManager } from '../oauth/index.js';
import { explainReply, parseReply, type Upstream } from '../upstream/index.js';
import { asSmtpError, type FailureReason } from '../reply.js';
import type { HealthBoard } from '../health.js';
import type { ResolvedAccount } from '../config/index.js';
import { MinHeap } from '../util/min-heap.js';
import { Pacer } from '../upstream/pacing.js';
import { newQueueRecord, pendingRecipients, type QueueRecord } from './record.js';
import { isExpired, nextDelayMs, type RetryPolicy } from './retry-policy.js';
import { buildDeliveryReport } from './dsn.js';
import { upstreamDsn, wantsNotice, type NoticeKind } from '../envelope.js';
import { readHeaderFields } from './header-block.js';
import { plainTextMessage } from '../util/rfc5322.js';
import type { Spool } from './spool.js';
import type { AttemptResult, FinalStatus, TraceSink } from '../trace/index.js';
import { recipientReplies } from '../upstream/index.js';

export interface BounceSettings {
  postmaster?: string;
  notifySender: boolean;
  /** Failure reports per device user per hour; past it, reports are suppressed (the message stays in failed/). */
  maxPerHour: number;
  /** How long a message waits before a sender that asked (NOTIFY=DELAY) is told it is delayed. */
  delayWarningMs: number;
}

export interface DeliveryAgentOptions {
  spool: Spool;
  accounts: Map<string, { account: ResolvedAccount; upstream: Upstream; tokens: TokenManager }>;
  retry: RetryPolicy;
  bounces: BounceSettings;
  /**
   * Whether a report about a message from this device user may go to this address: only where the
   * device may send itself (its recipient policy), so a report cannot carry mail past the policy.
   */
  mayNotify: (username: string | undefined, address: string) => boolean;
  /** How long failed messages are kept before they are pruned. */
  failedRetentionMs: number;
  hostname: string;
  /** While an account is held (its sign-in is needed), how often to see whether it came back. */
  heldRecheckMs: number;
  metrics: Metrics;
  health: HealthBoard;
  logger: Logger;
  /** The delivery log. */
  trace: TraceSink;
  /** Told when an account's queue becomes held here (a cluster holds it on every replica). */
  onHeld?: (account: string, reason: FailureReason, reply: string, hint?: string) => void;
}

export interface AccountQueueState {
  queued: number;
  deferred: number;
  active: number;
  held: boolean;
  /** Why it is held, when it is. */
  heldFor?: FailureReason;
  oldestReceivedAt?: string;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** One delivery report to queue: about which recipients, to whom, and why. */
interface ReportPlan {
  id: string;
  to: string;
  action: 'failed' | 'delayed';
  entries: { address: string; reply: string }[];
  reason: string;
  willRetryUntil?: Date;
}
/** After a failed write of a delivery result, the message is settled again at most this much later. */
const RESETTLE_MS = 30_000;
const HOUR_MS = 3_600_000;
/** The failed message's fields a report quotes; the rest of a device's header stays out. */
const REPORT_FIELDS = new Set(['from', 'to', 'cc', 'subject', 'date', 'message-id']);

class AccountQueue {
  /** Every waiting message (due or not), by id, in arrival order. */
  readonly waiting = new Map<string, QueueRecord>();
  /** The waiting messages that are due, in the order they became due (a retried one at the back). */
  readonly due = new Map<string, QueueRecord>();
  /** When the others come due (entries of messages since sent, deleted or rescheduled are skipped). */
  private readonly later = new MinHeap<{ at: number; id: string }>();
  readonly inFlight = new Map<string, QueueRecord>();
  /** Why the account's queue waits (a sign-in, a fix at the provider, a quota), if it does. */
  held?: FailureReason;
  /** How many times the queue came back from being held: an attempt that began before the last return is stale. */
  resumes = 0;
  timer?: NodeJS.Timeout;
  readonly pacer: Pacer;

  constructor(
    readonly account: ResolvedAccount,
    readonly upstream: Upstream,
    readonly tokens: TokenManager,
  ) {
    this.pacer = new Pacer(account.limits);
  }

  /** A message waits (again) until its nextAttemptAt: due now, or scheduled. */
  wait(record: QueueRecord, now = Date.now()): void {
    this.waiting.set(record.id, record);
    const at = Date.parse(record.nextAttemptAt);
    if (at <= now) this.due.set(record.id, record);
    else {
      this.due.delete(record.id);
      this.later.push({ at, id: record.id });
    }
  }

  /** No longer waiting: sent, deleted. */
  stopWaiting(id: string): void {
    this.waiting.delete(id);
    this.due.delete(id);
  }

  /** Moves what has come due into `due`; returns when the next one does (Infinity: none). */
  promote(now: number): number {
    for (let next = this.later.peek(); next && next.at <= now; next = this.later.peek()) {
      this.later.pop();
      const record = this.waiting.get(next.id);
      if (record && Date.parse(record.nextAttemptAt) === next.at) this.due.set(record.id, record);
    }
    return this.later.peek()?.at ?? Infinity;
  }
}

/**
 * Delivers the spool: per account, as many messages at once as the upstream allows, no faster
 * than the account's pace, retrying temporary failures with backoff until the maximum age, and
 * reporting permanent failures. Every state change is written to the spool before it counts.
 */
export class DeliveryAgent {
  private readonly queues = new Map<string, AccountQueue>();
  private readonly running = new Set<Promise<void>>();
  private stopping = false;
  private pruneTimer?: NodeJS.Timeout;
  private readonly reportTimes = new Map<string, number[]>();
  private readonly log: Logger;

  constructor(private readonly options: DeliveryAgentOptions) {
    this.log = options.logger.child({ component: 'delivery' });
    for (const [name, entry] of options.accounts) this.queues.set(name, new AccountQueue(entry.account, entry.upstream, entry.tokens));
  }

  /**
   * Takes over what the spool recovered: failures cut short by a crash are finished first (their
   * reports are already queued or not, never twice), then delivery resumes.
   */
  async start(recovered: QueueRecord[]): Promise<void> {
    const oldestFirst = [...recovered].sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
    for (const record of oldestFirst) {
      if (record.failedAt) await this.finishFailure(record).catch((error: Error) => this.log.error({ id: record.id, err: error.message }, 'cannot finish a failure after restart; it stays queued'));
      else this.track(record);
    }
    for (const name of this.queues.keys()) this.pump(name);
    if (recovered.length) this.log.info({ messages: recovered.length }, 'spool recovered; resuming delivery');
    this.prune();
  }

  /** Deletes failed messages past the retention now and every hour. */
  private prune(): void {
    const { spool, failedRetentionMs } = this.options;
    spool.pruneFailed(failedRetentionMs).then(
      (count) => count && this.log.info({ messages: count, retentionDays: failedRetentionMs / 86_400_000 }, 'failed messages past their retention deleted'),
      (error: Error) => this.log.warn({ err: error.message }, 'cannot prune the failed area'),
    );
    this.pruneTimer = setTimeout(() => this.prune(), HOUR_MS);
    this.pruneTimer.unref();
  }

  /** Report settings from a reloaded config. */
  setBounces(bounces: BounceSettings): void {
    this.options.bounces = bounces;
  }

  /**
   * `queue retry`: waiting messages (one, or all) are due now. Only the schedule in memory changes,
   * like `postqueue -f`: no record is written, so none can be written back stale.
   */
  retryNow(id?: string): number {
    let count = 0;
    const now = new Date().toISOString();
    for (const queue of this.queues.values()) {
      for (const record of queue.waiting.values()) {
        if (id !== undefined && record.id !== id) continue;
        record.nextAttemptAt = now;
        queue.wait(record);
        count++;
      }
      this.pump(queue.account.name);
    }
    return count;
  }

  /** `queue delete`: a waiting or failed message goes; one being delivered right now cannot. */
  async delete(id: string): Promise<'deleted' | 'in_flight' | 'not_found'> {
    const { spool } = this.options;
    let record: QueueRecord | undefined;
    for (const queue of this.queues.values()) {
      if (queue.inFlight.has(id)) return 'in_flight';
      record ??= queue.waiting.get(id);
      queue.stopWaiting(id);
    }
    record ??= (await spool.read(id)) ?? (await spool.read(id, 'failed'));
    if (!(await spool.deleteMessage(id))) return 'not_found';
    if (record) this.traceFinal(record, 'deleted');
    return 'deleted';
  }

  /** Every waiting message of an account is due now (the console's Retry all). */
  retryAccount(accountName: string): number {
    const queue = this.queues.get(accountName);
    if (!queue) return 0;
    const now = new Date().toISOString();
    for (const record of queue.waiting.values()) {
      record.nextAttemptAt = now;
      queue.wait(record);
    }
    const count = queue.waiting.size;
    if (queue.held) this.recheckHeld(accountName);
    else this.pump(accountName);
    return count;
  }

  /** The messages waiting or being delivered, per account (the console's Queue page). */
  pending(): { record: QueueRecord; inFlight: boolean; held: boolean }[] {
    return [...this.queues.values()].flatMap((queue) => [
      ...[...queue.inFlight.values()].map((record) => ({ record, inFlight: true, held: false })),
      ...[...queue.waiting.values()].map((record) => ({ record, inFlight: false, held: queue.held !== undefined })),
    ]);
  }

  /**
   * A notification e-mail (notify.email) to one address, queued like a delivery report through an
   * account that can send now (else the first): its own failure is never reported again.
   */
  async queueNotice(to: string, subject: string, text: string): Promise<void> {
    const queues = [...this.queues.values()];
    const queue = queues.find((candidate) => !candidate.held && candidate.tokens.status().state === 'ready') ?? queues[0];
    if (!queue) return;
    const { mailbox, name } = queue.account;
    const content = plainTextMessage({ from: mailbox, to, subject, lines: text.split('\n'), autoSubmitted: true });
    const record = newQueueRecord({ id: this.options.spool.newId(), account: name, envelope: { from: mailbox, to: [to] }, size: content.length, isReport: true });
    await this.options.spool.enqueue(record, content);
    this.options.trace.record({ at: new Date().toISOString(), event: 'received', id: record.id, account: name, mode: 'queue', size: content.length, sentAs: mailbox, to: [to], subject, about: 'notification' });
    this.add(record);
  }

  private traceFinal(record: QueueRecord, status: FinalStatus): void {
    this.options.trace.record({ at: new Date().toISOString(), event: 'final', id: record.id, account: record.account, status, relayWrote: record.isReport || undefined });
  }

  /** Whether a message is waiting or being delivered here. */
  knows(id: string): boolean {
    for (const queue of this.queues.values()) if (queue.waiting.has(id) || queue.inFlight.has(id)) return true;
    return false;
  }

  /** A newly committed message. */
  add(record: QueueRecord): void {
    this.track(record);
    this.pump(record.account);
  }

  /**
   * Another replica had to hold this account (its sign-in died, say): hold it here too, with the
   * same problem, and check it on the usual schedule (a sign-in anywhere resumes it at once).
   */
  holdFromElsewhere(accountName: string, reason: FailureReason, reply: string, hint?: string): void {
    const queue = this.queues.get(accountName);
    if (!queue || queue.held || this.stopping) return;
    this.options.health.failed(accountName, reason, reply, hint);
    this.setHeld(queue, reason);
    this.pump(accountName);
  }

  /** The account may be back (e.g. it was just signed in): check a held queue now. */
  recheckHeld(accountName: string): void {
    const queue = this.queues.get(accountName);
    if (queue?.held && !this.stopping) {
      clearTimeout(queue.timer);
      this.checkHeld(queue);
    }
  }

  /** Stops starting deliveries and waits up to timeoutMs for those in flight. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.pruneTimer);
    for (const queue of this.queues.values()) clearTimeout(queue.timer);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([Promise.allSettled([...this.running]), timeout]);
    clearTimeout(timer);
  }

  state(account: string): AccountQueueState {
    const queue = this.queues.get(account);
    if (!queue) return { queued: 0, deferred: 0, active: 0, held: false };
    const now = Date.now();
    let queued = 0;
    let oldest: string | undefined;
    for (const record of [...queue.waiting.values(), ...queue.inFlight.values()]) {
      if (!oldest || record.receivedAt < oldest) oldest = record.receivedAt;
      if (queue.waiting.has(record.id) && Date.parse(record.nextAttemptAt) <= now) queued++;
    }
    return { queued, deferred: queue.waiting.size - queued, active: queue.inFlight.size, held: queue.held !== undefined, heldFor: queue.held, oldestReceivedAt: oldest };
  }

  private track(record: QueueRecord): void {
    const queue = this.queues.get(record.account);
    if (!queue) {
      this.log.error({ id: record.id, account: record.account }, 'queued message for an account no longer configured; left in the spool');
      return;
    }
    if (!queue.inFlight.has(record.id)) queue.wait(record);
  }

  private pump(accountName: string): void {
    const queue = this.queues.get(accountName);
    if (!queue || this.stopping) return;
    clearTimeout(queue.timer);
    queue.timer = undefined;
    if (queue.held) {
      this.wake(queue, Date.now() + this.holdMs(queue.held), () => this.checkHeld(queue));
      return;
    }
    const now = Date.now();
    // The due ones in the order they came due, stopping at the first free-slot or pace limit; the
    // rest wait in a schedule: a pump costs what it starts, not the length of the backlog.
    let wakeAt = queue.promote(now);
    for (const record of queue.due.values()) {
      if (queue.inFlight.size >= queue.account.upstream.maxConnections) break;
      const recipients = pendingRecipients(record).length;
      const transactions = Math.max(1, Math.ceil(recipients / (queue.account.upstream.maxRecipientsPerMessage ?? Infinity)));
      const wait = queue.pacer.waitMs(recipients, now, transactions);
      if (wait > 0) {
        wakeAt = Math.min(wakeAt, now + wait);
        break;
      }
      queue.pacer.record(recipients, now, transactions);
      queue.stopWaiting(record.id);
      queue.inFlight.set(record.id, record);
      const delivery = this.deliver(queue, record).finally(() => {
        this.running.delete(delivery);
        queue.inFlight.delete(record.id);
        this.pump(accountName);
      });
      this.running.add(delivery);
    }
    if (wakeAt < Infinity) this.wake(queue, wakeAt, () => this.pump(accountName));
  }

  private wake(queue: AccountQueue, at: number, action: () => void): void {
    queue.timer = setTimeout(action, Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())));
    queue.timer.unref();
  }

  /**
   * How long a held queue waits before it is tried again: a missing sign-in is checked with the
   * token service every heldRecheckMs; a fix at the provider is tried then too, by sending; a used-up
   * quota waits the longest retry delay.
   */
  private holdMs(reason: FailureReason): number {
    return reason === 'quota_exhausted' ? this.options.retry.maxDelayMs : this.options.heldRecheckMs;
  }

  private checkHeld(queue: AccountQueue): void {
    const resume = (why: string) => {
      this.log.info({ account: queue.account.name, was: queue.held }, why);
      queue.resumes++;
      this.setHeld(queue, undefined);
      this.pump(queue.account.name);
    };
    if (queue.held !== 'needs_reauth') return resume('trying the held account again');
    queue.tokens.getToken().then(
      () => resume('account is signed in again; resuming delivery'),
      () => this.pump(queue.account.name),
    );
  }

  private setHeld(queue: AccountQueue, reason: FailureReason | undefined): void {
    queue.held = reason;
    this.options.metrics.accountHeld.set({ account: queue.account.name }, reason ? 1 : 0);
  }

  private async deliver(queue: AccountQueue, record: QueueRecord): Promise<void> {
    const log = this.log.child({ id: record.id, account: record.account });
    // Nothing left to send after a result that could not be saved: only the settling is repeated.
    if (pendingRecipients(record).length > 0) await this.attempt(queue, record, log);
    await this.settle(queue, record).catch((error: Error) => {
      const delayMs = Math.min(RESETTLE_MS, this.options.retry.initialDelayMs);
      log.error({ err: error.message, retryInSeconds: delayMs / 1000 }, 'cannot write the delivery result to the spool; the message stays scheduled');
      record.nextAttemptAt = new Date(Date.now() + delayMs).toISOString();
      queue.wait(record);
    });
  }

  /** One upstream attempt for the recipients still pending; the outcome goes into the record. */
  private async attempt(queue: AccountQueue, record: QueueRecord, log: Logger): Promise<void> {
    const { metrics, health, spool } = this.options;
    const account = record.account;
    const to = pendingRecipients(record);
    record.attempts++;
    record.lastAttemptAt = new Date().toISOString();
    const started = performance.now();
    const resumesBefore = queue.resumes;
    const traceAttempt = (result: AttemptResult, reply: string, recipients: { address: string; reply: string }[]) =>
      this.options.trace.record({ at: new Date().toISOString(), event: 'attempt', id: record.id, account, result, reply, recipients, durationMs: Math.round(performance.now() - started) });
    try {
      const receipt = await queue.upstream.send({ from: record.envelope.from, to, size: record.size, dsn: upstreamDsn(record.dsn, to), content: record.content }, () => spool.openMessage(record));
      record.delivered.push(...receipt.accepted);
      record.lastReply = receipt.response;
      for (const refusal of receipt.rejected) {
        const code = parseReply(refusal.response)?.code ?? 550;
        if (code >= 500) record.failedRecipients.push({ address: refusal.address, reply: refusal.response });
        else record.lastReply = refusal.response;
      }
      metrics.deliveryAttempts.inc({ account, result: 'delivered' });
      health.relayed(account);
      traceAttempt('delivered', receipt.response, recipientReplies(receipt));
      log.info({ recipients: receipt.accepted.length, attempts: record.attempts, upstream: receipt.response, durationMs: Math.round(performance.now() - started) }, 'message delivered');
    } catch (error) {
      const failure = asSmtpError(error);
      const cause = failure.cause as { message?: string; hint?: string; response?: string } | undefined;
      // The upstream's own words when it answered; the relay's reading of the problem otherwise.
      record.lastReply = cause?.response?.split(/\r?\n/)[0] ?? `${failure.reply.code} ${failure.message}`;
      // The account came back (a sign-in, a fix at the provider) while this attempt failed with what
      // it had before: the message is tried again, and the account is not held (nor announced held,
      // nor shown failing) for it.
      const stale = failure.holdsAccount && queue.resumes !== resumesBefore;
      if (!stale) health.failed(account, failure.reason, record.lastReply, failure.hint);
      const reply = record.lastReply;
      traceAttempt(failure.holdsAccount && !stale ? 'held' : failure.isTemporary ? 'deferred' : 'failed', reply, to.map((address) => ({ address, reply })));
      if (failure.holdsAccount) {
        record.attempts--; // waiting for a human (or a quota) is not the message's failure
        metrics.deferrals.inc({ account, reason: failure.reason });
        if (stale) return log.info({ reason: failure.reason }, 'the account came back while this attempt failed; trying the message again');
        if (!queue.held) {
          log.warn({ reason: failure.reason, reply: record.lastReply, hint: failure.hint }, 'holding the account queue until it can send again');
          this.options.onHeld?.(account, failure.reason, record.lastReply, failure.hint);
        }
        this.setHeld(queue, failure.reason);
      } else if (failure.isTemporary) {
        metrics.deliveryAttempts.inc({ account, result: 'deferred' });
        metrics.deferrals.inc({ account, reason: failure.reason });
        log.warn({ reply: record.lastReply, attempts: record.attempts, cause: cause?.message, hint: failure.hint }, 'delivery deferred');
      } else {
        metrics.deliveryAttempts.inc({ account, result: 'failed' });
        log.error({ reply: record.lastReply, reason: failure.reason, hint: failure.hint }, 'delivery refused for good');
        for (const address of to) record.failedRecipients.push({ address, reply: record.lastReply });
      }
    }
  }

  /** Decides what comes next for a message after an attempt, and writes it down. */
  private async settle(queue: AccountQueue, record: QueueRecord): Promise<void> {
    const { spool, retry, metrics } = this.options;
    const remaining = pendingRecipients(record);
    if (remaining.length === 0) {
      if (record.failedRecipients.length === 0) {
        await spool.remove(record);
        metrics.messagesRelayed.inc({ account: record.account });
        this.traceFinal(record, 'delivered');
        return;
      }
      // The provider's reason when the relay knows the reply (send_as_denied, external_recipient, ...).
      const known = explainReply(record.failedRecipients[0]?.reply);
      return this.fail(record, known?.action === 'permanent' ? known.reason : 'upstream_rejected', 'The upstream refused the message permanently.');
    }
    if (!queue.held && isExpired(retry, record.receivedAt)) {
      const days = Math.round(retry.maxAgeMs / 86_400_000);
      for (const address of remaining) record.failedRecipients.push({ address, reply: `${record.lastReply ?? ''} (gave up after ${days} days)`.trim() });
      return this.fail(record, 'expired', `The relay kept trying for ${days} days and gave up.`);
    }
    record.nextAttemptAt = new Date(queue.held ? Date.now() : Date.now() + nextDelayMs(retry, record.attempts)).toISOString();
    // The decision to send a delay report is saved with the record before the report is queued.
    const delayReport = this.delayReportDue(record, remaining);
    if (!(await spool.save(record))) return; // deleted meanwhile
    queue.wait(record);
    if (delayReport) await this.report(record, delayReport).catch((error: Error) => this.log.error({ id: record.id, err: error.message }, 'delay report LOST: it could not be queued'));
  }

  /**
   * A permanent failure, in steps that a crash can interrupt anywhere without losing the message
   * or reporting it twice: the decision (failedAt, and the report's id when one goes) is saved
   * first; then the report is queued unless it already is; then the message moves to failed/.
   */
  private async fail(record: QueueRecord, reason: FailureReason, explanation: string): Promise<void> {
    const { spool, metrics } = this.options;
    record.failedAt = new Date().toISOString();
    const failures = record.failedRecipients.map((failure) => failure.address);
    const { to, sender } = record.isReport || record.bounce ? { to: [] } : this.reportRecipients(record, failures, 'FAILURE');
    if (to.length > 0) record.report = { id: `${record.id}R`, to, explanation, sender };
    if (!(await spool.save(record))) return; // deleted meanwhile
    metrics.messagesFailed.inc({ account: record.account, reason });
    this.traceFinal(record, reason === 'expired' ? 'expired' : 'failed');
    this.log.error({ id: record.id, account: record.account, failed: record.failedRecipients, attempts: record.attempts }, 'message failed for good; kept in the failed area');
    await this.finishFailure(record);
  }

  private async finishFailure(record: QueueRecord): Promise<void> {
    const { spool } = this.options;
    for (const [index, to] of (record.report?.to ?? []).entries()) {
      await this.failureReport(record, `${record.report!.id}${index + 1}`, to).catch((error: Error) =>
        this.log.error({ id: record.id, to, err: error.message }, 'failure report LOST: it could not be queued; the failed message stays in the failed area'),
      );
    }
    await spool.moveToFailed(record);
  }

  /**
   * Who hears of a failure: the postmaster, and the original sender only where the device may send
   * itself; never a null sender; at most `maxPerHour` reports per device.
   */
  private reportRecipients(record: QueueRecord, about: string[], kind: NoticeKind): { to: string[]; sender?: string } {
    const { bounces, mayNotify } = this.options;
    const senderAsked = about.some((address) => wantsNotice(record.dsn, address, kind));
    const sender = bounces.notifySender && senderAsked && record.originalFrom && mayNotify(record.user, record.originalFrom) ? record.originalFrom : undefined;
    // The postmaster hears of failures whatever the device asked; delays only reach who asked.
    const postmaster = kind === 'FAILURE' ? bounces.postmaster : undefined;
    const to = [...new Set([postmaster, sender].filter((address): address is string => !!address))];
    if (to.length === 0 || this.overReportRate(record.user ?? '')) return { to: [] };
    return { to, sender };
  }

  private overReportRate(user: string): boolean {
    const now = Date.now();
    const times = (this.reportTimes.get(user) ?? []).filter((at) => at > now - HOUR_MS);
    const over = times.length >= this.options.bounces.maxPerHour;
    if (!over) times.push(now);
    this.reportTimes.set(user, times);
    if (over) {
      this.options.metrics.reportsSuppressed.inc();
      this.log.warn({ user, maxPerHour: this.options.bounces.maxPerHour }, 'failure report suppressed: this device has had too many this hour');
    }
    return over;
  }

  /** The failure report decided in fail(), to one recipient: the sender's lists only what it asked about. */
  private failureReport(record: QueueRecord, id: string, to: string): Promise<void> {
    const { explanation, sender } = record.report!;
    const entries = record.failedRecipients.filter((failure) => to !== sender || wantsNotice(record.dsn, failure.address, 'FAILURE'));
    return this.report(record, { id, to, action: 'failed', entries, reason: explanation });
  }

  /**
   * NOTIFY=DELAY: once a message has waited `bounces.delayWarning`, the sender who asked hears that
   * it is still being retried, once per message (marked on the record, which the caller saves).
   */
  private delayReportDue(record: QueueRecord, pending: string[]): ReportPlan | undefined {
    const { retry, bounces } = this.options;
    const asked = pending.filter((address) => wantsNotice(record.dsn, address, 'DELAY'));
    if (record.delayReported || record.isReport || record.bounce || asked.length === 0) return undefined;
    if (Date.now() - Date.parse(record.receivedAt) < bounces.delayWarningMs) return undefined;
    record.delayReported = true;
    const { sender } = this.reportRecipients(record, asked, 'DELAY');
    if (!sender) return undefined;
    const entries = asked.map((address) => ({ address, reply: record.lastReply ?? '451 4.4.0 not delivered yet' }));
    const hours = Math.round(bounces.delayWarningMs / 3_600_000);
    return { id: `${record.id}D`, to: sender, action: 'delayed', entries, reason: `The relay has been trying for ${hours} hour(s) and keeps trying.`, willRetryUntil: new Date(Date.parse(record.receivedAt) + retry.maxAgeMs) };
  }

  /** Queues one delivery status notification (RFC 3464) to one recipient, unless it is queued already. */
  private async report(record: QueueRecord, report: ReportPlan): Promise<void> {
    const { spool, accounts } = this.options;
    const entry = accounts.get(record.account);
    if (!entry || report.entries.length === 0 || (await spool.has(report.id))) return;
    const { id, to } = report;
    const content = buildDeliveryReport({
      ...report,
      record,
      originalHeaders: await readHeaderFields(spool.openMessage(record), REPORT_FIELDS),
      reportingHost: this.options.hostname,
      from: entry.account.mailbox,
    });
    const queued = newQueueRecord({ id, account: record.account, envelope: { from: entry.account.mailbox, to: [to] }, size: content.length, isReport: true });
    await spool.enqueue(queued, content);
    const at = new Date().toISOString();
    this.options.trace.record({ at, event: 'report', id: record.id, account: record.account, reportId: id, to, kind: report.action });
    this.options.trace.record({ at, event: 'received', id, account: record.account, mode: 'queue', size: content.length, sentAs: entry.account.mailbox, to: [to], about: record.id });
    this.add(queued);
    this.log.info({ id, about: record.id, to, action: report.action }, 'delivery report queued');
  }
}
