import os from 'node:os';
import path from 'node:path';
import type { LoadedConfig } from './config/index.js';
import { Listener } from './listener/index.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics, StatusServer, type ReadinessReport } from './metrics/index.js';
import { TokenManager, TokenStore } from './oauth/index.js';
import { Pipeline, type Route } from './pipeline.js';
import { Spool } from './spool/index.js';
import { Upstream } from './upstream/index.js';
import { HealthBoard } from './health.js';

export interface AppOptions {
  logger?: Logger;
  /** Refresh every account's token at start and then on the keep-alive timer (default true). */
  keepAlive?: boolean;
}

export interface RunningApp {
  smtpPort: number;
  httpPort: number;
  stop(): Promise<void>;
  readiness(): ReadinessReport;
}

/** Cap on the header block the rewrite reads into memory. */
const MAX_HEADER_BYTES = 1024 * 1024;

/** Wires the parts for one configuration; no globals, so tests can run several side by side. */
export async function startApp(loaded: LoadedConfig, options: AppOptions = {}): Promise<RunningApp> {
  const { config } = loaded;
  const logger = options.logger ?? createLogger(config.log.level);
  for (const warning of loaded.warnings) logger.warn(warning);
  const hostname = config.smtp.hostname ?? os.hostname();
  const metrics = createMetrics([...loaded.accounts.keys()]);
  const store = new TokenStore(path.join(config.dataDir, 'tokens'));
  const spool = new Spool(config.dataDir);
  await spool.init();
  const health = new HealthBoard();

  const tokens = new Map<string, TokenManager>();
  const routes = new Map<string, Route>();
  for (const account of loaded.accounts.values()) {
    const manager = new TokenManager(account, {
      store,
      metrics,
      logger,
      retries: config.oauth.retries,
      retryDelayMs: config.oauth.retryDelay * 1000,
    });
    tokens.set(account.name, manager);
    routes.set(account.name, { account, upstream: new Upstream(account, manager, logger, hostname) });
  }

  const pipeline = new Pipeline({ routes, spool, metrics, health, logger, maxMessageSize: config.smtp.maxMessageSize, maxHeaderBytes: MAX_HEADER_BYTES });
  const listener = new Listener({ config, hostname, handler: pipeline.handle, metrics, logger });

  const readiness = (): ReadinessReport => {
    const accounts: Record<string, unknown> = {};
    let ready = true;
    for (const [name, manager] of tokens) {
      const token = manager.status();
      const delivery = health.get(name);
      const accountReady = token.state === 'ready' && !delivery.lastProblem;
      ready &&= accountReady;
      accounts[name] = { ready: accountReady, mailbox: manager.account.mailbox, ...token, ...delivery };
    }
    return { ready, accounts };
  };
  const status = new StatusServer({ host: config.http.host, port: config.http.port, registry: metrics.registry, readiness, logger });

  const smtpAddress = await listener.listen();
  const httpAddress = await status.listen().catch(async (error: Error) => {
    await listener.close();
    throw error;
  });
  if (options.keepAlive !== false) {
    for (const manager of tokens.values()) manager.startKeepAlive(config.oauth.keepAliveInterval * 1000);
  }
  logger.info(
    { smtp: `${smtpAddress.address}:${smtpAddress.port}`, http: `${httpAddress.address}:${httpAddress.port}`, accounts: [...loaded.accounts.keys()], users: config.users.length },
    'smtp-oauth-relay listening',
  );

  return {
    smtpPort: smtpAddress.port,
    httpPort: httpAddress.port,
    readiness,
    async stop() {
      for (const manager of tokens.values()) manager.stopKeepAlive();
      await listener.close();
      for (const route of routes.values()) route.upstream.close();
      await status.close();
      logger.info('smtp-oauth-relay stopped');
    },
  };
}
