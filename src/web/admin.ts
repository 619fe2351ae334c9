import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { TokenStore } from '../oauth/index.js';
import { redeemAuthorizationCode, saveSignIn, startAuthorization, type PendingAuthorization } from '../oauth/sign-in.js';
import { summarizeMessage } from '../spool/index.js';
import { SmtpError } from '../reply.js';
import { AuthGuard, DeviceAuthenticator, type AuthGuardLimits } from '../listener/index.js';
import { NetworkList } from '../config/index.js';
import { isStatus, parseSince } from '../trace/index.js';
import { plainTextMessage } from '../util/rfc5322.js';
import type { Csrf, Notice } from './html.js';
import type { ConsoleSources } from './sources.js';
import { renderOverview } from './views/overview.js';
import { queryFromForm, renderMessage, renderMessages } from './views/messages.js';
import { renderQueue } from './views/queue.js';
import { renderDevices } from './views/devices.js';
import { renderSetup } from './views/setup.js';

export interface AdminOptions {
  sources: ConsoleSources;
  store: TokenStore;
  adminPasswordHash?: string;
  publicUrl?: string;
  /** Whether X-Forwarded-For / Forwarded from the connecting proxy name the real client. */
  /** The proxies believed about the client (X-Forwarded-For, Forwarded); none when empty. */
  trustProxy: NetworkList;
  /** Wrong admin passwords are locked out like wrong device passwords. */
  authFailures: AuthGuardLimits;
  logger: Logger;
}

const PENDING_LIMIT = 100;
const LOOPBACK = new NetworkList(['127.0.0.0/8', '::1']);
const PENDING_MS = 10 * 60 * 1000;
const SESSION_COOKIE = 'relay_session';
const READ_ONLY = 'This console is read-only: retry, delete, unlock, sign-in and test messages need http.adminPasswordHash (make one with `smtp-oauth-relay hash-password`; sign accounts in with `smtp-oauth-relay login ACCOUNT` meanwhile).';

/** Host names a browser on this machine uses; anything else must be http.publicUrl's host. */
const LOCAL_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

/** Queue ids as the spool makes them (and report ids after them): nothing else reaches a lookup. */
const MESSAGE_ID = '[0-9A-Za-z]{8,64}';
const GET_ROUTES = new RegExp(`^GET (/|/messages|/messages/${MESSAGE_ID}|/queue|/devices|/setup|/oauth/callback)$`);
const POST_ROUTES = new RegExp(`^POST (/test-message|/devices/unlock|/accounts/[^/]+/(sign-in|retry-all)|/queue/${MESSAGE_ID}/(retry|delete))$`);

/**
 * The operator console: Overview (accounts, their lifetimes, today's counts, a 24-hour chart,
 * replicas), Messages (the delivery log and each message's timeline), Queue (retry, delete),
 * Devices (logins, silence, lockouts) and Set up (what to enter at the provider, Sign in through
 * authorization code + PKCE, a test message). Without an admin password it answers only this
 * machine, because the same listener serves /metrics to the network.
 */
export class AdminPage {
  private readonly pending = new Map<string, { account: string; authorization: PendingAuthorization; at: number }>();
  private readonly csrfSecret = randomBytes(32);
  /** The admin password is checked like a device's: scrypt once, then remembered as an HMAC. */
  private readonly admin?: DeviceAuthenticator;
  private readonly guard: AuthGuard;
  private readonly allowedHosts: Set<string>;

  constructor(private readonly options: AdminOptions) {
    if (options.adminPasswordHash) this.admin = new DeviceAuthenticator([{ username: 'admin', passwordHash: options.adminPasswordHash, account: '' }]);
    this.guard = new AuthGuard(options.authFailures, (username) => username === 'admin');
    this.allowedHosts = new Set([...LOCAL_HOSTS, ...(options.publicUrl ? [new URL(options.publicUrl).hostname.toLowerCase()] : [])]);
  }

