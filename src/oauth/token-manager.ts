import type { Logger } from '../log.js';
import type { Metrics, TokenRefreshResult } from '../metrics/metrics.js';
import type { ResolvedAccount } from '../config/index.js';
import type { ClusterState, SharedRefreshToken } from '../cluster-state/index.js';
import { fingerprint, TokenStoreError, type TokenStore } from './token-store.js';
import { serviceAccountAssertion } from './service-account.js';
import { TokenError } from './token-error.js';
import { unusedExpiry } from './inactivity.js';
import { describeOAuthError, postForm, requestToken, type EndpointReply } from './token-endpoint.js';

export { TokenError };

export type AccountState = 'starting' | 'ready' | 'needs_reauth' | 'unavailable';

export interface AccountTokenStatus {
  state: AccountState;
  flow: ResolvedAccount['flow'];
  tokenExpiresAt?: string;
  lastRefreshAt?: string;
  /** The provider's own words (error_description) or the network error. */
  lastError?: string;
  /** What the operator should do about lastError. */
  hint?: string;
  /** When the provider last accepted the refresh token, and when it dies if unused (Microsoft: 90 days). */
  refreshTokenLastUsedAt?: string;
  refreshTokenUnusedExpiry?: string;
  /** When the provider said the refresh token dies (Google apps in "Testing"). */
  refreshTokenExpiresAt?: string;
  warning?: string;
}

interface CachedToken {
  accessToken: string;
  expiresAt: number;
  refreshAt: number;
}

/** OAuth errors after which only a human can help; anything else 4xx is a config problem, too. */
const HUMAN_ERRORS: Record<string, string> = {
  invalid_grant: 'the refresh token was revoked, expired or unused too long: sign in again and put the new refresh token in the config (or token store)',
  invalid_client: 'the client id or secret is wrong or the secret expired: create a new client secret and update clientSecret',
  unauthorized_client: 'the app is not allowed this grant: check the app registration (public client flows, API permissions, admin consent)',
  invalid_scope: 'the scopes are not granted to the app: add the SMTP permission and grant consent',
};

const TEN_MINUTES = 10 * 60 * 1000;
const DEFAULT_LIFETIME_S = 3600;
/** After a rejection, the same refresh token is tried again no sooner than this. */
const REAUTH_RECHECK_MS = 5 * 60 * 1000;
/** How long one replica may hold the cluster's refresh lease (a crashed holder frees it by then). */
const LEASE_TTL_MS = 30_000;
/** How long the others wait for the holder's token before asking the endpoint themselves. */
const LEASE_WAIT_MS = 15_000;
const LEASE_POLL_MS = 100;

export interface TokenManagerOptions {
  store: TokenStore;
  /** Replicas share tokens through it (one token request per expiry for the whole cluster). */
  cluster: ClusterState;
  metrics: Metrics;
  logger: Logger;
  retries: number;
  retryDelayMs: number;
}

/**
 * Owns one account's access token: cached in memory, refreshed ahead of expiry, one request at a
 * time however many sends ask, rotated refresh tokens persisted, and the account's health kept
 * for /readyz and the metrics.
 */
/** What a sender needs of an account's tokens: a fresh access token, and a way to say one was refused. */
export interface AccessTokens {
  getToken(): Promise<string>;
  /** The provider refused this token: the next getToken() must not return it. */
  invalidate(accessToken: string): void;
}

export class TokenManager implements AccessTokens {
  private current?: CachedToken;
  private inflight?: Promise<CachedToken>;
  private state: AccountState = 'starting';
  private lastRefreshAt?: number;
  private lastError?: string;
  private hint?: string;
  private rejected?: { refreshToken?: string; at: number; error: TokenError };
  private refreshTokenLastUsedAt?: number;
  /** The refresh token of the last successful request (rotated, as stored): a different one in the store is a new sign-in. */
  private refreshTokenInUse?: string;
  private refreshTokenExpiresAt?: number;
  private storeProblemLogged = false;
  /** The last token the upstream refused: not taken from the cluster again. */
  private refusedToken?: string;
  private keepAlive?: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(
    private accountValue: ResolvedAccount,
    private readonly options: TokenManagerOptions,
  ) {
    this.log = options.logger.child({ account: accountValue.name });
    options.metrics.accountReady.set({ account: accountValue.name }, 0);
    options.metrics.clusterTokenShares.inc({ account: accountValue.name }, 0);
  }

  get account(): ResolvedAccount {
    return this.accountValue;
  }

