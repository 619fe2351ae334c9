import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { TokenManager, TokenStore } from '../oauth/index.js';
import { redeemAuthorizationCode, saveSignIn, startAuthorization, type PendingAuthorization } from '../oauth/sign-in.js';
import type { Upstream } from '../upstream/index.js';
import type { AccountQueueState } from '../spool/index.js';
import type { DeliveryHealth } from '../health.js';
import { SmtpError } from '../reply.js';
import { DeviceAuthenticator } from '../listener/index.js';
import { NetworkList, type ResolvedAccount } from '../config/index.js';
import { renderPage, type AccountView, type Notice } from './page.js';
import { messageDate, newMessageId } from '../util/rfc5322.js';

export interface AdminAccount {
  account: ResolvedAccount;
  tokens: TokenManager;
  upstream: Upstream;
}

export interface AdminOptions {
  accounts: Map<string, AdminAccount>;
  store: TokenStore;
  queueState: (account: string) => AccountQueueState;
  health: (account: string) => DeliveryHealth;
  adminPasswordHash?: string;
  publicUrl?: string;
  logger: Logger;
}

const PENDING_LIMIT = 100;
const LOOPBACK = new NetworkList(['127.0.0.0/8', '::1']);
const PENDING_MS = 10 * 60 * 1000;

/**
 * The admin page: each account's state, a Sign in button (authorization code + PKCE, back through
 * /oauth/callback) and a test message form. Without an admin password it answers only this
 * machine, because the same listener serves /metrics to the network.
 */
export class AdminPage {
  private readonly pending = new Map<string, { account: string; authorization: PendingAuthorization; at: number }>();
  private readonly csrfSecret = randomBytes(32);
  /** The admin password is checked like a device's: scrypt once, then remembered as an HMAC. */
  private readonly admin?: DeviceAuthenticator;

  constructor(private readonly options: AdminOptions) {
    if (options.adminPasswordHash) this.admin = new DeviceAuthenticator([{ username: 'admin', passwordHash: options.adminPasswordHash, account: '' }]);
  }

  /** Handles the admin routes; false for any other path. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const url = new URL(request.url ?? '/', 'http://relay');
    const route = `${request.method} ${url.pathname}`;
    const known = route === 'GET /' || route === 'GET /oauth/callback' || route === 'POST /test-message' || /^POST \/accounts\/[^/]+\/sign-in$/.test(route);
    if (!known) return false;
    if (!(await this.allowed(request, response))) return true;
    if (request.method === 'POST' && !this.sameOrigin(request, new URLSearchParams(await readBody(request)), response)) return true;
    if (route === 'GET /') await this.showPage(response, url);
    else if (route === 'GET /oauth/callback') await this.finishSignIn(url, response);
    else if (route === 'POST /test-message') await this.sendTestMessage(request, response);
    else this.beginSignIn(decodeURIComponent(url.pathname.split('/')[2]), request, response);
    return true;
  }

  private async allowed(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    if (!this.admin) {
      if (LOOPBACK.has(request.socket.remoteAddress ?? '')) return true;
      sendText(response, 403, 'The admin page answers only on this machine. Set http.adminPasswordHash to use it from elsewhere.');
      return false;
    }
    const header = request.headers.authorization ?? '';
    const password = header.startsWith('Basic ') ? Buffer.from(header.slice(6), 'base64').toString('utf8').split(':').slice(1).join(':') : undefined;
    if (password !== undefined && (await this.admin.verify('admin', password))) return true;
    response.writeHead(401, { 'www-authenticate': 'Basic realm="smtp-oauth-relay admin", charset="UTF-8"', 'content-type': 'text/plain' }).end('Admin password required.');
    return false;
  }

  /** CSRF: a form must carry this process's token, and a browser's Origin must be this site. */
  private sameOrigin(request: IncomingMessage, form: URLSearchParams, response: ServerResponse): boolean {
    const origin = request.headers.origin;
    const token = Buffer.from(form.get('csrf') ?? '');
    const expected = Buffer.from(this.csrfToken());
    const originOk = !origin || (origin !== 'null' && new URL(origin).host === request.headers.host);
    if (originOk && token.length === expected.length && timingSafeEqual(token, expected)) {
      (request as IncomingMessage & { form?: URLSearchParams }).form = form;
      return true;
    }
    sendText(response, 403, 'This form is stale or came from another site; reload the admin page and try again.');
    return false;
  }

  private csrfToken(): string {
    return createHmac('sha256', this.csrfSecret).update('csrf').digest('base64url');
  }