  /** Handles the admin routes; false for any other path. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const url = new URL(request.url ?? '/', 'http://relay');
    const route = `${request.method} ${url.pathname}`;
    if (!GET_ROUTES.test(route) && !POST_ROUTES.test(route)) return false;
    // Before anything else: a page reached under a foreign host name is a DNS-rebinding attempt.
    const host = this.trustedHost(request);
    if (!host) {
      sendText(response, 421, `This admin page answers only as ${[...this.allowedHosts].join(', ')}; set http.publicUrl to the address you use.`);
      return true;
    }
    if (!(await this.allowed(request, response))) return true;
    const session = this.session(request, response);
    if (request.method === 'POST') {
      if (!this.admin) {
        request.resume();
        sendText(response, 403, READ_ONLY);
        return true;
      }
      const form = new URLSearchParams(await readBody(request));
      if (!this.sameOrigin(request, session, form, response)) return true;
      await this.act(url.pathname, form, session, host, response);
    } else if (url.pathname === '/oauth/callback') await this.finishSignIn(url, session, response);
    else await this.show(url, session, response);
    return true;
  }

  /** GET: one of the console's pages. */
  private async show(url: URL, session: string, response: ServerResponse, given?: Notice): Promise<void> {
    // Without an admin password the console shows, and changes nothing: any local user could reach it.
    const csrf = this.admin ? this.csrfToken(session) : undefined;
    const notice = given ?? (this.admin ? undefined : { kind: 'error' as const, text: READ_ONLY });
    const { sources } = this.options;
    const path = url.pathname;
    if (path === '/messages') return sendPage(response, await this.messagesPage(url));
    if (path.startsWith('/messages/')) return sendPage(response, await this.messagePage(path.slice('/messages/'.length), csrf, notice));
    if (path === '/queue') return sendPage(response, await renderQueue(sources, csrf, notice));
    if (path === '/devices') return sendPage(response, await renderDevices(sources, csrf, notice));
    if (path === '/setup') return sendPage(response, renderSetup(sources, csrf, this.options.publicUrl, notice));
    const signedIn = url.searchParams.get('signed-in');
    const shown = notice ?? (signedIn ? { kind: 'ok' as const, text: `${signedIn} is signed in.` } : undefined);
    sendPage(response, await renderOverview(sources, csrf, shown));
  }

  private async messagesPage(url: URL): Promise<string> {
    const filters = Object.fromEntries([...url.searchParams].filter(([name]) => ['id', 'user', 'from', 'to', 'status', 'since', 'account'].includes(name)).map(([name, value]) => [name, value.slice(0, 200)]));
    const query = queryFromForm(filters, (text) => parseSince(text), isStatus);
    if (typeof query === 'string') return renderMessages({ messages: [], replicas: [] }, filters, query);
    return renderMessages(await this.options.sources.searchTrace(query), filters);
  }

  private async messagePage(id: string, csrf: Csrf, notice?: Notice): Promise<string> {
    const { sources } = this.options;
    const result = await sources.searchTrace({ id });
    const local = await sources.openSpooled(id);
    // Parsed here when this replica holds it; on another replica, its record and actions only.
    const spooled = local
      ? { message: local.message, summary: await summarizeMessage(local.open()).catch((error: Error) => error) }
      : (await sources.queue()).entries.filter((entry) => entry.record.id === id).map((message) => ({ message }))[0];
    // Asked on demand, when the page is opened (cached and rate-limited by the lookup).
    const received = result.messages[0]?.received;
    const provider = received?.messageId ? await sources.providerTrace(received.account, received.messageId, received.at) : undefined;
    return renderMessage(id, result.messages[0], result, spooled, csrf, notice, provider);
  }

  /** POST: an action, answered with the page it was taken from and what happened. */
  private async act(path: string, form: URLSearchParams, session: string, host: string, response: ServerResponse): Promise<void> {
    const { sources, logger } = this.options;
    const [, section, encoded, action] = path.split('/');
    const name = decoded(encoded);
    const back = (page: string, notice: Notice) => this.show(new URL(page, 'http://relay'), session, response, notice);
    if (path === '/test-message') return this.sendTestMessage(form, session, response);
    if (section === 'accounts' && action === 'sign-in') return this.beginSignIn(name, host, response);
    if (section === 'accounts' && action === 'retry-all') {
      if (!sources.accounts.has(name)) return back('/queue', { kind: 'error', text: `No account "${name}".` });
      const result = await sources.queueAction(undefined, { action: 'retry-all', account: name });
      logger.info({ account: name, result }, 'retry all requested on the console');
      return back('/queue', 'count' in result ? { kind: 'ok', text: `${result.count} message(s) of ${name} scheduled for delivery now.` } : { kind: 'error', text: errorOf(result) });
    }
    const replica = form.get('replica') ?? undefined;
    if (section === 'queue' && action === 'retry') {
      const result = await sources.queueAction(replica, { action: 'retry', id: name });
      logger.info({ id: name, replica, result }, 'retry requested on the console');
      const retried = 'count' in result && result.count > 0;
      return back('/queue', retried ? { kind: 'ok', text: `${name} scheduled for delivery now.` } : { kind: 'error', text: 'error' in result ? result.error : `${name} is not waiting in the queue (delivered, failed, being delivered, or unknown).` });
    }
    if (section === 'queue' && action === 'delete') {
      const result = await sources.queueAction(replica, { action: 'delete', id: name });
      logger.info({ id: name, replica, result }, 'delete requested on the console');
      const outcome = 'outcome' in result ? result.outcome : undefined;
      const notice: Notice = outcome === 'deleted' ? { kind: 'ok', text: `${name} deleted.` } : outcome === 'in_flight' ? { kind: 'error', text: `${name} is being delivered right now; try again in a moment.` } : { kind: 'error', text: 'error' in result ? result.error : `${name} is not in the spool.` };
      return back('/queue', notice);
    }
    // POST /devices/unlock
    const scope = form.get('scope');
    const key = form.get('key') ?? '';
    const lifted = (scope === 'ip' || scope === 'user') && sources.unlock(scope, key);
    return back('/devices', lifted ? { kind: 'ok', text: `${key} unlocked.` } : { kind: 'error', text: `${key} was not locked out.` });
  }

