import os from 'node:os';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { NetworkList, changedKeys, type LoadedConfig } from './config/index.js';
import { Listener, authGuardLimits } from './listener/index.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics, StatusServer, type ReadinessReport } from './metrics/index.js';
import { HandoffReceiver, handOffQueue } from './cluster/index.js';
import { clusterTrust, livePeerReplicas, startCluster, type ClusterState, type ReplicaInfo } from './cluster-state/index.js';
import { Activity, ClusterLog, FileTraceLog, NoTraceLog, type TraceEvent, type TraceLog, type TraceSink } from './trace/index.js';
import { EmailChannel, Notifier, WebhookChannel, type Channel, type RelaySnapshot } from './notify/index.js';
import { packageVersion } from './util/package-root.js';
import { TokenManager, TokenStore, credentialExpiries, expiryWarning } from './oauth/index.js';
import { Pipeline, pipelineSettings, type Route } from './pipeline.js';
import { DeliveryAgent, Spool, type BounceSettings, type QueueRecord } from './spool/index.js';
import { Upstream } from './upstream/index.js';
import { HealthBoard } from './health.js';
import { ControlServer, daemonCommands } from './control/index.js';
import { AdminPage, type ConsoleSources } from './web/index.js';
import { ExchangeMessageTrace } from './provider-trace/index.js';
import { ClusterQueue, type LocalQueue } from './cluster/index.js';
import type { Config, ResolvedAccount, UserConfig } from './config/index.js';
import { HostShare, WorkerPool, workerCount } from './workers/index.js';

export interface AppOptions {
  logger?: Logger;
  /** Refresh every account's token at start and then on the keep-alive timer (default true). */
  keepAlive?: boolean;
}

export interface RunningApp {
  smtpPort: number;
  /** The implicit-TLS listener's port, when smtp.tls.implicitPort is set. */
  smtpsPort?: number;
  httpPort: number;
  stop(): Promise<void>;
  /**
   * Applies what can change without a restart (SIGHUP) and returns the keys that need one. Throws,
   * applying nothing, when part of the new config cannot be read (a certificate).
   */
  reload(next: LoadedConfig): string[];
  readiness(): Promise<ReadinessReport>;
}

async function watchTokenStore(dir: string, changed: (account: string) => void): Promise<FSWatcher> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return watch(dir, (_event, name) => {
    if (name?.endsWith('.json') && !name.startsWith('.')) changed(name.slice(0, -'.json'.length));
  });
}

/** Failed messages a console view lists (newest first); `queue failed` lists them all. */
const FAILED_SHOWN = 200;

/** Queue ids (and report ids): what an action from a console may name. */
const SAFE_ID = /^[0-9A-Za-z]{8,64}$/;

/** How long a stopping relay lets device sessions in progress finish before it stops delivering. */
const SESSION_DRAIN_MS = 10_000;

/** How long a stopping replica spends handing its queue to its peers (within the pod's grace period). */
const HANDOFF_LIMIT_MS = 20_000;

/** A replica with less spool room than this is not ready: it could not take a typical scan. */
const READY_HEADROOM = 1024 ** 2;

/** Keys a SIGHUP applies; any other changed key is named as needing a restart. */
const LIVE_KEYS = [
  /^users$/,
  /^allowNetworks$/,
  /^unauthenticated(\.|$)/,
  /^log\.level$/,
  /^smtp\.tls\.(cert|key|legacyDevices)$/,
  /^smtp\.(requireTls|maxRecipients|maxConnectionsPerIp)$/,
  /^bounces\./,
  /^accounts\.[^.]+\.(clientId|clientSecret|refreshToken|tokenUrl|scopes)$/,
];

function bounceSettings({ bounces }: LoadedConfig['config']): BounceSettings {
  return { postmaster: bounces.postmaster, notifySender: bounces.notifySender, maxPerHour: bounces.maxPerHour, delayWarningMs: bounces.delayWarning * 1000 };
}

const DAY_MS = 86_400_000;
/** How far back the console's counts reach after a restart, at most (the log replayed at start). */
const ACTIVITY_REPLAY_MS = 7 * DAY_MS;

/**
 * The delivery log and the console's counts beside it: every event goes to both. The counts start
 * from the log's last days, so a restart does not blank the overview.
 */