  /** New credentials from a reloaded config: the next token request uses them. */
  updateCredentials(account: ResolvedAccount): void {
    const changed = ['clientId', 'clientSecret', 'refreshToken', 'tokenUrl', 'scopes'] as const;
    if (changed.every((key) => account[key] === this.accountValue[key])) return;
    this.accountValue = { ...this.accountValue, ...Object.fromEntries(changed.map((key) => [key, account[key]])) };
    this.current = undefined;
    this.rejected = undefined;
    this.log.info('account credentials changed; a new token will be requested');
  }

  /** A token good for at least the next few minutes. */
  async getToken(): Promise<string> {
    const cached = this.current;
    if (cached && Date.now() < cached.refreshAt) return cached.accessToken;
    try {
      return (await this.refresh()).accessToken;
    } catch (error) {
      // Refreshing early leaves room: a still-valid token beats deferring the message.
      if (cached && Date.now() < cached.expiresAt - 60_000) {
        this.log.warn({ err: (error as Error).message }, 'token refresh failed; using the current token until it expires');
        return cached.accessToken;
      }
      throw error;
    }
  }

  /** The upstream refused this token: forget it so the next send fetches a new one. */
  invalidate(accessToken: string): void {
    this.refusedToken = accessToken;
    if (this.current?.accessToken === accessToken) this.current = undefined;
  }

  /** Requests a new access token now; concurrent callers share one request. */
  refresh(): Promise<CachedToken> {
    this.inflight ??= this.refreshOnceForCluster().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /**
   * After a sign-in. Here (`local`: the token store changed): when it holds a refresh token other
   * than the one in use, a token is requested with it now and shared, though the current token may
   * still look good (the old refresh token may be revoked). Announced by another replica: an
   * account without a token takes the one that replica shared. True when a token was taken.
   */
  async takeSignIn(local: boolean): Promise<boolean> {
    // A request under way takes the newest refresh token by itself; what it took is seen after it.
    await this.inflight?.catch(() => undefined);
    if (this.state !== 'ready') {
      await this.refresh();
      return true;
    }
    if (!local || this.account.flow !== 'refresh_token' || (await this.currentRefreshToken()) === this.refreshTokenInUse) return false;
    this.inflight ??= (async () => {
      const token = await this.requestWithRetries();
      await this.options.cluster.shareAccessToken(this.account.name, token);
      return token;
    })().finally(() => (this.inflight = undefined));
    await this.inflight;
    return true;
  }

  /** Refreshes on a timer, mail or not: an unused refresh token dies (Microsoft: 90 days). */
  startKeepAlive(intervalMs: number): void {
    this.stopKeepAlive();
    const tick = () => void this.refresh().catch(() => undefined);
    tick();
    this.keepAlive = setInterval(tick, intervalMs).unref();
  }

  stopKeepAlive(): void {
    clearInterval(this.keepAlive);
  }

  status(): AccountTokenStatus {
    const lastUsed = this.refreshTokenLastUsedAt;
    const expiry = unusedExpiry(this.account.provider, lastUsed);
    return {
      state: this.state,
      flow: this.account.flow,
      tokenExpiresAt: this.current && new Date(this.current.expiresAt).toISOString(),
      lastRefreshAt: this.lastRefreshAt ? new Date(this.lastRefreshAt).toISOString() : undefined,
      lastError: this.lastError,
      hint: this.hint,
      refreshTokenLastUsedAt: lastUsed ? new Date(lastUsed).toISOString() : undefined,
      refreshTokenUnusedExpiry: expiry && new Date(expiry.at).toISOString(),
      refreshTokenExpiresAt: this.refreshTokenExpiresAt ? new Date(this.refreshTokenExpiresAt).toISOString() : undefined,
      warning: this.refreshTokenExpiresAt
        ? `the refresh token dies on ${new Date(this.refreshTokenExpiresAt).toISOString().slice(0, 10)}: the Google OAuth app is in "Testing"; publish its consent screen, then sign in again`
        : expiry?.warning,
    };
  }


  /**
   * One token request per expiry for the whole cluster: a fresh token another replica shared is
   * taken as it is; otherwise the replica holding the refresh lease asks the endpoint and shares
   * the result while the others wait for it — briefly: a stuck holder does not stop them for long.
   */
  private async refreshOnceForCluster(): Promise<CachedToken> {
    const { cluster } = this.options;
    const name = this.account.name;
    const giveUpAt = Date.now() + LEASE_WAIT_MS;
    for (;;) {
      const shared = await this.usableSharedToken();
      if (shared) return shared;
      if (await cluster.takeRefreshLease(name, LEASE_TTL_MS)) {
        try {
          // The previous holder may have shared its token just before this lease was taken.
          const justShared = await this.usableSharedToken();
          if (justShared) return justShared;
          const token = await this.requestWithRetries();
          await cluster.shareAccessToken(name, token);
          return token;
        } finally {
          await cluster.releaseRefreshLease(name);
        }
      }
      if (Date.now() > giveUpAt) return this.requestWithRetries();
      await sleep(LEASE_POLL_MS);
    }
  }

  private async usableSharedToken(): Promise<CachedToken | undefined> {
    const shared = await this.options.cluster.sharedAccessToken(this.account.name);
    if (!shared || shared.accessToken === this.refusedToken) return undefined;
    this.options.metrics.clusterTokenShares.inc({ account: this.account.name });
    this.recordSuccess(shared, 'shared');
    return shared;
  }

  private async requestWithRetries(): Promise<CachedToken> {
    const refreshToken = this.account.flow === 'refresh_token' ? await this.currentRefreshToken() : undefined;
    if (this.account.flow === 'refresh_token' && !refreshToken) {
      const error = new TokenError('reauth', 'no refresh token yet', `sign the account in: smtp-oauth-relay login ${this.account.name}, or Sign in on the admin page`);
      this.recordFailure(error, 'reauth_required');
      throw error;
    }
    const rejected = this.rejected;
    if (rejected && rejected.refreshToken === refreshToken && Date.now() - rejected.at < REAUTH_RECHECK_MS) {
      throw rejected.error;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await this.request(refreshToken);
        this.recordSuccess(token);
        return token;
      } catch (error) {
        const tokenError = error instanceof TokenError ? error : new TokenError('unavailable', `token endpoint unreachable: ${(error as Error).message}`);
        if (tokenError.kind === 'reauth') {
          this.recordFailure(tokenError, 'reauth_required');
          this.rejected = { refreshToken, at: Date.now(), error: tokenError };
          throw tokenError;
        }
        if (attempt >= this.options.retries) {
          this.recordFailure(tokenError, 'error');
          throw tokenError;
        }
        this.log.warn({ attempt: attempt + 1, err: tokenError.message }, 'token request failed; retrying');
        await sleep(this.options.retryDelayMs * 2 ** attempt);
      }
    }
  }

