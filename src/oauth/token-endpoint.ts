import type { ResolvedAccount } from '../config/index.js';
import { clientAssertion } from './client-assertion.js';

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
  const assertion = clientAssertion(account);
  if (assertion || !account.clientSecret) return postForm(account.tokenUrl, new URLSearchParams({ client_id: account.clientId, ...assertion, ...fields }));
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

/** A token endpoint's answer is a small JSON object; anything larger is not read. */
const MAX_RESPONSE_BYTES = 256 * 1024;

/**
 * POSTs a form to a token endpoint. A redirect is not followed (it would carry the client secret
 * elsewhere): it comes back as an error naming where it pointed.
 */
export async function postForm(url: string, form: URLSearchParams, headers: Record<string, string> = {}): Promise<EndpointReply> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: form,
    redirect: 'manual',
    signal: AbortSignal.timeout(15_000),
  });
  if (response.status >= 300 && response.status < 400) {
    await response.body?.cancel();
    const location = response.headers.get('location') ?? '(no location)';
    return { status: response.status, body: { error: 'redirected', error_description: `the token endpoint answered with a redirect to ${location}; set tokenUrl to the final address` } };
  }
  return { status: response.status, body: await readJsonBody(response) };
}

async function readJsonBody(response: Response): Promise<Record<string, unknown>> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.length;
    if (size > MAX_RESPONSE_BYTES) {
      await response.body?.cancel().catch(() => undefined);
      return { error: 'response_too_large', error_description: `the token endpoint sent more than ${MAX_RESPONSE_BYTES} bytes` };
    }
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}