async function startTrace({ config }: LoadedConfig, logger: Logger, metrics: ReturnType<typeof createMetrics>, onEvent: (event: TraceEvent) => void): Promise<{ traceLog: TraceLog; activity: Activity; trace: TraceSink }> {
  const activity = new Activity();
  const traceLog = config.trace.enabled ? new FileTraceLog(path.join(config.dataDir, 'trace'), { retentionMs: config.trace.retention * 1000, maxBytes: config.trace.maxSize }, logger, (events) => metrics.traceDropped.inc(events)) : new NoTraceLog();
  if (traceLog instanceof FileTraceLog) {
    await traceLog.start();
    // The counts need a day; a silent device is flagged against its expectEvery (up to a week).
    const longestExpected = Math.max(0, ...config.users.map((user) => (user.expectEvery ?? 0) * 1000));
    await traceLog.replay({ since: Date.now() - Math.min(ACTIVITY_REPLAY_MS, Math.max(DAY_MS, longestExpected)) }, (event) => activity.record(event));
  }
  const trace = {
    record(event: TraceEvent) {
      // Recorded on the mail's path (after a commit, before the 250): a fault here must never turn
      // into a reply to the device, which would then send the message again.
      try {
        traceLog.record(event);
        activity.record(event);
        onEvent(event);
      } catch (error) {
        logger.error({ id: event.id, err: (error as Error).message }, 'delivery log event not recorded');
        metrics.traceDropped.inc();
      }
    },
  };
  return { traceLog, activity, trace };
}

/** notify: a webhook and/or e-mail about the problems the alert rules watch (undefined without it). */
function startNotifier(parts: { traceLog: TraceLog; config: LoadedConfig['config']; routes: Map<string, Route & { tokens: TokenManager }>; agent: DeliveryAgent; spool: Spool; health: HealthBoard; listener: Listener; cluster: ClusterState; logger: Logger; metrics: ReturnType<typeof createMetrics> }): Notifier | undefined {
  const { traceLog, config, routes, agent, spool, health, listener, cluster, logger, metrics } = parts;
  const notify = config.notify;
  if (!notify) return undefined;
  const channels: Channel[] = [];
  if (notify.webhook) channels.push(new WebhookChannel(notify.webhook));
  const postmaster = config.bounces.postmaster;
  if (notify.email && postmaster) channels.push(new EmailChannel((subject, text) => agent.queueNotice(postmaster, subject, text)));
  const snapshot = (): RelaySnapshot => ({
    accounts: [...routes.values()].map(({ account, tokens }) => ({
      name: account.name,
      mailbox: account.mailbox,
      token: tokens.status(),
      delivery: health.get(account.name),
      queue: account.delivery === 'queue' ? agent.state(account.name) : undefined,
      credentials: credentialExpiries(account),
    })),
    spool: { bytes: spool.bytes, limit: config.queue.maxSize },
    clusterUp: config.cluster ? cluster.up : undefined,
    lockouts: listener.lockouts(),
    logDroppedAt: traceLog.lastDropAt,
  });
  const notifier = new Notifier({ snapshot, channels, cluster, relay: cluster.name, minIntervalMs: notify.minInterval * 1000, maxPerHour: notify.maxPerHour, checkIntervalMs: notify.checkInterval * 1000, logger, metrics });
  notifier.start();
  return notifier;
}

interface ConsoleParts {
  cluster: ClusterState;
  /** Lifts a lockout in every process of this host. */
  unlock: (scope: 'ip' | 'user', key: string) => boolean;
  routes: Map<string, Route & { tokens: TokenManager }>;
  agent: DeliveryAgent;
  spool: Spool;
  health: HealthBoard;
  listener: Listener;
  clusterLog: ClusterLog;
  local: LocalQueue;
  clusterQueue: ClusterQueue;
  users: () => UserConfig[];
  replicas: () => Promise<ReplicaInfo[] | undefined>;
  /** Exchange's message trace, for the accounts trace.providerLookup names. */
  providerTraces: Map<string, ExchangeMessageTrace>;
}

/** trace.providerLookup: true is every Microsoft account with an app credential, a list names them. */
function providerTraces(config: Config, accounts: Iterable<ResolvedAccount>): Map<string, ExchangeMessageTrace> {
  const wanted = config.trace.providerLookup;
  const named = (account: ResolvedAccount) => (wanted === true ? !!(account.clientSecret || account.clientCertificateFile || account.clientAssertionFile) : Array.isArray(wanted) && wanted.includes(account.name));
  return new Map([...accounts].filter((account) => account.provider === 'microsoft' && named(account)).map((account) => [account.name, new ExchangeMessageTrace(account)]));
}

