import cluster, { type Worker } from 'node:cluster';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { AggregatorRegistry } from 'prom-client';
import type { SendingLimits } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/index.js';
import type { AccessTokens } from '../oauth/index.js';
import type { QueueRecord } from '../spool/index.js';
import type { TraceEvent, TraceSink } from '../trace/index.js';
import type { HealthBoard } from '../health.js';
import type { FailureReason } from '../reply.js';
import { Channel, type Handler } from './channel.js';
import type { HostShare } from './host-share.js';
import { LISTENING_PORTS_ENV, receiverFolder, type ListenFailure, type QueueFill, type WorkerAddress } from './protocol.js';

/** What the primary lends its workers: it owns each of these once for the whole host. */
export interface PrimaryParts {
  logger: Logger;
  metrics: Metrics;
  share: HostShare;
  tokens(account: string): AccessTokens | undefined;
  /** A message a worker committed to the spool: to the delivery agent, once. */
  committed(record: QueueRecord): Promise<void>;
  /** Every committed message the delivery agent does not have yet (after a worker died). */
  rescan(): Promise<void>;
  trace: TraceSink;
  health: Pick<HealthBoard, 'relayed' | 'failed'>;
  /** A failed device login in worker `from`: the other processes and replicas count it too. */
  authFailure(ip: string, username: string, from: number): void;
  login(username: string, ip: string): void;
  /** Queued bytes the workers count against queue.maxSize. */
  queuedBytes(): number;
  /** The spool's incoming/ folder, where each worker receives into a folder of its own. */
  incomingDir: string;
  /** Where the workers listen: smtp.host, and smtp.port (then smtp.tls.implicitPort, if set). */
  listenHost: string;
  listenPorts: number[];
}

