import { readFile } from 'node:fs/promises';
import { sign } from 'node:crypto';
import type { ResolvedAccount } from '../config/index.js';
import { TokenError } from './token-error.js';

interface ServiceAccountKey {
  client_email: string;
  private_key: string;
}

const base64url = (value: string | Buffer) => Buffer.from(value).toString('base64url');

/**
 * The signed JWT of Google's service-account grant (RFC 7523): the service account vouches for
 * the mailbox (`sub`) under domain-wide delegation, so no user ever has to consent.
 */
export async function serviceAccountAssertion(account: ResolvedAccount, now = Date.now()): Promise<string> {
  let key: ServiceAccountKey;
  try {
    key = JSON.parse(await readFile(account.serviceAccountKeyFile ?? '', 'utf8')) as ServiceAccountKey;
  } catch (error) {
    throw new TokenError('reauth', `cannot read the service account key ${account.serviceAccountKeyFile}: ${(error as Error).message}`, 'download the JSON key of the service account and point serviceAccountKeyFile at it');
  }
  const issuedAt = Math.floor(now / 1000);
  const header = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const claims = base64url(
    JSON.stringify({ iss: key.client_email, sub: account.mailbox, scope: account.scopes, aud: account.tokenUrl, iat: issuedAt, exp: issuedAt + 3600 }),
  );
  const signature = sign('RSA-SHA256', Buffer.from(`${header}.${claims}`), key.private_key);
  return `${header}.${claims}.${base64url(signature)}`;
}
