import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { ResolvedAccount } from '../config/index.js';

export type CredentialKind = 'client_secret' | 'certificate' | 'refresh_token';

export interface CredentialExpiry {
  credential: CredentialKind;
  expiresAt: number;
}

/** Warned about this long ahead (log, check, the admin page): time to renew it at the provider. */
export const CREDENTIAL_WARNING_MS = 30 * 86_400_000;

/**
 * When the account's credentials stop working: a certificate knows its own end; a client secret's
 * comes from `credentialExpiresAt` (the Entra portal shows it). A secret with no date is unknown.
 */
export function credentialExpiries(account: ResolvedAccount): CredentialExpiry[] {
  const expiries: CredentialExpiry[] = [];
  if (account.clientCertificateFile) {
    try {
      expiries.push({ credential: 'certificate', expiresAt: Date.parse(new X509Certificate(readFileSync(account.clientCertificateFile)).validTo) });
    } catch {
      // an unreadable certificate is reported when a token is requested, with the fix
    }
  }
  if (account.credentialExpiresAt) expiries.push({ credential: account.clientCertificateFile ? 'certificate' : 'client_secret', expiresAt: Date.parse(account.credentialExpiresAt) });
  return expiries;
}

/** "the certificate expires in 12 days (2026-12-05): ..." when within the warning time, else undefined. */
export function expiryWarning(account: ResolvedAccount, expiry: CredentialExpiry, now = Date.now()): string | undefined {
  const left = expiry.expiresAt - now;
  if (left > CREDENTIAL_WARNING_MS) return undefined;
  const when = new Date(expiry.expiresAt).toISOString().slice(0, 10);
  const fix: Record<CredentialKind, string> = {
    certificate: `make a new one (smtp-oauth-relay credentials create-certificate ${account.name}) and upload it in Entra (App registrations > Certificates & secrets)`,
    client_secret: 'create a new client secret in Entra (App registrations > Certificates & secrets), put it in the config and update credentialExpiresAt',
    refresh_token: "publish the Google OAuth consent screen (Testing apps get 7-day refresh tokens), then sign in again",
  };
  const state = left <= 0 ? `expired on ${when}` : `expires in ${Math.ceil(left / 86_400_000)} day(s) (${when})`;
  return `accounts.${account.name}: the ${expiry.credential.replace('_', ' ')} ${state}: ${fix[expiry.credential]}`;
}