/** A port free on `host` now (for a config that says 0: any free port). */
function freePort(host: string): Promise<number> {
  const server = net.createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** How often the workers hear how full the queue is. */
const QUEUED_BYTES_MS = 250;
/** A worker that lived this long was healthy: its replacement starts at once. */
const HEALTHY_LIFE_MS = 10_000;
/** Replacements of workers that keep dying wait longer each time, up to this. */
const MAX_RESTART_DELAY_MS = 30_000;
/** How long a scrape waits for a worker's metrics. */
const METRICS_WAIT_MS = 2000;

interface Member {
  worker: Worker;
  channel: Channel;
  startedAt: number;
  listening?: WorkerAddress[];
  /** Its commits the delivery agent has settled since it last heard how full the queue is. */
  settled: string[];
}


/**
 * The worker processes that take devices' sessions (node:cluster: one listening socket, which
 * every worker accepts from). Each worker asks the primary
 * for what must be one per host (tokens, session slots, pace) and hands it every committed message.
 * A worker that dies is replaced; what it committed is found in the spool and delivered once.
 */
export class WorkerPool {
  private readonly members = new Map<number, Member>();
  /** Commits being handed to the delivery agent: a drain waits for them. */
  private readonly adopting = new Set<Promise<void>>();
  private stopping = false;
  private restartDelayMs = 0;
  /** Tells the workers how full the queue is as deliveries empty it; commits tell them at once. */
  private bytesTimer?: NodeJS.Timeout;
  private fillScheduled = false;
  /**
   * The ports every worker listens on, a port 0 in the config chosen once here: node:cluster shares
   * one socket among workers that ask for the same port, and a replacement asking for 0 again
   * would not get the socket the others hold (EADDRINUSE), nor, after all had died, the same port.
   */
  private ports = '';

  constructor(
    private readonly parts: PrimaryParts,
    private readonly size: number,
  ) {}

  /** Starts the workers; resolves with where they listen once every one does. */
  async listen(): Promise<WorkerAddress[]> {
    this.ports = (await Promise.all(this.parts.listenPorts.map((port) => (port === 0 ? freePort(this.parts.listenHost) : port)))).join(',');
    // The workers accept from the listening socket themselves (SCHED_NONE), rather than the primary
    // accepting and passing each connection on: a connection on its way to a worker that dies would
    // hang until the device's timeout, and the primary, which delivers the queue, would do work per connection.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    const started = Array.from({ length: this.size }, () => this.start());
    const addresses = await Promise.all(started);
    this.bytesTimer = setInterval(() => this.tellQueueFill(), QUEUED_BYTES_MS).unref();
    return addresses[0];
  }

  /** Why the host cannot take mail for want of workers (for readiness). */
  problems(): string[] {
    return this.state().listening === 0 && !this.stopping ? ['workers: no SMTP worker process is running (being restarted)'] : [];
  }

  /** How many workers there should be, and how many take sessions now (/readyz). */
  state(): { configured: number; listening: number } {
    return { configured: this.size, listening: [...this.members.values()].filter((member) => member.listening).length };
  }

  /** Tells every worker (but `except`) something. */
  broadcast(kind: string, body: unknown, except?: number): void {
    for (const [id, member] of this.members) if (id !== except) member.channel.tell(kind, body);
  }

  /** After a commit is settled: soon (once per turn of the event loop), so no worker goes on with an old figure. */
  private tellQueueFillSoon(): void {
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    setImmediate(() => {
      this.fillScheduled = false;
      this.tellQueueFill();
    });
  }

  private tellQueueFill(): void {
    const bytes = this.parts.queuedBytes();
    for (const member of this.members.values()) member.channel.tell('queueFill', { bytes, settled: member.settled.splice(0) } satisfies QueueFill);
  }

  /** SIGHUP: each worker reads the config again (the primary checked it first). */
  reload(): void {
    this.broadcast('reload', null);
  }

  /** Every worker's metrics beside the primary's, as one registry's text. */
  async metrics(): Promise<string> {
    const own = await this.parts.metrics.registry.getMetricsAsJSON();
    const workers = await Promise.all([...this.members.values()].map((member) => member.channel.ask<object[]>('metrics', null, METRICS_WAIT_MS).catch(() => undefined)));
    return AggregatorRegistry.aggregate([own, ...workers.filter((entry): entry is object[] => !!entry)]).metrics();
  }

  /**
   * Stopping: each worker answers 421 to new sessions and lets those in progress finish (within
   * `timeoutMs`); what they commit reaches the delivery agent before this resolves.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearInterval(this.bytesTimer);
    await Promise.all(
      [...this.members.values()].map(async ({ worker, channel }) => {
        const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
        await channel.ask('drain', { timeoutMs }, timeoutMs + 5000).catch(() => undefined);
        worker.disconnect();
        // A worker that does not let go within the grace time is ended.
        const ended = setTimeout(() => worker.process.kill('SIGKILL'), 5000).unref();
        await exited;
        clearTimeout(ended);
      }),
    );
    await Promise.all(this.adopting);
  }

  async close(): Promise<void> {
    await this.drain(0);
  }

  private start(): Promise<WorkerAddress[]> {
    const worker = cluster.fork({ [LISTENING_PORTS_ENV]: this.ports });
    return new Promise((resolve, reject) => {
      const settled: string[] = [];
      const handlers = this.handlers(
        worker.id,
        settled,
        (addresses) => {
          member.listening = addresses;
          resolve(addresses);
        },
        reject,
      );
      const member: Member = { worker, channel: new Channel(worker, handlers), startedAt: Date.now(), settled };
      this.members.set(worker.id, member);
      // A note to a worker that just died fails (EPIPE): its death is handled on 'exit'.
      worker.on('error', (error) => this.parts.logger.warn({ worker: worker.id, err: error.message }, 'SMTP worker unreachable'));
      worker.once('exit', (code, signal) => {
        member.channel.close();
        this.members.delete(worker.id);
        reject(new Error(`SMTP worker ${worker.id} exited (${signal ?? code}) before it listened`));
        if (!this.stopping) void this.replace(member, code, signal);
      });
    });
  }

  /** A worker died: its half-received messages go, its slots are free, what it committed is delivered, and another takes its place. */
  private async replace(member: Member, code: number | null, signal: string | null): Promise<void> {
    const { logger, metrics, share } = this.parts;
    const id = member.worker.id;
    logger.error({ worker: id, code, signal }, 'SMTP worker process died; starting another');
    metrics.workerRestarts.inc();
    await share.releaseHolder(id);
    await rm(path.join(this.parts.incomingDir, receiverFolder(id)), { recursive: true, force: true });
    await this.parts.rescan().catch((error: Error) => logger.error({ err: error.message }, 'spool rescan after a worker died failed; its messages are delivered after a restart'));
    const healthy = Date.now() - member.startedAt > HEALTHY_LIFE_MS;
    this.restartDelayMs = healthy ? 0 : Math.min(MAX_RESTART_DELAY_MS, Math.max(500, this.restartDelayMs * 2));
    await new Promise((resolve) => setTimeout(resolve, this.restartDelayMs));
    if (!this.stopping) this.start().catch((error: Error) => logger.error({ err: error.message }, 'SMTP worker did not start'));
  }

  private handlers(id: number, settled: string[], listening: (addresses: WorkerAddress[]) => void, failed: (error: Error) => void): Record<string, Handler> {
    const { share, trace, health } = this.parts;
    const account = (name: string): AccessTokens => {
      const tokens = this.parts.tokens(name);
      if (!tokens) throw new Error(`no account named ${name}`);
      return tokens;
    };
    return {
      listening,
      listenFailed: (failure: ListenFailure) => {
        failed(Object.assign(new Error(failure.message), failure));
        this.members.get(id)?.worker.disconnect(); // it exits; a replacement tries again later
      },
      token: ({ account: name }: { account: string }) => account(name).getToken(),
      invalidate: ({ account: name, token }: { account: string; token: string }) => account(name).invalidate(token),
      pace: ({ account: name, limits, transactions, recipients }: { account: string; limits: SendingLimits; transactions: number; recipients: number }) => share.pace(name, limits, transactions, recipients),
      pause: ({ account: name, ms }: { account: string; ms: number }) => share.pauseSending(name, ms),
      takeSession: async ({ account: name, limit, waiter, queue }: { account: string; limit: number; waiter: string; queue: boolean }) => (await share.takeSessionFor(id, name, limit, waiter, queue)) ?? null,
      releaseSession: ({ id: slot }: { id: string }) => share.releaseSession(slot),
      sessionsWanted: ({ account: name }: { account: string }) => share.sessionsWanted(name),
      committed: (record: QueueRecord) => {
        const adoption = this.parts.committed(record).catch((error: Error) => this.parts.logger.error({ id: record.id, err: error.message }, 'committed message not handed to the delivery agent; it is delivered after a restart'));
        this.adopting.add(adoption);
        void adoption.finally(() => {
          this.adopting.delete(adoption);
          settled.push(record.id);
          this.tellQueueFillSoon();
        });
      },
      trace: (event: TraceEvent) => trace.record(event),
      relayed: ({ account: name }: { account: string }) => health.relayed(name),
      failed: ({ account: name, reason, reply, hint }: { account: string; reason: FailureReason; reply: string; hint?: string }) => health.failed(name, reason, reply, hint),
      authFailure: ({ ip, username }: { ip: string; username: string }) => this.parts.authFailure(ip, username, id),
      login: ({ username, ip }: { username: string; ip: string }) => this.parts.login(username, ip),
    };
  }
}
