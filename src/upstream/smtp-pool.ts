import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { SessionSlot } from '../cluster-state/index.js';

/** One upstream session's envelope as nodemailer's SMTPConnection takes it (use8BitMime, size and dsn included). */
export type ConnectionEnvelope = SMTPConnection.Envelope & { smtpUtf8?: boolean };

/** The account's upstream session slots (cluster-wide in a cluster). */
export interface SessionSlots {
  /** Takes one, waiting for it in line (or rejects with the reply to give). */
  take(signal?: AbortSignal): Promise<SessionSlot>;
  /** One if one is free now and no one waits for it; never joins the line. */
  takeIfFree(): Promise<SessionSlot | undefined>;
  /** Whether another replica waits for one: then a connection that finished a send gives its up. */
  wantedElsewhere(): Promise<boolean>;
  /** Whether slots are shared with other replicas (then idle connections give theirs up sooner). */
  shared: boolean;
}

export interface PoolOptions {
  /** The account's upstream sessions at most (upstream.maxConnections). */
  maxConnections: number;
  /** A fresh connection, connected and logged in, that never throws an 'error' event; it rejects as nodemailer does (EAUTH, ECONNECTION, ...). */
  open(): Promise<SMTPConnection>;
  sessions: SessionSlots;
}

/**
 * An idle connection says QUIT after this long and frees its session slot (Postfix's cache time is
 * 2 s); sooner in a cluster, where another replica may be waiting for the slot.
 */
const IDLE_MS = 5000;
const SHARED_IDLE_MS = 1000;
/** A connection is not reused after this many messages or this long (Postfix: 300 s), so slots change hands in a cluster. */
const MAX_MESSAGES = 100;
const MAX_AGE_MS = 300_000;

/** How long a closing connection may take to say goodbye before its slot is freed anyway. */
const CLOSE_GRACE_MS = 10_000;

/** A logged-in upstream session and the session slot it holds until its socket is closed. */
class PooledConnection {
  private messages = 0;
  private readonly openedAt = Date.now();
  private idleTimer?: NodeJS.Timeout;
  private closing = false;
  private ended = false;

  constructor(
    private readonly connection: SMTPConnection,
    private readonly slot: SessionSlot,
    private readonly onEnded: (pooled: PooledConnection) => void,
  ) {
    // Between sends the server may close it (an idle timeout, a 421): its 'end' takes it out of the
    // pool. During a send, the send's callback gets the error (open() gave it a listener for the rest).
    connection.once('end', () => this.end());
  }

  get reusable(): boolean {
    return !this.closing && this.messages < MAX_MESSAGES && Date.now() - this.openedAt < MAX_AGE_MS;
  }

  /** One transaction; aborting `signal` closes the connection before the final dot. */
  send(envelope: ConnectionEnvelope, message: Readable, signal?: AbortSignal): Promise<SMTPConnection.SentMessageInfo> {
    this.messages++;
    return new Promise((resolve, reject) => {
      const abort = () => this.close();
      signal?.addEventListener('abort', abort, { once: true });
      this.connection.send(envelope, message, (error, info) => {
        signal?.removeEventListener('abort', abort);
        if (error) reject(error);
        else resolve(info);
      });
    });
  }

  idle(ms: number, onIdleTooLong: () => void): void {
    this.idleTimer = setTimeout(onIdleTooLong, ms).unref();
  }

  busy(): void {
    clearTimeout(this.idleTimer);
  }

  /** QUIT for a connection that did its work, a plain close for one that failed; the slot is freed once the socket is gone. */
  close(quit = false): void {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.idleTimer);
    if (quit) this.connection.quit();
    else this.connection.close();
    setTimeout(() => this.end(), CLOSE_GRACE_MS).unref();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = this.closing = true;
    clearTimeout(this.idleTimer);
    void this.slot.release();
    this.onEnded(this);
  }
}

/**
 * The account's pool of upstream SMTP sessions. Each open connection holds one of the account's
 * session slots (cluster-wide in a cluster, so the provider never sees more than maxConnections
 * sessions, idle ones included), reuses it for the next message while it is busy, and gives it up
 * after a few idle seconds or when it closes, so another replica can have it.
 */
export class SmtpPool {
  private readonly idle: PooledConnection[] = [];
  private opened = 0;
  private closing = false;
  /** Sends waiting for a connection to come back (the account's maxConnections are all open here). */
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly options: PoolOptions) {}

  /** Sends one message over a pooled connection; a connection that failed is closed, never reused. */
  async send(envelope: ConnectionEnvelope, message: Readable, signal?: AbortSignal): Promise<SMTPConnection.SentMessageInfo> {
    const pooled = await this.lease(signal);
    try {
      const info = await pooled.send(envelope, message, signal);
      void this.giveBack(pooled);
      return info;
    } catch (error) {
      pooled.close();
      throw error;
    }
  }

  /** Closes idle connections now, busy ones when their send ends. */
  close(): void {
    this.closing = true;
    for (const pooled of this.idle.splice(0)) pooled.close(true);
  }

  private async lease(signal?: AbortSignal): Promise<PooledConnection> {
    for (;;) {
      if (signal?.aborted) {
        this.wakeOne(); // the wake this send may have had is another's
        signal.throwIfAborted();
      }
      const idle = this.idle.pop();
      if (idle && !idle.reusable) {
        idle.close(true);
        continue;
      }
      if (idle) {
        idle.busy();
        return idle;
      }
      if (this.opened < this.options.maxConnections) {
        // With a connection of its own open, a busy pool takes another slot only if one is free:
        // queueing for it would take it from a replica or worker that has none, and each side
        // would close its connections for the other in turn.
        const slot = this.opened === 0 || !this.options.sessions.shared ? undefined : await this.options.sessions.takeIfFree();
        if (this.opened === 0 || !this.options.sessions.shared || slot) return this.openOne(signal, slot);
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private async openOne(signal?: AbortSignal, taken?: SessionSlot): Promise<PooledConnection> {
    this.opened++;
    try {
      const slot = taken ?? (await this.options.sessions.take(signal));
      const connection = await this.options.open().catch((error: unknown) => {
        void slot.release(); // as when a connection ends: the failure is not kept waiting for the store
        throw error;
      });
      return new PooledConnection(connection, slot, (ended) => this.forget(ended));
    } catch (error) {
      this.opened--;
      this.wakeOne();
      throw error;
    }
  }

  /** A connection that finished a send serves the next one here, unless another replica has waited for a session. */
  private async giveBack(pooled: PooledConnection): Promise<void> {
    const { sessions } = this.options;
    const wanted = sessions.shared && (await sessions.wantedElsewhere());
    if (wanted || this.closing || !pooled.reusable) return pooled.close(true);
    this.idle.push(pooled);
    pooled.idle(sessions.shared ? SHARED_IDLE_MS : IDLE_MS, () => pooled.close(true));
    this.wakeOne();
  }

  private forget(pooled: PooledConnection): void {
    this.opened--;
    const at = this.idle.indexOf(pooled);
    if (at >= 0) this.idle.splice(at, 1);
    this.wakeOne();
  }

  private wakeOne(): void {
    this.waiting.shift()?.();
  }
}