  private async request(refreshToken: string | undefined): Promise<CachedToken> {
    const { status, body } = await this.grant(refreshToken);
    if (status >= 400 || typeof body.access_token !== 'string') {
      throw describeTokenFailure(status, body);
    }
    if (refreshToken) {
      this.noteRefreshTokenLifetime(body.refresh_token_expires_in);
      // Rotated (Microsoft) or not (Google): either way its last use is worth keeping.
      this.refreshTokenLastUsedAt = Date.now();
      this.publishRefreshTokenExpiry();
      await this.persistRefreshToken(typeof body.refresh_token === 'string' ? body.refresh_token : refreshToken);
    }
    return schedule(body.access_token, Number(body.expires_in) || DEFAULT_LIFETIME_S);
  }

  private async grant(refreshToken: string | undefined): Promise<EndpointReply> {
    const account = this.account;
    if (account.flow === 'service_account') {
      // Google Workspace domain-wide delegation: a signed JWT stands in for the user's consent.
      const form = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: await serviceAccountAssertion(account) });
      return postForm(account.tokenUrl, form);
    }
    const scope: Record<string, string> = account.scopes ? { scope: account.scopes } : {};
    return requestToken(account, refreshToken ? { grant_type: 'refresh_token', refresh_token: refreshToken, ...scope } : { grant_type: 'client_credentials', ...scope });
  }

  /**
   * A rotated or signed-in token wins over the config's, unless the config's was replaced since:
   * the newer of the cluster's copy (the last replica to use it) and this replica's store.
   */
  private async currentRefreshToken(): Promise<string | undefined> {
    const configured = this.account.refreshToken;
    const shared = await this.options.cluster.sharedRefreshToken(this.account.name);
    const stored = await this.options.store.read(this.account.name).catch((error: Error) => {
      if (!this.storeProblemLogged) {
        this.log.error({ err: error.message, hint: error instanceof TokenStoreError ? error.hint : undefined }, 'cannot read the token store; using the configured refresh token');
        this.storeProblemLogged = true;
      }
      return undefined;
    });
    const [newest] = [shared, stored]
      .filter((token): token is SharedRefreshToken => token !== undefined && (!configured || token.seed === fingerprint(configured)))
      .sort((a, b) => b.updatedAt.localeCompare(a.updatedAt));
    if (!newest) return configured;
    if (newest === stored && stored.lastUsedAt) this.refreshTokenLastUsedAt ??= Date.parse(stored.lastUsedAt);
    return newest.refreshToken;
  }

  private async persistRefreshToken(refreshToken: string): Promise<void> {
    this.refreshTokenInUse = refreshToken;
    const configured = this.account.refreshToken;
    try {
      const now = new Date().toISOString();
      const seed = configured ? fingerprint(configured) : '';
      await this.options.cluster.shareRefreshToken(this.account.name, { refreshToken, seed, updatedAt: now });
      await this.options.store.write(this.account.name, { refreshToken, seed, updatedAt: now, lastUsedAt: now });
    } catch (error) {
      // The previous refresh token stays valid at the providers, so mail keeps flowing.
      this.log.error({ err: (error as Error).message }, 'cannot save the rotated refresh token');
    }
  }

  /**
   * Google answers `refresh_token_expires_in` when the app's consent screen is in "Testing": the
   * refresh token dies after 7 days whatever the relay does. Said loudly, once per token, and exposed.
   */
  private noteRefreshTokenLifetime(seconds: unknown): void {
    if (typeof seconds !== 'number' && typeof seconds !== 'string') return;
    const expiresAt = Date.now() + Number(seconds) * 1000;
    if (!Number.isFinite(expiresAt)) return;
    const known = this.refreshTokenExpiresAt !== undefined;
    this.refreshTokenExpiresAt = expiresAt;
    if (!known) {
      this.log.error(
        { refreshTokenExpiresAt: new Date(expiresAt).toISOString() },
        'the refresh token will die on that date whatever the relay does: the Google OAuth app is in "Testing" (7-day tokens); publish its consent screen ("In production"), then sign in again',
      );
    }
  }

  /**
   * The day the refresh token dies, for the alert that warns two weeks ahead: the earlier of its
   * announced lifetime (Google apps in Testing) and the provider's limit for an unused token.
   */
  private publishRefreshTokenExpiry(): void {
    const unused = unusedExpiry(this.account.provider, this.refreshTokenLastUsedAt)?.at ?? Infinity;
    const at = Math.min(unused, this.refreshTokenExpiresAt ?? Infinity);
    if (at < Infinity) this.options.metrics.credentialExpiry.set({ account: this.account.name, credential: 'refresh_token' }, at / 1000);
  }

  /** A token obtained here ('refreshed') or taken from another replica ('shared'). */
  private recordSuccess(token: CachedToken, how: 'refreshed' | 'shared' = 'refreshed'): void {
    const wasState = this.state;
    this.current = token;
    this.state = 'ready';
    this.lastRefreshAt = Date.now();
    this.lastError = this.hint = this.rejected = undefined;
    const { metrics } = this.options;
    const account = this.account.name;
    if (how === 'refreshed') metrics.tokenRefreshes.inc({ account, result: 'success' });
    metrics.tokenExpiry.set({ account }, token.expiresAt / 1000);
    metrics.tokenLastRefresh.set({ account }, this.lastRefreshAt / 1000);
    metrics.accountReady.set({ account }, 1);
    this.log[wasState === 'ready' ? 'debug' : 'info']({ expiresAt: new Date(token.expiresAt).toISOString(), from: how === 'shared' ? 'cluster' : undefined }, 'access token obtained');
  }

  private recordFailure(error: TokenError, result: TokenRefreshResult): void {
    this.state = error.kind === 'reauth' ? 'needs_reauth' : 'unavailable';
    this.lastError = error.message;
    this.hint = error.hint;
    const account = this.account.name;
    this.options.metrics.tokenRefreshes.inc({ account, result });
    if (!this.current || Date.now() >= this.current.expiresAt) this.options.metrics.accountReady.set({ account }, 0);
    this.log.error({ err: error.message, hint: error.hint, state: this.state }, 'cannot obtain an access token');
  }
}

function schedule(accessToken: string, lifetimeSeconds: number): CachedToken {
  const lifetime = lifetimeSeconds * 1000;
  const now = Date.now();
  // Exchange's high-volume endpoints refuse tokens about to expire (501 5.5.127): renew 10 minutes
  // early, or halfway through a short-lived token.
  const margin = lifetime >= 2 * TEN_MINUTES ? TEN_MINUTES : lifetime / 2;
  return { accessToken, expiresAt: now + lifetime, refreshAt: now + lifetime - margin };
}

function describeTokenFailure(status: number, body: Record<string, unknown>): TokenError {
  const code = typeof body.error === 'string' ? body.error : undefined;
  const text = `token endpoint answered HTTP ${status}${code || body.error_description ? ` ${describeOAuthError(body)}` : ''}`;
  const transient = status >= 500 || status === 429 || status === 408 || (status < 400 && !code);
  if (transient) return new TokenError('unavailable', text);
  return new TokenError('reauth', text, (code && HUMAN_ERRORS[code]) || 'check the account settings (clientId, tenant, scopes, tokenUrl)');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