  /** The Host header, when it names this relay (publicUrl's host or a loopback name). */
  private trustedHost(request: IncomingMessage): string | undefined {
    const host = (request.headers.host ?? '').toLowerCase();
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0];
    return this.allowedHosts.has(name) ? host : undefined;
  }

  /**
   * The client's address. A request that came through a proxy (X-Forwarded-For, Forwarded) is the
   * proxy's client, known only when the proxy is one http.trustProxy lists; otherwise it
   * is nobody in particular, and never "this machine".
   */
  private client(request: IncomingMessage): string | undefined {
    const forwarded = request.headers['x-forwarded-for'] ?? request.headers.forwarded;
    if (forwarded === undefined) return request.socket.remoteAddress;
    if (!this.options.trustProxy.has(request.socket.remoteAddress ?? '')) return undefined;
    const xff = request.headers['x-forwarded-for'];
    const last = xff ? String(xff).split(',').at(-1) : /for="?\[?([^\]",;]+)/i.exec(String(request.headers.forwarded).split(',').at(-1) ?? '')?.[1];
    return last?.trim();
  }

  private async allowed(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const client = this.client(request);
    if (!this.admin) {
      if (client && LOOPBACK.has(client)) return true;
      sendText(response, 403, 'The admin page answers only on this machine. Set http.adminPasswordHash to use it from elsewhere.');
      return false;
    }
    const header = request.headers.authorization ?? '';
    if (header.startsWith('Basic ')) {
      const password = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':').slice(1).join(':');
      // Counted against the proxy-named client when the proxy is trusted, else against the connection's own address.
      const counted = client ?? request.socket.remoteAddress ?? 'unknown';
      const lockout = this.guard.lockout(counted, 'admin');
      const attempt = lockout ?? (this.admin.costsNothing('admin', password) ? undefined : this.guard.begin(counted, 'admin'));
      if (attempt && !('succeeded' in attempt)) {
        this.options.logger.warn({ clientIp: client }, 'admin login refused: locked out after failed attempts');
        response.writeHead(429, { 'retry-after': String(Math.ceil((attempt.until - Date.now()) / 1000)), 'content-type': 'text/plain' }).end('Too many wrong admin passwords; try again later.\n');
        return false;
      }
      const ok = await this.admin.verify('admin', password).catch(() => undefined);
      if (ok) {
        attempt?.succeeded();
        return true;
      }
      attempt?.failed();
      this.options.logger.warn({ clientIp: client }, 'wrong admin password');
    }
    response.writeHead(401, { 'www-authenticate': 'Basic realm="smtp-oauth-relay admin", charset="UTF-8"', 'content-type': 'text/plain' }).end('Admin password required.');
    return false;
  }

  /** The browser's session id (a cookie), made on first visit: CSRF tokens are bound to it. */
  private session(request: IncomingMessage, response: ServerResponse): string {
    const existing = /(?:^|;\s*)relay_session=([A-Za-z0-9_-]{43})(?:;|$)/.exec(request.headers.cookie ?? '')?.[1];
    if (existing) return existing;
    const id = randomBytes(32).toString('base64url');
    const secure = this.options.publicUrl?.startsWith('https:') ? '; Secure' : '';
    response.setHeader('set-cookie', `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Lax${secure}`);
    return id;
  }

  /** CSRF: a form must carry the token of this browser's session, and a browser's Origin must be this site. */
  private sameOrigin(request: IncomingMessage, session: string, form: URLSearchParams, response: ServerResponse): boolean {
    const origin = request.headers.origin;
    const token = Buffer.from(form.get('csrf') ?? '');
    const expected = Buffer.from(this.csrfToken(session));
    const originOk = !origin || (origin !== 'null' && URL.canParse(origin) && new URL(origin).host === request.headers.host);
    if (originOk && token.length === expected.length && timingSafeEqual(token, expected)) return true;
    sendText(response, 403, 'This form is stale or came from another site; reload the admin page and try again.');
    return false;
  }

  private csrfToken(session: string): string {
    return createHmac('sha256', this.csrfSecret).update(`csrf\0${session}`).digest('base64url');
  }

  /** @param host the request's Host, already checked against the allowed names. */
  private beginSignIn(name: string, host: string, response: ServerResponse): void {
    const entry = this.options.sources.accounts.get(name);
    if (!entry?.account.authorizeUrl) return sendText(response, 404, `No account "${name}" that can sign in here.`);
    const base = this.options.publicUrl ?? `http://${host}`;
    const authorization = startAuthorization(entry.account, `${base.replace(/\/$/, '')}/oauth/callback`);
    const now = Date.now();
    for (const [state, pending] of this.pending) if (now - pending.at > PENDING_MS || this.pending.size >= PENDING_LIMIT) this.pending.delete(state);
    this.pending.set(authorization.state, { account: name, authorization, at: now });
    response.writeHead(303, { location: authorization.url }).end();
  }

  private async finishSignIn(url: URL, session: string, response: ServerResponse): Promise<void> {
    const state = url.searchParams.get('state') ?? '';
    const pending = this.pending.get(state);
    this.pending.delete(state);
    if (!pending || Date.now() - pending.at > PENDING_MS) {
      return this.show(new URL('/', url), session, response, { kind: 'error', text: 'This sign-in was not started here or took too long; press Sign in again.' });
    }
    const { account, tokens } = this.options.sources.accounts.get(pending.account)!;
    const error = url.searchParams.get('error');
    if (error) {
      this.options.logger.warn({ account: account.name, error }, 'sign-in declined at the provider');
      return this.show(new URL('/', url), session, response, { kind: 'error', text: `Sign-in for ${account.name} failed: ${error} ${url.searchParams.get('error_description') ?? ''}` });
    }
    try {
      const refreshToken = await redeemAuthorizationCode(account, pending.authorization, url.searchParams.get('code') ?? '');
      await saveSignIn(this.options.store, account, refreshToken);
      await tokens.refresh();
      this.options.logger.info({ account: account.name }, 'account signed in from the admin page');
      response.writeHead(303, { location: `/?signed-in=${encodeURIComponent(account.name)}` }).end();
    } catch (signInError) {
      return this.show(new URL('/', url), session, response, { kind: 'error', text: `Sign-in for ${account.name} failed: ${(signInError as Error).message}` });
    }
  }

  private async sendTestMessage(form: URLSearchParams, session: string, response: ServerResponse): Promise<void> {
    const entry = this.options.sources.accounts.get(form.get('account') ?? '');
    const to = (form.get('to') ?? '').trim();
    const url = new URL('http://relay/');
    if (!entry || !/^[^\s@<>]+@[^\s@<>]+$/.test(to)) return this.show(url, session, response, { kind: 'error', text: 'Choose an account and give one recipient address.' });
    const { account, upstream } = entry;
    const message = testMessage(account.mailbox, to);
    try {
      const receipt = await upstream.send({ from: account.mailbox, to: [to], size: message.length }, () => Readable.from([message]));
      return this.show(url, session, response, { kind: 'ok', text: `Test message sent from ${account.mailbox} to ${to}: ${receipt.response}` });
    } catch (error) {
      const text = error instanceof SmtpError ? `${error.reply.code} ${error.message}` : (error as Error).message;
      return this.show(url, session, response, { kind: 'error', text: `Test message not sent: ${text}` });
    }
  }
}

function testMessage(from: string, to: string): Buffer {
  const lines = [`This test message was sent from the smtp-oauth-relay console through ${from}.`, 'If it arrived, devices using this account can send too.'];
  return plainTextMessage({ from, to, subject: 'smtp-oauth-relay test message', lines });
}


function errorOf(result: object): string {
  return 'error' in result ? String(result.error) : 'not done';
}

/** A path segment decoded; a malformed escape (%E0%A4%A) is kept as it came, to match nothing. */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** Every console page: no caching, no framing, nothing loaded from anywhere, forms only to here (and the provider's sign-in). */
function sendPage(response: ServerResponse, html: string): void {
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'referrer-policy': 'same-origin', 'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'" });
  response.end(html);
}

function sendText(response: ServerResponse, status: number, text: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(`${text}\n`);
}

async function readBody(request: IncomingMessage, limit = 64 * 1024): Promise<string> {
  let body = '';
  for await (const chunk of request) {
    body += chunk;
    if (body.length > limit) break;
  }
  return body;
}
