import cluster from 'node:cluster';
import os from 'node:os';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { LoadedConfig } from '../config/index.js';
import type { SendingLimits } from '../config/index.js';
import { Listener } from '../listener/index.js';
import { createLogger, type Logger } from '../log.js';
import { createMetrics } from '../metrics/index.js';
import { TokenError, type AccessTokens } from '../oauth/index.js';
import { Pipeline, pipelineSettings, type Route } from '../pipeline.js';
import { Spool, type QueueRecord } from '../spool/index.js';
import { Upstream } from '../upstream/index.js';
import type { SessionSlot, UpstreamShare } from '../cluster-state/index.js';
import type { TraceEvent } from '../trace/index.js';
import type { FailureReason } from '../reply.js';
import { Channel, type CrossedError } from './channel.js';
import { receiverFolder, workerConfig, type ListenFailure, type QueueFill, type WorkerAddress } from './protocol.js';

/** A token error from the primary is the same error here: the upstream classifies it as it would there. */
function revive(error: CrossedError): Error {
  if (error.name === 'TokenError') return new TokenError(error.kind === 'reauth' ? 'reauth' : 'unavailable', error.message, error.hint);
  return Object.assign(new Error(error.message), { name: error.name });
}

/** An account's tokens, kept by the primary: one refresh per expiry for every process. */
class PrimaryTokens implements AccessTokens {
  constructor(
    private readonly channel: Channel,
    private readonly account: string,
  ) {}

  getToken(): Promise<string> {
    return this.channel.ask<string>('token', { account: this.account });
  }

  invalidate(accessToken: string): void {
    this.channel.tell('invalidate', { account: this.account, token: accessToken });
  }
}

/** The pace and session slots of this host, kept by the primary. */
class PrimaryShare implements UpstreamShare {
  readonly sharesSessions = true;

  constructor(private readonly channel: Channel) {}

  pace(account: string, limits: SendingLimits, transactions: number, recipients: number): Promise<number> {
    return this.channel.ask<number>('pace', { account, limits, transactions, recipients });
  }

  async pauseSending(account: string, ms: number): Promise<void> {
    this.channel.tell('pause', { account, ms });
  }

  async takeSession(account: string, limit: number, waiter: string, queue = true): Promise<SessionSlot | undefined> {
    const id = await this.channel.ask<string | null>('takeSession', { account, limit, waiter, queue });
    return id === null ? undefined : { release: async () => this.channel.tell('releaseSession', { id }) };
  }

  sessionsWanted(account: string): Promise<boolean> {
    return this.channel.ask<boolean>('sessionsWanted', { account });
  }
}

/** How long a worker lets its sessions finish when the primary drains it, at most. */
interface DrainOrder {
  timeoutMs: number;
}

/**
 * A worker process: the devices' side (greeting, AUTH, rewrite, the spool commit, direct sends)
 * on an event loop of its own. What must be one for the host stays with the primary, which it
 * asks over IPC: tokens, session slots and pace; the delivery agent takes what it commits; the
 * delivery log, the console's counts and the lockouts hear of what happens here. Resolves when
 * the primary lets it go (after a drain) or is gone.
 */
export async function runWorker(loaded: LoadedConfig, reloadConfig: () => LoadedConfig): Promise<void> {
  const id = cluster.worker!.id;
  const config = workerConfig(loaded.config);
  const logger: Logger = createLogger(config.log.level).child({ worker: id });
  const hostname = config.smtp.hostname ?? os.hostname();
  const metrics = createMetrics([...loaded.accounts.keys()]);
  // The queue's bytes as the primary last said, plus this worker's commits it had not counted yet:
  // a fast device cannot commit past queue.maxSize between two of the primary's updates.
  let queuedBytes = 0;
  const uncounted = new Map<string, number>();
  let uncountedBytes = 0; // their sum: the spool asks for it with every chunk received
  let listener: Listener | undefined;
  // The primary disconnects a drained worker; a primary that died leaves the channel closed too.
  const disconnected = new Promise<void>((resolve) => process.once('disconnect', resolve));
  process.on('error', () => undefined); // a note to a primary that just died: the disconnect ends this worker
  const channel = new Channel(
    process as unknown as { send(message: unknown): boolean; on(event: 'message', listener: (message: unknown) => void): unknown },
    {
      queueFill: ({ bytes, settled }: QueueFill) => {
        queuedBytes = bytes;
        for (const id of settled) {
          uncountedBytes -= uncounted.get(id) ?? 0;
          uncounted.delete(id);
        }
      },
      authFailure: ({ ip, username }: { ip: string; username: string }) => listener?.noteFailureElsewhere(ip, username, false),
      unlock: ({ scope, key }: { scope: 'ip' | 'user'; key: string }) => listener?.unlock(scope, key),
      metrics: () => metrics.registry.getMetricsAsJSON(),
      reload: () => {
        try {
          const next = reloadConfig();
          listener?.prepareReload(workerConfig(next.config))();
          logger.level = next.config.log.level;
        } catch (error) {
          // The primary read the same file a moment before; it changed since: this worker keeps its config.
          logger.error({ err: (error as Error).message }, 'configuration not reloaded in this worker; the running one stays');
        }
      },
      drain: async ({ timeoutMs }: DrainOrder) => {
        await listener?.drain(timeoutMs);
        await listener?.close();
      },
    },
    revive,
  );
  const spool = new Spool(config.dataDir, {
    maxBytes: config.queue.maxSize,
    minFreeDisk: config.queue.minFreeDisk,
    onFault: (message, details) => logger.error(details, message),
    receiver: { folder: receiverFolder(id), queuedBytes: () => queuedBytes + uncountedBytes },
  });
  await mkdir(spool.incomingDir, { recursive: true, mode: 0o700 });
  const share = new PrimaryShare(channel);
  const uploadParts = path.join(config.dataDir, 'upload-parts');
  const routes = new Map<string, Route>();
  for (const account of loaded.accounts.values()) {
    routes.set(account.name, { account, upstream: new Upstream(account, new PrimaryTokens(channel, account.name), logger, metrics, hostname, share, uploadParts) });
  }
  const pipeline = new Pipeline({
    routes,
    spool,
    agent: {
      add: (record: QueueRecord) => {
        uncounted.set(record.id, record.size);
        uncountedBytes += record.size;
        channel.tell('committed', record);
      },
    },
    metrics,
    health: {
      relayed: (account: string) => channel.tell('relayed', { account }),
      failed: (account: string, reason: FailureReason, reply: string, hint?: string) => channel.tell('failed', { account, reason, reply, hint }),
    },
    logger,
    trace: { record: (event: TraceEvent) => channel.tell('trace', event) },
    ...pipelineSettings(config, hostname),
  });
  listener = new Listener({
    config,
    hostname,
    handler: pipeline.handle,
    admit: pipeline.admit,
    metrics,
    logger,
    onAuthFailure: (ip, username) => channel.tell('authFailure', { ip, username }),
    onLogin: (username, ip) => channel.tell('login', { username, ip }),
  });
  try {
    const addresses: WorkerAddress[] = (await listener.listen()).map(({ address, port }) => ({ address, port }));
    channel.tell('listening', addresses);
  } catch (error) {
    // The primary reports it, as a single process would, and stops this worker.
    const { code, syscall, message } = error as NodeJS.ErrnoException;
    channel.tell('listenFailed', { code, syscall, message } satisfies ListenFailure);
  }
  await disconnected;
  for (const route of routes.values()) route.upstream.close();
  channel.close();
}
