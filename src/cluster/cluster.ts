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

export interface ClusterState {
  /** This replica's name (registry, logs). */
  readonly name: string;
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
  close(): Promise<void>;
}

/** One relay on its own: nothing is shared, every lease is granted. */
export class LocalCluster implements ClusterState {
  readonly up = true;

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

  async releaseRefreshLease(): Promise<void> {}

  async close(): Promise<void> {}
}
