import { readFileSync } from 'node:fs';
import { X509Certificate, constants, createHash, createPrivateKey, randomUUID, sign } from 'node:crypto';
import type { ResolvedAccount } from '../config/index.js';
import { TokenError } from './token-error.js';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Microsoft wants the assertion short-lived: 5 to 10 minutes. */
const LIFETIME_S = 5 * 60;

/**
 * RFC 7523 client authentication instead of a client secret, when the account has one:
 * - a certificate: a JWT signed with its key, PS256 with the `x5t#S256` thumbprint header, as
 *   Microsoft's identity platform documents (iss = sub = client id, aud = the token endpoint);
 * - workload identity federation: a JWT the platform writes and rotates (an AKS projected
 *   service-account token, any trusted OIDC issuer), read afresh for every token request.
 * Nothing secret is stored by the relay in either case.
 */
export function clientAssertion(account: ResolvedAccount): Record<string, string> | undefined {
  if (!account.clientAssertionFile && !account.clientCertificateFile) return undefined;
  try {
    const assertion = account.clientAssertionFile ? readFileSync(account.clientAssertionFile, 'utf8').trim() : certificateAssertion(account);
    return { client_assertion_type: ASSERTION_TYPE, client_assertion: assertion };
  } catch (error) {
    throw new TokenError('reauth', `cannot make the client assertion: ${(error as Error).message}`, 'check clientCertificateFile / clientKeyFile (PEM, readable by the relay) or clientAssertionFile');
  }
}

function certificateAssertion(account: ResolvedAccount): string {
  const certificatePem = readFileSync(account.clientCertificateFile!, 'utf8');
  const certificate = new X509Certificate(certificatePem);
  const key = createPrivateKey(account.clientKeyFile ? readFileSync(account.clientKeyFile) : certificatePem);
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'PS256', typ: 'JWT', 'x5t#S256': createHash('sha256').update(certificate.raw).digest('base64url') };
  const claims = { aud: account.tokenUrl, iss: account.clientId, sub: account.clientId, jti: randomUUID(), nbf: now, iat: now, exp: now + LIFETIME_S };
  const signingInput = `${encode(header)}.${encode(claims)}`;
  const signature = sign('sha256', Buffer.from(signingInput), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  return `${signingInput}.${signature.toString('base64url')}`;
}

function encode(part: object): string {
  return Buffer.from(JSON.stringify(part)).toString('base64url');
}