/** This replica's queue as the console and the other replicas' consoles see and change it. */
function localQueue(agent: DeliveryAgent, spool: Spool): LocalQueue {
  return {
    list: async () => [
      ...agent.pending().map(({ record, inFlight, held }) => ({ record, inFlight, held, area: 'queue' as const })),
      // Only the newest failed records are read for a view: a pile of them must not make each view read them all.
      ...(await spool.newestFailed(FAILED_SHOWN)).map((record) => ({ record, inFlight: false, held: false, area: 'failed' as const })),
    ],
    async act(action) {
      if (action.action === 'retry-all') return { count: agent.retryAccount(action.account) };
      if (!SAFE_ID.test(action.id)) return { outcome: 'not_found' };
      return action.action === 'retry' ? { count: agent.retryNow(action.id) } : { outcome: await agent.delete(action.id) };
    },
  };
}

/** A failed message by id, also one older than the newest FAILED_SHOWN. */
async function failedMessage(spool: Spool, id: string): Promise<{ record: QueueRecord; inFlight: false; held: false; area: 'failed' } | undefined> {
  const record = SAFE_ID.test(id) ? await spool.read(id, 'failed') : undefined;
  return record && { record, inFlight: false, held: false, area: 'failed' };
}

/** What the console reads and does, each through the part of the daemon that owns it. */
function consoleSources({ cluster, routes, agent, spool, health, listener, unlock, clusterLog, local, clusterQueue, users, replicas, providerTraces }: ConsoleParts): ConsoleSources {
  return {
    accounts: routes,
    queueState: (name) => agent.state(name),
    health: (name) => health.get(name),
    activity: () => clusterLog.activity([...routes.keys()], users().map((user) => user.username)),
    queue: () => clusterQueue.list(),
    async openSpooled(id) {
      const message = (await local.list()).find((candidate) => candidate.record.id === id) ?? (await failedMessage(spool, id));
      return message && { message, open: () => spool.openMessage(message.record, message.area) };
    },
    queueAction: (replica, action) => clusterQueue.act(replica, action),
    searchTrace: (query) => clusterLog.search(query),
    providerTrace: (account, messageId, receivedAt) => providerTraces.get(account)?.lookup(messageId, receivedAt),
    users,
    lockouts: () => listener.lockouts(),
    unlock: (scope, key) => {
      cluster.announceUnlock(scope, key); // every replica counted the same failures
      return unlock(scope, key);
    },
    replicas,
  };
}

interface PrimaryOfWorkers {
  config: Config;
  share: HostShare;
  workers: number;
  spool: Spool;
  agent: DeliveryAgent;
  routes: Map<string, Route & { tokens: TokenManager }>;
  trace: TraceSink;
  health: HealthBoard;
  activity: Activity;
  listener: Listener;
  cluster: ClusterState;
  logger: Logger;
  metrics: ReturnType<typeof createMetrics>;
}

/**
 * smtp.workers above 1: this process becomes the primary, owning the queue, the tokens, the
 * host's session slots and pace, the console and the control socket; workers take the sessions.
 * Its own listener never listens: it keeps the lockouts every worker's failures add to (the console's view).
 */
function startWorkerPool({ config, share, workers, spool, agent, routes, trace, health, activity, listener, cluster, logger, metrics }: PrimaryOfWorkers): WorkerPool {
  const committed = async (record: QueueRecord) => {
    if (await spool.countReceived(record, () => agent.knows(record.id))) agent.add(record);
  };
  const pool: WorkerPool = new WorkerPool(
    {
      logger,
      metrics,
      share,
      tokens: (account) => routes.get(account)?.tokens,
      committed,
      rescan: async () => {
        for (const record of await spool.list('queue')) await committed(record);
      },
      trace,
      health,
      authFailure: (ip, username, from) => {
        listener.noteFailureElsewhere(ip, username, false); // the worker where it happened counts the lockout
        pool.broadcast('authFailure', { ip, username }, from);
        cluster.announceAuthFailure(ip, username);
      },
      login: (username, ip) => activity.login(username, ip),
      queuedBytes: () => spool.bytes,
      incomingDir: spool.incomingDir,
      listenHost: config.smtp.host,
      listenPorts: [config.smtp.port, ...(config.smtp.tls?.implicitPort === undefined ? [] : [config.smtp.tls.implicitPort])],
    },
    workers,
  );
  return pool;
}

