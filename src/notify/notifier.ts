import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ClusterState } from '../cluster-state/index.js';
import { findProblems, type Problem, type RelaySnapshot } from './problems.js';

export type NotificationStatus = 'firing' | 'resolved' | 'event';

export interface Notification extends Problem {
  status: NotificationStatus;
  relay: string;
  at: string;
  /** One line for chat: what happened, on which relay. */
  text: string;
}

/** Where notifications go: a webhook, an e-mail. */
export interface Channel {
  readonly name: string;
  send(notification: Notification): Promise<void>;
}

export interface NotifierOptions {
  snapshot: () => RelaySnapshot;
  channels: Channel[];
  cluster: ClusterState;
  relay: string;
  minIntervalMs: number;
  maxPerHour: number;
  checkIntervalMs: number;
  logger: Logger;
  metrics: Metrics;
}

const HOUR_MS = 3_600_000;

/**
 * Tells admins without Prometheus what the alert rules would: a problem when it starts and when it
 * ends, and events (a message failed for good) as they happen. Deduplicated (the same key at most
 * once per minInterval, once per cluster) and rate-limited (maxPerHour; what is held back is
 * counted and said in the next one).
 */
export class Notifier {
  private readonly active = new Map<string, Problem>();
  private readonly lastSent = new Map<string, number>();
  private readonly sentTimes: number[] = [];
  private suppressed = 0;
  private timer?: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(private readonly options: NotifierOptions) {
    this.log = options.logger.child({ component: 'notify' });
  }

  start(): void {
    const tick = () => {
      this.check().catch((error: Error) => this.log.warn({ err: error.message }, 'cannot check for problems'));
      this.timer = setTimeout(tick, this.options.checkIntervalMs).unref();
    };
    this.timer = setTimeout(tick, Math.min(this.options.checkIntervalMs, 5000)).unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** Compares the problems now with those already told: new ones fire, gone ones resolve. */
  async check(): Promise<void> {
    const now = findProblems(this.options.snapshot());
    const keys = new Set(now.map((problem) => problem.key));
    for (const problem of now) {
      if (this.active.has(problem.key)) continue;
      this.active.set(problem.key, problem);
      await this.notify(problem, 'firing');
    }
    for (const [key, problem] of this.active) {
      if (keys.has(key)) continue;
      this.active.delete(key);
      await this.notify(problem, 'resolved');
    }
  }

  /** A one-off event (a message failed for good): told at most once per key and minInterval. */
  event(problem: Problem): void {
    void this.notify(problem, 'event');
  }

  private async notify(problem: Problem, status: NotificationStatus): Promise<void> {
    const { minIntervalMs, maxPerHour, cluster, metrics } = this.options;
    const now = Date.now();
    const dedupe = `${status === 'resolved' ? 'resolved' : 'told'}:${problem.key}`;
    if (now - (this.lastSent.get(dedupe) ?? -Infinity) < minIntervalMs || !(await cluster.claimOnce(`notify:${dedupe}`, minIntervalMs))) {
      if (status === 'event') this.suppressed++; // the first one was told; this one is counted in the next
      return;
    }
    this.lastSent.set(dedupe, now);
    while (this.sentTimes.length && this.sentTimes[0] <= now - HOUR_MS) this.sentTimes.shift();
    if (this.sentTimes.length >= maxPerHour) {
      this.suppressed++;
      metrics.notifications.inc({ channel: 'all', result: 'suppressed' });
      return;
    }
    this.sentTimes.push(now);
    const held = this.suppressed ? ` (${this.suppressed} more notification(s) were held back by notify.minInterval / notify.maxPerHour; see the console)` : '';
    this.suppressed = 0;
    const label = status === 'resolved' ? 'RESOLVED' : status === 'event' ? 'EVENT' : problem.severity.toUpperCase();
    const notification: Notification = { ...problem, details: `${problem.details}${held}`, status, relay: this.options.relay, at: new Date(now).toISOString(), text: `[smtp-oauth-relay ${this.options.relay}] ${label}: ${problem.title}. ${problem.details}${held}` };
    await Promise.all(
      this.options.channels.map((channel) =>
        channel.send(notification).then(
          () => metrics.notifications.inc({ channel: channel.name, result: 'sent' }),
          (error: Error) => {
            metrics.notifications.inc({ channel: channel.name, result: 'failed' });
            this.log.warn({ channel: channel.name, key: problem.key, err: error.message }, 'notification not sent');
          },
        ),
      ),
    );
    this.log.info({ key: problem.key, status }, 'notification sent');
  }
}