  private async showPage(response: ServerResponse, url: URL, notice?: Notice): Promise<void> {
    const signedIn = url.searchParams.get('signed-in');
    const views: AccountView[] = [...this.options.accounts.values()].map(({ account, tokens }) => ({
      name: account.name,
      mailbox: account.mailbox,
      provider: account.provider,
      canSignIn: account.flow === 'refresh_token' && !!account.authorizeUrl,
      token: tokens.status(),
      delivery: this.options.health(account.name),
      queue: account.delivery === 'queue' ? this.options.queueState(account.name) : undefined,
    }));
    const shown = notice ?? (signedIn ? { kind: 'ok' as const, text: `${signedIn} is signed in.` } : undefined);
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:" });
    response.end(renderPage(views, this.csrfToken(), shown));
  }

  private beginSignIn(name: string, request: IncomingMessage, response: ServerResponse): void {
    const entry = this.options.accounts.get(name);
    if (!entry?.account.authorizeUrl) return sendText(response, 404, `No account "${name}" that can sign in here.`);
    const base = this.options.publicUrl ?? `http://${request.headers.host}`;
    const authorization = startAuthorization(entry.account, `${base.replace(/\/$/, '')}/oauth/callback`);
    const now = Date.now();
    for (const [state, pending] of this.pending) if (now - pending.at > PENDING_MS || this.pending.size >= PENDING_LIMIT) this.pending.delete(state);
    this.pending.set(authorization.state, { account: name, authorization, at: now });
    response.writeHead(303, { location: authorization.url }).end();
  }

  private async finishSignIn(url: URL, response: ServerResponse): Promise<void> {
    const state = url.searchParams.get('state') ?? '';
    const pending = this.pending.get(state);
    this.pending.delete(state);
    if (!pending || Date.now() - pending.at > PENDING_MS) {
      return this.showPage(response, url, { kind: 'error', text: 'This sign-in was not started here or took too long; press Sign in again.' });
    }
    const { account, tokens } = this.options.accounts.get(pending.account)!;
    const error = url.searchParams.get('error');
    if (error) {
      this.options.logger.warn({ account: account.name, error }, 'sign-in declined at the provider');
      return this.showPage(response, url, { kind: 'error', text: `Sign-in for ${account.name} failed: ${error} ${url.searchParams.get('error_description') ?? ''}` });
    }
    try {
      const refreshToken = await redeemAuthorizationCode(account, pending.authorization, url.searchParams.get('code') ?? '');
      await saveSignIn(this.options.store, account, refreshToken);
      await tokens.refresh();
      this.options.logger.info({ account: account.name }, 'account signed in from the admin page');
      response.writeHead(303, { location: `/?signed-in=${encodeURIComponent(account.name)}` }).end();
    } catch (signInError) {
      return this.showPage(response, url, { kind: 'error', text: `Sign-in for ${account.name} failed: ${(signInError as Error).message}` });
    }
  }

  private async sendTestMessage(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const form = (request as IncomingMessage & { form?: URLSearchParams }).form!;
    const entry = this.options.accounts.get(form.get('account') ?? '');
    const to = (form.get('to') ?? '').trim();
    const url = new URL('http://relay/');
    if (!entry || !/^[^\s@<>]+@[^\s@<>]+$/.test(to)) return this.showPage(response, url, { kind: 'error', text: 'Choose an account and give one recipient address.' });
    const { account, upstream } = entry;
    const message = testMessage(account.mailbox, to);
    try {
      const receipt = await upstream.send({ from: account.mailbox, to: [to], size: message.length }, () => Readable.from([message]));
      return this.showPage(response, url, { kind: 'ok', text: `Test message sent from ${account.mailbox} to ${to}: ${receipt.response}` });
    } catch (error) {
      const text = error instanceof SmtpError ? `${error.reply.code} ${error.message}` : (error as Error).message;
      return this.showPage(response, url, { kind: 'error', text: `Test message not sent: ${text}` });
    }
  }
}

function testMessage(from: string, to: string): Buffer {
  return Buffer.from(
    [
      `From: smtp-oauth-relay <${from}>`,
      `To: ${to}`,
      'Subject: smtp-oauth-relay test message',
      `Date: ${messageDate()}`,
      `Message-ID: ${newMessageId(from)}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      `This test message was sent from the smtp-oauth-relay admin page through ${from}.`,
      'If it arrived, devices using this account can send too.',
      '',
    ].join('\r\n'),
  );
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
