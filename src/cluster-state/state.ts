import type { SendingLimits } from '../config/index.js';
import type { FailureReason } from '../reply.js';

/**
 * What replicas share. The embedded default (LocalCluster) keeps everything in this process, as a
 * single relay always did; RedisCluster shares it through Redis or Valkey. Nothing here is in the
 * durability path of a message: every method answers quickly, and when the store is down it
 * answers as the local default would.
 */

/** An access token as replicas share it (the same times the token manager schedules). */
export interface SharedAccessToken {
  accessToken: string;
  expiresAt: number;
  refreshAt: number;
}

/** A refresh token as the last replica to use it left it (rotated by Microsoft). */
export interface SharedRefreshToken {
  refreshToken: string;
  /** Digest of the config's refresh token it descends from: a new one in a config wins. */
  seed: string;
  updatedAt: string;
}

/** A replica as the registry shows it (the admin page, /readyz). */
export interface ReplicaInfo {
  name: string;
  version: string;
  /** Where its SMTP listener and HTTP endpoints are (as it sees them). */
  smtp: string;
  http: string;
  queued: number;
  lastSeen: string;
  /** No heartbeat for three intervals: stopped, or cut off from the store. */
  stale?: boolean;
}

/** An account held on one replica, so that all hold it (and show the same problem). */
export interface HeldAccount {
  account: string;
  reason: FailureReason;
  reply: string;
  hint?: string;
}

/** One of an account's upstream sessions, held until released (or until it expires, if its replica died). */
export interface SessionSlot {
  release(): Promise<void>;
}

export interface ClusterState {
  /** This replica's name (registry, logs). */
  readonly name: string;
  /** Whether upstream sessions are counted cluster-wide (each open connection holds a slot). */
  readonly sharesSessions: boolean;
  /**
   * The provider's pace for the whole cluster (`limits`: messages a minute and a day, recipients a
   * day): 0 when a message of this many transactions and recipients may go now (it is counted),
   * else how many milliseconds until it may (nothing counted). Always 0 for the embedded default,
   * whose pacing stays in the process.
   */
  pace(account: string, limits: SendingLimits, transactions: number, recipients: number): Promise<number>;
  /**
   * The provider asked for no sends from this account for `ms` (HTTP 429/503 Retry-After): pace()
   * answers at least the rest of it on every replica. The embedded default keeps it in the process.
   */
  pauseSending(account: string, ms: number): Promise<void>;
  /**
   * Takes one of `limit` upstream sessions of this account; undefined while all are taken elsewhere
   * or others waited longer. `waiter` names one wait (the same on each ask), so sessions are served
   * in order; with `queue` false a refusal does not put it in line (one ask, by a pool that has a
   * connection already).
   */
  takeSession(account: string, limit: number, waiter: string, queue?: boolean): Promise<SessionSlot | undefined>;
  /** Whether another replica waits for one of this account's sessions (then an idle connection gives its up). */
  sessionsWanted(account: string): Promise<boolean>;
  /** Whether the shared store is reachable (always, for the embedded default). */
  readonly up: boolean;
  /** A token another replica obtained and that is still fresh; undefined when there is none (or no store). */
  sharedAccessToken(account: string): Promise<SharedAccessToken | undefined>;
  shareAccessToken(account: string, token: SharedAccessToken): Promise<void>;
  sharedRefreshToken(account: string): Promise<SharedRefreshToken | undefined>;
  shareRefreshToken(account: string, token: SharedRefreshToken): Promise<void>;
  /**
   * Asks to be the one replica refreshing this account's token for up to ttlMs. False while
   * another replica holds it (it will share the result); true when the store is down.
   */
  takeRefreshLease(account: string, ttlMs: number): Promise<boolean>;
  releaseRefreshLease(account: string): Promise<void>;
  /**
   * True for the first replica to claim this key within ttlMs (a notification about a problem
   * every replica sees goes out once); true when the store is down.
   */
  claimOnce(key: string, ttlMs: number): Promise<boolean>;
  /** Publishes this replica's heartbeat every few seconds until close(). */
  startHeartbeat(describe: () => Omit<ReplicaInfo, 'lastSeen' | 'stale'>): void;
  /** Every replica that sent a heartbeat lately (this one alone without a store). */
  replicas(): Promise<ReplicaInfo[]>;
  /** Tells the other replicas that an account's queue is held here (a sign-in needed, say), with the provider's words. */
  announceHeld(event: HeldAccount): void;
  /** Calls back when another replica holds an account. */
  onHeld(listener: (event: HeldAccount) => void): void;
  /** Tells the other replicas of a failed device login here (client address and user name only). */
  announceAuthFailure(ip: string, username: string): void;
  /** Calls back for each failed device login another replica announces. */
  onAuthFailure(listener: (ip: string, username: string) => void): void;
  /** Tells the other replicas that an administrator lifted a lockout here (they counted the same failures). */
  announceUnlock(scope: 'ip' | 'user', key: string): void;
  /** Calls back when another replica announces a lifted lockout. */
  onUnlock(listener: (scope: 'ip' | 'user', key: string) => void): void;
  /** Tells the other replicas that an account was just signed in here (its refresh token is shared). */
  announceSignIn(account: string): Promise<void>;
  /** Calls back when another replica announces a sign-in. */
  onSignIn(listener: (account: string) => void): void;
  close(): Promise<void>;
}

/**
 * What an account's way out needs of the shared state: the provider's pace, its Retry-After pauses
 * and its session slots (a cluster's, or those the worker processes of one host share).
 */
export type UpstreamShare = Pick<ClusterState, 'sharesSessions' | 'pace' | 'pauseSending' | 'takeSession' | 'sessionsWanted'>;

/** A slot that holds nothing: the local pool (upstream.maxConnections) is the limit. */
export const LOCAL_SLOT: SessionSlot = { release: async () => undefined };

/** One relay on its own: nothing is shared, every lease is granted. */
export class LocalCluster implements ClusterState {
  readonly up = true;
  readonly sharesSessions = false;
  private describe?: () => Omit<ReplicaInfo, 'lastSeen' | 'stale'>;

  constructor(readonly name: string) {}

  startHeartbeat(describe: () => Omit<ReplicaInfo, 'lastSeen' | 'stale'>): void {
    this.describe = describe;
  }

  async claimOnce(): Promise<boolean> {
    return true;
  }

  async replicas(): Promise<ReplicaInfo[]> {
    return this.describe ? [{ ...this.describe(), lastSeen: new Date().toISOString() }] : [];
  }

  async sharedAccessToken(): Promise<undefined> {
    return undefined;
  }

  async shareAccessToken(): Promise<void> {}

  async sharedRefreshToken(): Promise<undefined> {
    return undefined;
  }

  async shareRefreshToken(): Promise<void> {}

  async takeRefreshLease(): Promise<boolean> {
    return true;
  }

  async takeSession(): Promise<SessionSlot> {
    return LOCAL_SLOT;
  }

  async sessionsWanted(): Promise<boolean> {
    return false;
  }

  async pace(): Promise<number> {
    return 0;
  }

  async pauseSending(): Promise<void> {}

  async releaseRefreshLease(): Promise<void> {}

  async announceSignIn(): Promise<void> {}

  onSignIn(): void {}

  announceHeld(): void {}

  onHeld(): void {}

  announceAuthFailure(): void {}

  onAuthFailure(): void {}

  announceUnlock(): void {}

  onUnlock(): void {}

  async close(): Promise<void> {}
}
