import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { FAILURE_REASONS } from '../reply.js';

export const METRIC_PREFIX = 'smtp_relay_';

export const TOKEN_REFRESH_RESULTS = ['success', 'reauth_required', 'error'] as const;
export const DELIVERY_RESULTS = ['delivered', 'deferred', 'failed'] as const;
export const QUEUE_STATES = ['queued', 'deferred', 'active', 'failed'] as const;

/** What the queue gauges read when scraped (the spool and delivery agent fill it in). */
export interface QueueProbe {
  accounts(): Promise<Record<string, { queued: number; deferred: number; active: number; failed: number; held: boolean; oldestReceivedAt?: string }>>;
  spoolBytes(): number;
}
export type TokenRefreshResult = (typeof TOKEN_REFRESH_RESULTS)[number];

/**
 * Every metric the relay exposes, on a registry of its own so that several relays can live in
 * one process (tests) without sharing series. Labels are account names from the config and fixed
 * reason words, never addresses or user input.
 */
export function createMetrics(accountNames: string[]) {
  const registry = new Registry();
  const probes: { queue?: QueueProbe } = {};
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  // Gauges named like counters, which `promtool check metrics` flags; the same values stand
  // without the suffix (nodejs_active_handles, nodejs_active_requests, nodejs_active_resources).
  for (const kind of ['handles', 'requests', 'resources']) registry.removeSingleMetric(`${METRIC_PREFIX}nodejs_active_${kind}_total`);
  const p = METRIC_PREFIX;
  const metrics = {
    registry,
    connections: new Counter({ name: `${p}smtp_connections_total`, help: 'Device connections accepted', registers: [registry] }),
    workerRestarts: new Counter({ name: `${p}worker_restarts_total`, help: 'SMTP worker processes that died and were replaced (smtp.workers above 1)', registers: [registry] }),
    activeConnections: new Gauge({ name: `${p}smtp_active_connections`, help: 'Device connections open now', registers: [registry] }),
    clusterUp: new Gauge({
      name: `${p}cluster_up`,
      help: '1 while the shared cluster store (Redis/Valkey) is reachable, or no cluster is configured; 0 while this replica works on local limits',
      registers: [registry],
    }),
    clusterTokenShares: new Counter({
      name: `${p}cluster_token_shares_total`,
      help: 'Access tokens this replica took from the cluster instead of asking the token endpoint',
      labelNames: ['account'],
      registers: [registry],
    }),
    clusterUntrusted: new Counter({
      name: `${p}cluster_untrusted_total`,
      help: 'Cluster entries, announcements, shared tokens and peer requests that no replica signed (or replays), ignored; by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    authFailures: new Counter({ name: `${p}smtp_auth_failures_total`, help: 'Failed device AUTH attempts', registers: [registry] }),
    authLockouts: new Counter({
      name: `${p}smtp_auth_lockouts_total`,
      help: 'Lockouts after repeated failed AUTH, by scope (ip: a client address, user: a user name)',
      labelNames: ['scope'],
      registers: [registry],
    }),
    messagesReceived: new Counter({ name: `${p}messages_received_total`, help: 'Messages whose DATA a device completed', labelNames: ['account'], registers: [registry] }),
    messagesRelayed: new Counter({ name: `${p}messages_relayed_total`, help: 'Messages the upstream accepted', labelNames: ['account'], registers: [registry] }),
    messagesFailed: new Counter({
      name: `${p}messages_failed_total`,
      help: 'Messages not relayed, by reason (the device was told 4xx or 5xx)',
      labelNames: ['account', 'reason'],
      registers: [registry],
    }),
    messageSize: new Histogram({
      name: `${p}message_size_bytes`,
      help: 'Size of received messages',
      labelNames: ['account'],
      buckets: [10e3, 100e3, 1e6, 5e6, 10e6, 25e6, 50e6],
      registers: [registry],
    }),
    upstreamSendDuration: new Histogram({
      name: `${p}upstream_send_duration_seconds`,
      help: 'Time from handing a message to the upstream to its final reply',
      labelNames: ['account', 'transport'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    tokenRefreshes: new Counter({ name: `${p}token_refreshes_total`, help: 'Access token requests, by result', labelNames: ['account', 'result'], registers: [registry] }),
    credentialExpiry: new Gauge({
      name: `${p}credential_expiry_timestamp_seconds`,
      help: 'When an account credential stops working (Unix time): certificate, client_secret (credentialExpiresAt), refresh_token (Google apps in Testing)',
      labelNames: ['account', 'credential'],
      registers: [registry],
    }),
    tokenExpiry: new Gauge({ name: `${p}token_expiry_timestamp_seconds`, help: 'When the current access token expires (Unix time)', labelNames: ['account'], registers: [registry] }),
    tokenLastRefresh: new Gauge({
      name: `${p}token_last_success_timestamp_seconds`,
      help: 'When a token was last obtained successfully (Unix time); alert when this grows old',
      labelNames: ['account'],
      registers: [registry],
    }),
    accountReady: new Gauge({ name: `${p}account_ready`, help: '1 when the account can send, 0 when it needs attention', labelNames: ['account'], registers: [registry] }),
    accountHeld: new Gauge({ name: `${p}account_held`, help: '1 while the account waits to be signed in again (its queue is held)', labelNames: ['account'], registers: [registry] }),
    deliveryAttempts: new Counter({ name: `${p}delivery_attempts_total`, help: 'Upstream delivery attempts from the queue, by result', labelNames: ['account', 'result'], registers: [registry] }),
    tlsHandshakes: new Counter({
      name: `${p}tls_handshakes_total`,
      help: 'TLS handshakes with devices, by listener (starttls, smtps), protocol version and result (ok, or why it failed)',
      labelNames: ['listener', 'version', 'result'],
      registers: [registry],
    }),
    reportsSuppressed: new Counter({
      name: `${p}failure_reports_suppressed_total`,
      help: 'Failure reports not sent because a device passed bounces.maxPerHour',
      registers: [registry],
    }),
    deferrals: new Counter({ name: `${p}deferrals_total`, help: 'Deliveries put off for a later retry, by reason', labelNames: ['account', 'reason'], registers: [registry] }),
    queueMessages: new Gauge({
      name: `${p}queue_messages`,
      help: 'Messages in the spool by state: queued (due), deferred (waiting to retry), active (being sent), failed (kept after a permanent failure)',
      labelNames: ['account', 'state'],
      registers: [registry],
      async collect() {
        const accounts = (await probes.queue?.accounts()) ?? {};
        for (const [account, state] of Object.entries(accounts)) {
          for (const name of QUEUE_STATES) this.set({ account, state: name }, state[name]);
        }
      },
    }),
    queueOldestAge: new Gauge({
      name: `${p}queue_oldest_message_age_seconds`,
      help: 'Age of the oldest message waiting in the spool (0 when empty)',
      labelNames: ['account'],
      registers: [registry],
      async collect() {
        const accounts = (await probes.queue?.accounts()) ?? {};
        for (const [account, state] of Object.entries(accounts)) {
          this.set({ account }, state.oldestReceivedAt ? (Date.now() - Date.parse(state.oldestReceivedAt)) / 1000 : 0);
        }
      },
    }),
    spoolBytes: new Gauge({
      name: `${p}spool_bytes`,
      help: 'Bytes of messages waiting in the spool',
      registers: [registry],
      collect() {
        this.set(probes.queue?.spoolBytes() ?? 0);
      },
    }),
    spoolLimitBytes: new Gauge({ name: `${p}spool_limit_bytes`, help: 'The spool size limit (queue.maxSize): new mail is refused with 452 beyond it', registers: [registry] }),
    notifications: new Counter({ name: `${p}notifications_total`, help: 'Notifications (notify:) by channel and result: sent, failed, suppressed by the rate limit', labelNames: ['channel', 'result'], registers: [registry] }),
    traceDropped: new Counter({ name: `${p}trace_events_dropped_total`, help: 'Delivery-log events that could not be written (the mail itself is unaffected)', registers: [registry] }),
    /** Lets the spool side plug in what the queue gauges read, without metrics depending on it. */
    setQueueProbe(probe: QueueProbe) {
      probes.queue = probe;
    },
  };
  for (const scope of ['ip', 'user']) metrics.authLockouts.inc({ scope }, 0);
  for (const account of accountNames) {
    metrics.messagesReceived.inc({ account }, 0);
    metrics.messagesRelayed.inc({ account }, 0);
    for (const reason of FAILURE_REASONS) metrics.messagesFailed.inc({ account, reason }, 0);
    for (const result of TOKEN_REFRESH_RESULTS) metrics.tokenRefreshes.inc({ account, result }, 0);
    for (const result of DELIVERY_RESULTS) metrics.deliveryAttempts.inc({ account, result }, 0);
    metrics.accountHeld.set({ account }, 0);
  }
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;
