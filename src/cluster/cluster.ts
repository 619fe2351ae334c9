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

/** One of an account's upstream sessions, held until released (or until it expires, if its replica died). */
export interface SessionSlot {
  release(): Promise<void>;
}

export interface ClusterState {
  /** This replica's name (registry, logs). */
  readonly name: string;
  /**
   * Whether upstream sessions are counted cluster-wide. Then each send holds a slot and its own
   * connection (a pooled idle connection would count at the provider without holding a slot).
   */
  readonly sharesSessions: boolean;
  /** Takes one of `limit` upstream sessions of this account; undefined while all are taken elsewhere. */
  takeSession(account: string, limit: number): Promise<SessionSlot | undefined>;
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
  /** Tells the other replicas that an account was just signed in here (its refresh token is shared). */
  announceSignIn(account: string): Promise<void>;
  /** Calls back when another replica announces a sign-in. */
  onSignIn(listener: (account: string) => void): void;
  close(): Promise<void>;
}

/** A slot that holds nothing: the local pool (upstream.maxConnections) is the limit. */
export const LOCAL_SLOT: SessionSlot = { release: async () => undefined };

/** One relay on its own: nothing is shared, every lease is granted. */
export class LocalCluster implements ClusterState {
  readonly up = true;
  readonly sharesSessions = false;

  constructor(readonly name: string) {}

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

  async releaseRefreshLease(): Promise<void> {}

  async announceSignIn(): Promise<void> {}

  onSignIn(): void {}

  async close(): Promise<void> {}
}
