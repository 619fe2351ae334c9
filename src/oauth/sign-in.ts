import { createHash, randomBytes } from 'node:crypto';
import type { ResolvedAccount } from '../config/index.js';
import { fingerprint, type TokenStore } from './token-store.js';
import { describeOAuthError as describe, postForm, requestToken } from './token-endpoint.js';

/** A sign-in that did not produce a refresh token, with what the person should do. */
export class SignInError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'SignInError';
  }
}

export interface DeviceCodePrompt {
  verificationUri: string;
  userCode: string;
  expiresInSeconds: number;
  /** The provider's own sentence ("To sign in, use a web browser to open ..."), when it sends one. */
  message?: string;
}

export interface PendingAuthorization {
  url: string;
  state: string;
  verifier: string;
  redirectUri: string;
}

function refreshTokenFrom(body: Record<string, unknown>, account: ResolvedAccount): string {
  if (typeof body.refresh_token === 'string') return body.refresh_token;
  throw new SignInError(
    'the provider signed you in but returned no refresh token',
    account.provider === 'google' ? 'the consent screen must ask for offline access (prompt=consent)' : 'add offline_access to the scopes',
  );
}

/**
 * OAuth 2.0 device authorization grant (RFC 8628): shows a code to enter at the provider and
 * polls, at the pace the provider asks for, until the person signed in, declined or let it expire.
 */
export async function deviceCodeSignIn(account: ResolvedAccount, show: (prompt: DeviceCodePrompt) => void, wait = sleep): Promise<string> {
  if (!account.deviceCodeUrl) throw new SignInError(`accounts.${account.name} has no deviceCodeUrl`, 'use the browser sign-in, or set deviceCodeUrl');
  const start = await postForm(account.deviceCodeUrl, new URLSearchParams({ client_id: account.clientId, scope: account.scopes ?? '' }));
  if (start.status !== 200 || typeof start.body.device_code !== 'string') {
    throw new SignInError(`the device code request failed: ${describe(start.body)}`, 'check clientId, tenant and scopes; the app must allow public client flows');
  }
  const deviceCode = start.body.device_code;
  let interval = Number(start.body.interval) || 5;
  const expiresIn = Number(start.body.expires_in) || 900;
  show({
    verificationUri: String(start.body.verification_uri ?? start.body.verification_url ?? ''),
    userCode: String(start.body.user_code ?? ''),
    expiresInSeconds: expiresIn,
    message: typeof start.body.message === 'string' ? start.body.message : undefined,
  });
  const deadline = Date.now() + expiresIn * 1000;
  while (Date.now() < deadline) {
    await wait(interval * 1000);
    const poll = await requestToken(account, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: deviceCode });
    if (poll.status === 200) return refreshTokenFrom(poll.body, account);
    switch (poll.body.error) {
      case 'authorization_pending':
        continue;
      case 'slow_down':
        interval += 5; // RFC 8628 §3.5
        continue;
      case 'expired_token':
        throw new SignInError('the code expired before it was entered', 'run login again and enter the code within the time shown');
      case 'access_denied':
      case 'authorization_declined':
        throw new SignInError('the sign-in was declined', 'run login again and accept the permissions (or ask an admin to grant consent)');
      default:
        throw new SignInError(`the sign-in failed: ${describe(poll.body)}`, 'check the app registration and the account settings');
    }
  }
  throw new SignInError('the code expired before it was entered', 'run login again and enter the code within the time shown');
}

/** The authorization-code flow with PKCE (RFC 7636): where to send the browser, and what to check on return. */
export function startAuthorization(account: ResolvedAccount, redirectUri: string): PendingAuthorization {
  if (!account.authorizeUrl) throw new SignInError(`accounts.${account.name} has no authorizeUrl`, 'set authorizeUrl (provider custom)');
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const url = new URL(account.authorizeUrl);
  const params = {
    client_id: account.clientId,
    response_type: 'code',
    redirect_uri: redirectUri,
    scope: account.scopes ?? '',
    state,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    login_hint: account.mailbox,
    ...account.authorizeParams,
  };
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return { url: url.toString(), state, verifier, redirectUri };
}

export async function redeemAuthorizationCode(account: ResolvedAccount, pending: PendingAuthorization, code: string): Promise<string> {
  const result = await requestToken(account, { grant_type: 'authorization_code', code, redirect_uri: pending.redirectUri, code_verifier: pending.verifier });
  if (result.status !== 200) throw new SignInError(`the provider did not accept the sign-in: ${describe(result.body)}`, 'try again; the redirect URI must be registered on the app');
  return refreshTokenFrom(result.body, account);
}

/** Keeps a signed-in refresh token where the relay looks first (it wins over the config's). */
export async function saveSignIn(store: TokenStore, account: ResolvedAccount, refreshToken: string): Promise<void> {
  const now = new Date().toISOString();
  await store.write(account.name, { refreshToken, seed: account.refreshToken ? fingerprint(account.refreshToken) : '', updatedAt: now, lastUsedAt: now });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
