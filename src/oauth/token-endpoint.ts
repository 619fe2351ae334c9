import type { ResolvedAccount } from '../config/index.js';

export interface EndpointReply {
  status: number;
  body: Record<string, unknown>;
}

type ClientAuth = 'basic' | 'body';

/** Which client authentication a token endpoint took, so the second request needs no probe. */
const accepted = new Map<string, ClientAuth>();

/**
 * A request to the token endpoint with the client authenticated the way the server wants.
 * RFC 6749 §2.3.1: servers must accept HTTP Basic and may accept the secret in the body;
 * Microsoft and Google document the body. So: the configured way, else body for those two and
 * Basic for a custom server, and once the other way when the server answers invalid_client.
 */
export async function requestToken(account: ResolvedAccount, fields: Record<string, string>): Promise<EndpointReply> {
  if (!account.clientSecret) return postForm(account.tokenUrl, new URLSearchParams({ client_id: account.clientId, ...fields }));
  const key = `${account.tokenUrl} ${account.clientId}`;
  const first = account.clientAuth ?? accepted.get(key) ?? (account.provider === 'custom' ? 'basic' : 'body');
  const reply = await postWithClientAuth(account, fields, first);
  if (account.clientAuth || reply.body.error !== 'invalid_client') {
    if (reply.status < 400) accepted.set(key, first);
    return reply;
  }
  const second = first === 'basic' ? 'body' : 'basic';
  const retry = await postWithClientAuth(account, fields, second);
  if (retry.status < 400) accepted.set(key, second);
  return retry.body.error === 'invalid_client' ? reply : retry;
}

function postWithClientAuth(account: ResolvedAccount, fields: Record<string, string>, how: ClientAuth): Promise<EndpointReply> {
  if (how === 'body') {
    return postForm(account.tokenUrl, new URLSearchParams({ client_id: account.clientId, client_secret: account.clientSecret ?? '', ...fields }));
  }
  const credentials = `${encodeURIComponent(account.clientId)}:${encodeURIComponent(account.clientSecret ?? '')}`;
  return postForm(account.tokenUrl, new URLSearchParams(fields), { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` });
}

/** "invalid_grant: AADSTS70008: The provided ... " — the error code and the first line of its description. */
export function describeOAuthError(body: Record<string, unknown>): string {
  const description = typeof body.error_description === 'string' ? `: ${body.error_description.split(/\r?\n/)[0]}` : '';
  return `${typeof body.error === 'string' ? body.error : 'error'}${description}`;
}

export async function postForm(url: string, form: URLSearchParams, headers: Record<string, string> = {}): Promise<EndpointReply> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: form,
    signal: AbortSignal.timeout(15_000),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
}
