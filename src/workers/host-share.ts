import { randomUUID } from 'node:crypto';
import type { SendingLimits } from '../config/index.js';
import type { ClusterState, SessionSlot, UpstreamShare } from '../cluster-state/index.js';
import { Pacer } from '../upstream/index.js';

/** A waiter that has not asked again for this long has given up (as in the cluster's line). */
const WAITER_GONE_MS = 2000;

/** Who holds a session slot: the primary process itself, or a worker by its id. */
export type SlotHolder = 'primary' | number;

interface AccountSessions {
  /** Slots held on this host, by id. */
  held: Map<string, { holder: SlotHolder; slot: SessionSlot }>;
  /** Waiters that asked and got none, in the order of their first ask, with their last ask. */
  line: Map<string, number>;
}

/**
 * The pace and the upstream session slots that the processes of one host share, kept by the
 * primary (the one owner): its delivery agent's sends and every worker's direct sends count
 * against the same `upstream.maxConnections` and `limits`. With `cluster:` the counting is the
 * cluster's (the primary asks the store for every process here); alone it is done here, the way
 * the cluster's line does it: first come, first served.
 */
export class HostShare implements UpstreamShare {
  readonly sharesSessions = true;
  private readonly sessions = new Map<string, AccountSessions>();
  private readonly pacers = new Map<string, Pacer>();
  private readonly pausedUntil = new Map<string, number>();

  constructor(private readonly cluster: ClusterState) {}

  async pace(account: string, limits: SendingLimits, transactions: number, recipients: number): Promise<number> {
    if (this.cluster.sharesSessions) return this.cluster.pace(account, limits, transactions, recipients);
    const now = Date.now();
    const paused = (this.pausedUntil.get(account) ?? 0) - now;
    if (paused > 0) return paused;
    let pacer = this.pacers.get(account);
    if (!pacer) this.pacers.set(account, (pacer = new Pacer(limits)));
    const wait = pacer.waitMs(recipients, now, transactions);
    if (wait === 0) pacer.record(recipients, now, transactions);
    return wait;
  }

  async pauseSending(account: string, ms: number): Promise<void> {
    if (this.cluster.sharesSessions) return this.cluster.pauseSending(account, ms);
    this.pausedUntil.set(account, Math.max(this.pausedUntil.get(account) ?? 0, Date.now() + ms));
  }

  /** For the primary's own sends. */
  async takeSession(account: string, limit: number, waiter: string, queue = true): Promise<SessionSlot | undefined> {
    const id = await this.takeSessionFor('primary', account, limit, waiter, queue);
    return id === undefined ? undefined : { release: () => this.releaseSession(id) };
  }

  /** One of the account's sessions for a holder; the slot's id, or undefined while none is free for it (see ClusterState.takeSession). */
  async takeSessionFor(holder: SlotHolder, account: string, limit: number, waiter: string, queue = true): Promise<string | undefined> {
    const sessions = this.accountSessions(account);
    const now = Date.now();
    for (const [name, asked] of sessions.line) if (now - asked > WAITER_GONE_MS) sessions.line.delete(name);
    if (queue) sessions.line.set(waiter, now);
    const slot = this.cluster.sharesSessions ? await this.cluster.takeSession(account, limit, waiter, queue) : this.takeHere(sessions, limit, waiter);
    if (!slot) return undefined;
    sessions.line.delete(waiter);
    const id = randomUUID();
    sessions.held.set(id, { holder, slot });
    return id;
  }

  /** Alone: a slot when fewer than `limit` are held here and no one who asked earlier still waits ahead. */
  private takeHere(sessions: AccountSessions, limit: number, waiter: string): SessionSlot | undefined {
    const free = limit - sessions.held.size;
    const ahead = sessions.line.has(waiter) ? [...sessions.line.keys()].indexOf(waiter) : sessions.line.size; // one ask: behind all who wait
    return free > 0 && ahead < free ? { release: async () => undefined } : undefined;
  }

  async releaseSession(id: string): Promise<void> {
    for (const sessions of this.sessions.values()) {
      const entry = sessions.held.get(id);
      if (!entry) continue;
      sessions.held.delete(id);
      await entry.slot.release();
      return;
    }
  }

  /** A worker died: the slots its connections held are free again. */
  async releaseHolder(holder: SlotHolder): Promise<void> {
    for (const sessions of this.sessions.values()) {
      for (const [id, entry] of sessions.held) if (entry.holder === holder) await this.releaseSession(id);
    }
  }

  /** Whether a process here, or another replica, waits for one of the account's sessions. */
  async sessionsWanted(account: string): Promise<boolean> {
    const now = Date.now();
    for (const asked of this.accountSessions(account).line.values()) if (now - asked <= WAITER_GONE_MS) return true;
    return this.cluster.sharesSessions && this.cluster.sessionsWanted(account);
  }

  private accountSessions(account: string): AccountSessions {
    let sessions = this.sessions.get(account);
    if (!sessions) this.sessions.set(account, (sessions = { held: new Map(), line: new Map() }));
    return sessions;
  }
}