/** Wires the parts for one configuration; no globals, so tests can run several side by side. */
export async function startApp(loaded: LoadedConfig, options: AppOptions = {}): Promise<RunningApp> {
  const { config } = loaded;
  const logger = options.logger ?? createLogger(config.log.level);
  for (const warning of loaded.warnings) logger.warn(warning);
  const hostname = config.smtp.hostname ?? os.hostname();
  const metrics = createMetrics([...loaded.accounts.keys()]);
  const store = new TokenStore(path.join(config.dataDir, 'tokens'), config.tokenKey);
  const trust = clusterTrust(config);
  const cluster = await startCluster(config, trust, logger, metrics);
  // With worker processes, the primary keeps the host's session slots and pace for all of them.
  const workers = workerCount(config);
  const share = workers > 1 ? new HostShare(cluster) : cluster;
  // Attachments a stopped send left while uploading them to Graph: the message is still in the spool.
  const uploadParts = path.join(config.dataDir, 'upload-parts');
  await rm(uploadParts, { recursive: true, force: true });
  const spool = new Spool(config.dataDir, {
    maxBytes: config.queue.maxSize,
    minFreeDisk: config.queue.minFreeDisk,
    onFault: (message, details) => logger.error(details, message),
  });
  const recovered = await spool.init();
  const health = new HealthBoard();
  metrics.spoolLimitBytes.set(config.queue.maxSize);
  let notifier: Notifier | undefined;
  const { traceLog, activity, trace } = await startTrace(loaded, logger, metrics, (event) => {
    // A report or notification that failed is not told again: that could go round in circles.
    if (event.event === 'final' && !event.relayWrote && (event.status === 'failed' || event.status === 'expired')) {
      notifier?.event({ key: `failed:${event.account}`, severity: 'warning', account: event.account, title: `A message for ${event.account} failed for good (${event.status})`, details: `Message ${event.id}: see the console (Messages) or run: smtp-oauth-relay trace --id ${event.id}` });
    }
  });

  // Per account: its settings, its token manager and its way out, as every stage needs them.
  const routes = new Map<string, Route & { tokens: TokenManager }>();
  for (const account of loaded.accounts.values()) {
    const manager = new TokenManager(account, {
      store,
      cluster,
      metrics,
      logger,
      retries: config.oauth.retries,
      retryDelayMs: config.oauth.retryDelay * 1000,
    });
    routes.set(account.name, { account, tokens: manager, upstream: new Upstream(account, manager, logger, metrics, hostname, share, uploadParts) });
    for (const expiry of credentialExpiries(account)) {
      metrics.credentialExpiry.set({ account: account.name, credential: expiry.credential }, expiry.expiresAt / 1000);
      const warning = expiryWarning(account, expiry);
      if (warning) logger.warn({ account: account.name, credential: expiry.credential }, warning);
    }
  }

  const agent = new DeliveryAgent({
    spool,
    accounts: routes,
    retry: {
      initialDelayMs: config.queue.retry.initialDelay * 1000,
      maxDelayMs: config.queue.retry.maxDelay * 1000,
      maxAgeMs: config.queue.retry.maxAge * 1000,
    },
    bounces: bounceSettings(config),
    mayNotify: (username: string | undefined, address: string): boolean => listener.mayReceive(username, address),
    failedRetentionMs: config.queue.failedRetention * 1000,
    hostname,
    heldRecheckMs: config.oauth.reauthCheckInterval * 1000,
    onHeld: (account, reason, reply, hint) => cluster.announceHeld({ account, reason, reply, hint }),
    trace,
    metrics,
    health,
    logger,
  });
  metrics.setQueueProbe({
    spoolBytes: () => spool.bytes,
    accounts: async () => Object.fromEntries([...routes.keys()].map((name) => [name, { ...agent.state(name), failed: spool.failedCount(name) }])),
  });
  const pipeline = new Pipeline({
    routes,
    spool,
    agent,
    metrics,
    health,
    logger,
    trace,
    ...pipelineSettings(config, hostname),
  });
  const listener = new Listener({
    config,
    hostname,
    handler: pipeline.handle,
    admit: pipeline.admit,
    metrics,
    logger,
    onAuthFailure: (ip, username) => cluster.announceAuthFailure(ip, username),
    onLogin: (username, ip) => activity.login(username, ip),
  });
  const pool = share instanceof HostShare ? startWorkerPool({ config, share, workers, spool, agent, routes, trace, health, activity, listener, cluster, logger, metrics }) : undefined;
  cluster.onAuthFailure((ip, username) => {
    listener.noteFailureElsewhere(ip, username);
    pool?.broadcast('authFailure', { ip, username });
  });
  const unlock = (scope: 'ip' | 'user', key: string) => {
    pool?.broadcast('unlock', { scope, key });
    return listener.unlock(scope, key);
  };
  cluster.onUnlock(unlock);
  notifier = startNotifier({ traceLog, config, routes, agent, spool, health, listener, cluster, logger, metrics });
  cluster.onHeld(({ account, reason, reply, hint }) => agent.holdFromElsewhere(account, reason, reply, hint));

  let draining = false;
  const readiness = async (): Promise<ReadinessReport> => {
    const accounts: Record<string, unknown> = {};
    let accountsReady = true;
    for (const [name, { tokens: manager }] of routes) {
      const token = manager.status();
      const delivery = health.get(name);
      const queue = agent.state(name);
      const accountReady = token.state === 'ready' && !delivery.lastProblem && !queue.held;
      accountsReady &&= accountReady;
      accounts[name] = { ready: accountReady, mailbox: manager.account.mailbox, delivery: manager.account.delivery, ...token, ...delivery, queue };
    }
    const problems = draining ? ['draining: stopping, new sessions are refused'] : [...(await spool.acceptProblems(READY_HEADROOM)), ...(pool?.problems() ?? [])];
    const replicas = config.cluster ? { name: cluster.name, storeUp: cluster.up, replicas: await cluster.replicas() } : undefined;
    return { ready: problems.length === 0, problems, accountsReady, accounts, cluster: replicas, workers: pool?.state() };
  };
  const onUntrusted = () => metrics.clusterUntrusted.inc({ kind: 'request' });
  const handoffReceiver = new HandoffReceiver({
    spool,
    trust,
    self: cluster.name,
    onUntrusted,
    draining: () => draining,
    serves: (account: string) => routes.has(account),
    adopted: (record: QueueRecord) => {
      trace.record({ at: new Date().toISOString(), event: 'adopted', id: record.id, account: record.account });
      agent.add(record);
    },
    logger,
  });
  const clusterLog = new ClusterLog({
    log: traceLog,
    activity,
    self: cluster.name,
    peers: () => livePeerReplicas(cluster),
    trust,
    onUntrusted,
    timeoutMs: config.trace.clusterTimeout * 1000,
    logger,
  });
  const local = localQueue(agent, spool);
  const clusterQueue = new ClusterQueue({ local, self: cluster.name, peers: () => livePeerReplicas(cluster), trust, onUntrusted, timeoutMs: config.trace.clusterTimeout * 1000, logger });
  let users = config.users;
  const admin = new AdminPage({
    sources: consoleSources({ cluster, routes, agent, spool, health, listener, unlock, clusterLog, local, clusterQueue, users: () => users, replicas: async () => (config.cluster ? cluster.replicas() : undefined), providerTraces: providerTraces(config, loaded.accounts.values()) }),
    store,
    adminPasswordHash: config.http.adminPasswordHash,
    publicUrl: config.http.publicUrl,
    trustProxy: new NetworkList(config.http.trustProxy),
    authFailures: authGuardLimits(config.smtp.authFailures),
    logger,
  });
  const status = new StatusServer({
    host: config.http.host,
    port: config.http.port,
    registry: pool ? { contentType: metrics.registry.contentType, metrics: () => pool.metrics() } : metrics.registry,
    readiness,
    logger,
    hostNames: [os.hostname(), ...config.http.allowedHosts, ...(config.http.publicUrl ? [new URL(config.http.publicUrl).hostname] : []), ...(config.cluster?.advertiseHost ? [config.cluster.advertiseHost] : [])],
    pages: async (request, response) => (await handoffReceiver.handle(request, response)) || (await clusterLog.handle(request, response)) || (await clusterQueue.handle(request, response)) || admin.handle(request, response),
  });

  let pendingRestart: string[] = [];
  const control = new ControlServer(config.dataDir, daemonCommands({ agent, store, logger, pendingRestart: () => pendingRestart, clusterLog }), logger);
  await control.listen();
  const [smtpAddress, ...implicitTls] = await (pool ? pool.listen() : listener.listen()).catch(async (error: Error) => {
    await pool?.close();
    await control.close();
    throw error;
  });
  const httpAddress = await status.listen().catch(async (error: Error) => {
    await (pool ? pool.close() : listener.close());
    await control.close();
    throw error;
  });
  await agent.start(recovered.records);
  /**
   * A sign-in here (the token store changed) or on another replica (announced): the account takes
   * the new token, and a held queue is tried at once; also when this replica's token still looked
   * fine (its queue may be held because another replica's was, or its refresh token was revoked).
   */
  const resume = (name: string, local: boolean) => {
    const manager = routes.get(name)?.tokens;
    if (!manager) return;
    manager.takeSignIn(local).then(
      (taken) => {
        if (local && !taken) return; // this replica's own rotated token written to its store: nothing new
        agent.recheckHeld(name);
        if (local) void cluster.announceSignIn(name);
      },
      () => undefined,
    );
  };
  // A sign-in (login command, admin page) wrote a token here; or another replica announces one.
  const tokenWatcher = await watchTokenStore(path.join(config.dataDir, 'tokens'), (name) => resume(name, true));
  cluster.onSignIn((name) => resume(name, false));
  cluster.startHeartbeat(() => ({
    name: cluster.name,
    version: packageVersion(),
    smtp: `${hostname}:${smtpAddress.port}`,
    http: `${config.cluster?.advertiseHost ?? hostname}:${httpAddress.port}`,
    queued: [...routes.keys()].map((name) => agent.state(name)).reduce((sum, state) => sum + state.queued + state.deferred + state.active, 0),
  }));
  if (options.keepAlive !== false) {
    for (const { tokens: manager } of routes.values()) manager.startKeepAlive(config.oauth.keepAliveInterval * 1000);
  }
  logger.info(
    { smtp: `${smtpAddress.address}:${smtpAddress.port}`, workers, smtps: implicitTls.map((address) => `${address.address}:${address.port}`), http: `${httpAddress.address}:${httpAddress.port}`, accounts: [...loaded.accounts.keys()], users: config.users.length },
    'smtp-oauth-relay listening',
  );

  let stopping: Promise<void> | undefined;
  return {
    smtpPort: smtpAddress.port,
    smtpsPort: implicitTls[0]?.port,
    httpPort: httpAddress.port,
    readiness,
    reload(next: LoadedConfig): string[] {
      // Compared with the config the process started with: a key that differs and is not live
      // keeps needing a restart at every reload until there is one.
      const changed = changedKeys(config, next.config).filter((key) => !(key === 'tokenKey' && store.usesKey(next.config.tokenKey)));
      const applyListener = listener.prepareReload(next.config); // throws before anything changed
      applyListener();
      pool?.reload();
      users = next.config.users;
      logger.level = next.config.log.level;
      agent.setBounces(bounceSettings(next.config));
      for (const [name, account] of next.accounts) routes.get(name)?.tokens.updateCredentials(account);
      const applied = changed.filter((key) => LIVE_KEYS.some((pattern) => pattern.test(key)));
      pendingRestart = changed.filter((key) => !applied.includes(key));
      logger.info({ applied, needsRestart: pendingRestart, certificatesReloaded: !!next.config.smtp.tls }, pendingRestart.length ? 'configuration reloaded; some changes need a restart' : 'configuration reloaded');
      return pendingRestart;
    },
    /** Stops taking mail (421 to new sessions), lets transactions and deliveries in flight finish. */
    stop() {
      stopping ??= (async () => {
        draining = true; // /readyz answers 503 while the queue drains, so no new devices are sent here
        for (const { tokens: manager } of routes.values()) manager.stopKeepAlive();
        notifier?.stop();
        tokenWatcher.close();
        // New sessions get 421 while those in progress finish; what they commit is delivered or handed over.
        await (pool ? pool.drain(SESSION_DRAIN_MS) : listener.drain(SESSION_DRAIN_MS));
        await agent.stop(config.queue.shutdownTimeout * 1000);
        if (trust) {
          const onHandedOver = (record: QueueRecord, peer: string) => trace.record({ at: new Date().toISOString(), event: 'handed-over', id: record.id, account: record.account, peer });
          await handOffQueue({ spool, trust, self: cluster.name, peers: () => livePeerReplicas(cluster), logger, deadline: Date.now() + HANDOFF_LIMIT_MS, onHandedOver });
        }
        await listener.close();
        for (const route of routes.values()) route.upstream.close();
        await status.close();
        await control.close();
        await traceLog.close();
        await cluster.close();
        logger.info('smtp-oauth-relay stopped');
      })();
      return stopping;
    },
  };
}
