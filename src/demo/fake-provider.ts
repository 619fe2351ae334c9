import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { X509Certificate, constants, createHash, randomBytes, verify } from 'node:crypto';
import type { SMTPServer, SMTPServerAuthentication, SMTPServerSession } from 'smtp-server';
import { packageRoot } from '../util/package-root.js';
import { PROFILES, type ProviderProfile, type ProviderProfileName, type ScriptedReply } from './provider-profiles.js';
import { ProviderSmtpServer, type BearerVerdict } from './provider-smtp.js';
import { ProviderApiServer, type ApiBackend, type ApiScriptedAnswer } from './provider-api.js';

/**
 * A local stand-in for Exchange Online or Gmail: an OAuth token endpoint that issues short-lived
 * tokens and rotates refresh tokens, and a submission server that demands STARTTLS, really checks
 * the XOAUTH2 bearer token and user, and speaks and fails the way the real provider does (its
 * profile: greeting, EHLO lists, token shape, reply texts). Used by `demo`, the tests and the
 * benchmarks; it listens on loopback only.
 */

export interface FakeProviderOptions {
  /** Whose wire to speak: microsoft (the default), google, generic (an XOAUTH2-only server), or a variant of one. */
  profile?: ProviderProfileName | ProviderProfile;
  /** Mailboxes the provider knows (the XOAUTH2 user must be one of them). */
  mailboxes: string[];
  clientId?: string;
  clientSecret?: string;
  /** Seconds an access token lives. */
  tokenLifetime?: number;
  /** Where to write each received message as an .eml file (the demo's outbox). */
  outboxDir?: string;
  /** When set, a From header outside the mailbox (and these) gets 550 5.7.60 SendAsDenied. */
  enforceSendAs?: string[];
  /** The largest message the mailbox may send (default: the profile's); SIZE too where the profile advertises no fixed one. */
  maxSize?: number;
  /** Only this way of sending the client secret is accepted (default: both, as RFC 6749 allows). */
  clientAuth?: 'basic' | 'body';
  /** PEM public key of a service account allowed the JWT bearer grant (domain-wide delegation). */
  serviceAccountPublicKey?: string;
  /** PEM certificate registered for the app: client assertions (RFC 7523) signed with its key are accepted. */
  clientCertificate?: string;
  /** A federated token (workload identity) accepted as the client assertion. */
  federatedAssertion?: string;
  /** Google app in "Testing": refresh grants answer refresh_token_expires_in (7 days). */
  testingApp?: boolean;
}

export interface ReceivedMessage {
  mailbox: string;
  envelope: { from: string; to: string[] };
  /** The RFC 3461 parameters the client sent: RET and ENVID, and NOTIFY per recipient. */
  dsn: { ret?: string | null; envid?: string | null; notify: (string[] | undefined)[] };
  /** When the provider took it. */
  at?: string;
  /** BODY= and SMTPUTF8 as the client declared them at MAIL FROM (SMTP only). */
  declared?: { body: string; smtpUtf8: boolean };
  raw: Buffer;
}

export type { ScriptedReply };

/** A scripted refusal as smtp-server sends it (its text starts with the enhanced code). */
function scriptedError(reply: ScriptedReply | undefined): Error | null {
  return reply ? Object.assign(new Error(reply.message), { responseCode: reply.code }) : null;
}

export const FAKE_TLS = {
  ca: () => path.join(packageRoot(), 'fixtures', 'demo-tls', 'ca.pem'),
  cert: () => path.join(packageRoot(), 'fixtures', 'demo-tls', 'localhost.pem'),
  key: () => path.join(packageRoot(), 'fixtures', 'demo-tls', 'localhost.key'),
};

export class FakeProvider {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly profile: ProviderProfile;
  tokenLifetime: number;
  tokenRequests = 0;
  /** When each access token was issued (a test of the refresh schedule waits from these, not from its own start). */
  readonly tokenIssuedAt: number[] = [];
  readonly received: ReceivedMessage[] = [];
  /** Every login, with its mechanism: a relay must never try a basic one. */
  readonly authAttempts: { user: string; ok: boolean; mechanism: string }[] = [];
  /** Every AUTH line as received, continuation lines included (what the relay sent, to the byte). */
  readonly authLines: string[] = [];
  /** SMTP AUTH switched off for the tenant (Exchange): even a correct XOAUTH2 login gets 5.7.139. */
  smtpAuthDisabled = false;
  /** Each token request takes the next scripted answer, if any (e.g. 500s, invalid_grant). */
  readonly tokenScript: { status: number; body: Record<string, unknown> }[] = [];
  /** Each XOAUTH2 login with a valid token fails while this is above zero (a token revoked upstream). */
  failNextLogins = 0;
  /** Each DATA takes the next scripted reply, if any (e.g. 432 4.3.2 throttling). */
  readonly dataScript: ScriptedReply[] = [];
  /** Each AUTH takes the next scripted refusal, if any (e.g. 535 5.7.139 SMTP AUTH disabled). */
  readonly authScript: ScriptedReply[] = [];
  /** Each MAIL FROM takes the next scripted refusal, if any (e.g. 550 5.4.5 daily quota). */
  readonly mailFromScript: ScriptedReply[] = [];
  /** Recipients refused at RCPT TO with their own reply (e.g. High Volume Email's 550 5.5.105). */
  readonly recipientReplies = new Map<string, ScriptedReply>();
  /** Recipients refused at RCPT TO with 550 5.1.1. */
  readonly unknownRecipients = new Set<string>();
  /** Recipients refused with 450 4.2.1 this many more times (a temporary mailbox problem). */
  readonly deferredRecipients = new Map<string, number>();
  /** While set, every connection is greeted with 421 (the provider is down). */
  refuseConnections = false;
  /** When each connection arrived (to check a client's backoff). */
  readonly connectionTimes: number[] = [];
  /** DATA transactions begun (a message broken off before its final dot is begun, never received). */
  dataStarted = 0;
  /** Authenticated sessions open now, and the most ever open at once, per mailbox (Exchange allows 3). */
  readonly openSessions = new Map<string, Set<string>>();
  readonly peakSessions = new Map<string, number>();
  /** Milliseconds each DATA takes to be answered (a slow provider). */
  dataDelayMs = 0;
  /** The next DATA's answer, held until released (holdNextDataAnswer). */
  private heldDataAnswer?: { gate: Promise<void>; reply?: ScriptedReply };
  /** DATA answers waiting for their release now. */
  dataAnswersHeld = 0;
  /** Microsoft Graph's sendMail and the Gmail API's messages.send, beside SMTP (their base URL once started). */
  readonly api: ProviderApiServer;
  apiUrl = '';
  /** Each API send takes the next scripted answer, if any (e.g. 429 with Retry-After). */
  readonly apiScript: ApiScriptedAnswer[] = [];
  /** The app may not send through the API (no Mail.Send, no RBAC scope; Gmail: scope or delegation missing): 403. */
  apiSendDenied = false;
  /** What Exchange's message trace says became of a recipient's copy (default delivered): quarantined, filteredAsSpam, failed, pending. */
  readonly traceStatus = new Map<string, string>();

  /** Each device-code poll takes the next scripted error first (e.g. authorization_pending, slow_down). */
  readonly devicePollScript: string[] = [];
  devicePolls = 0;
  private readonly deviceCodes = new Map<string, { userCode: string; decision?: 'approved' | 'denied'; expiresAt: number }>();
  private readonly authorizationCodes = new Map<string, { redirectUri: string; challenge: string; mailbox: string }>();
  private readonly refreshTokens = new Map<string, string>(); // refresh token → mailbox
  private readonly accessTokens = new Map<string, { mailbox: string; expiresAt: number; scope: string }>();
  private readonly http: Server;
  private readonly smtp: SMTPServer;
  private readonly messageLimit: number;
  tokenUrl = '';
  smtpPort = 0;

  constructor(private readonly options: FakeProviderOptions) {
    this.profile = typeof options.profile === 'object' ? options.profile : PROFILES[options.profile ?? 'microsoft'];
    this.messageLimit = options.maxSize ?? this.profile.defaultMessageLimit;
    this.clientId = options.clientId ?? 'demo-client';
    this.clientSecret = options.clientSecret ?? 'demo-secret';
    this.tokenLifetime = options.tokenLifetime ?? 3600;
    this.api = new ProviderApiServer(this.apiBackend());
    this.http = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        const url = new URL(request.url ?? '/', 'http://localhost');
        if (url.pathname.endsWith('/authorize')) return this.authorizePage(request.method ?? 'GET', url, new URLSearchParams(body), response);
        const form = new URLSearchParams(body);
        // RFC 6749 §2.3.1: client credentials in an HTTP Basic header count as if in the body.
        const basic = /^Basic (.+)$/.exec(request.headers.authorization ?? '');
        const used = basic ? 'basic' : form.has('client_secret') ? 'body' : undefined;
        if (used && this.options.clientAuth && used !== this.options.clientAuth && !url.pathname.endsWith('/authorize')) {
          response.writeHead(401, { 'content-type': 'application/json' });
          return void response.end(JSON.stringify({ error: 'invalid_client', error_description: `client authentication by ${used} is not allowed` }));
        }
        if (basic) {
          const [id, secret] = Buffer.from(basic[1], 'base64').toString().split(':').map(decodeURIComponent);
          form.set('client_id', id);
          form.set('client_secret', secret ?? '');
        }
        const { status, payload } = url.pathname.endsWith('/devicecode') ? this.deviceCodeResponse(form) : this.tokenResponse(form);
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(payload));
      });
    });
    const wire = {
      profile: this.profile,
      recordAuthLine: (line: string) => void this.authLines.push(line),
      checkBearer: (user: string, token: string, session: SMTPServerSession) => this.checkBearer(user, token, session),
    };
    this.smtp = new ProviderSmtpServer(wire, {
      name: 'localhost',
      key: readFileSync(FAKE_TLS.key()),
      cert: readFileSync(FAKE_TLS.cert()),
      // What smtp-server's SASL handles: XOAUTH2 is the profile's own (provider-smtp.ts), basic
      // logins reach onAuth and are refused the provider's way. The EHLO list is the profile's.
      authMethods: ['XOAUTH2', 'PLAIN', 'LOGIN'],
      allowInsecureAuth: false,
      size: this.profile.advertisedSize ?? this.messageLimit,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      logger: false,
      onAuth: (auth, _session, callback) => this.onBasicAuth(auth, callback),
      onClose: (session) => {
        for (const sessions of this.openSessions.values()) sessions.delete(session.id);
      },
      onConnect: (_session, callback) => {
        this.connectionTimes.push(Date.now());
        if (this.refuseConnections) return callback(Object.assign(new Error('4.3.2 Service not available, closing transmission channel'), { responseCode: 421 }));
        callback();
      },
      onRcptTo: (address, _session, callback) => this.onRcptTo(address.address.toLowerCase(), callback),
      onMailFrom: (_address, _session, callback) => callback(scriptedError(this.mailFromScript.shift())),
      onData: (stream, session, callback) => {
        this.dataStarted++;
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          const reply = () => this.onMessage(Buffer.concat(chunks), session).then(
            (reply) => callback(null, reply),
            (error: Error) => callback(error),
          );
          const held = this.heldDataAnswer;
          this.heldDataAnswer = undefined;
          if (held) {
            this.dataAnswersHeld++;
            return void held.gate.then(() => {
              this.dataAnswersHeld--;
              if (held.reply) callback(scriptedError(held.reply));
              else void reply();
            });
          }
          if (this.dataDelayMs > 0) setTimeout(reply, this.dataDelayMs);
          else reply();
        });
      },
    });
  }

  /** Socket errors of client connections (a relay killed mid-handshake), kept instead of thrown. */
  readonly socketErrors: Error[] = [];

  /** Issues a refresh token as if a user had signed in, for the config of the relay. */
  issueRefreshToken(mailbox = this.options.mailboxes[0]): string {
    const token = `rt-${randomBytes(12).toString('hex')}`;
    this.refreshTokens.set(token, mailbox);
    return token;
  }

  revokeRefreshToken(token: string): void {
    this.refreshTokens.delete(token);
  }

  /** Every refresh and access token this provider has handed out (to check they are never logged). */
  issuedSecrets(): string[] {
    return [...this.refreshTokens.keys(), ...this.accessTokens.keys()];
  }

  /**
   * The next message's answer waits until the returned function is called, and is then `reply` (or
   * the usual one): an answer slow in coming, for as long as a test needs, without a timer.
   */
  holdNextDataAnswer(reply?: ScriptedReply): () => void {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    this.heldDataAnswer = { gate, reply };
    return release;
  }

  /** Closes every submission session, as a provider restart or idle cut-off does. */
  dropConnections(): void {
    for (const connection of (this.smtp as unknown as { connections: Set<{ close(): void }> }).connections) connection.close();
  }

  /** The person enters the code and accepts (or declines) at the provider's page. */
  decideDeviceCode(userCode: string, decision: 'approved' | 'denied'): void {
    for (const entry of this.deviceCodes.values()) if (entry.userCode === userCode) entry.decision = decision;
  }

  get authorizeUrl(): string {
    return this.tokenUrl.replace(/token$/, 'authorize');
  }

  get deviceCodeUrl(): string {
    return this.tokenUrl.replace(/token$/, 'devicecode');
  }

  async start(): Promise<this> {
    this.smtp.on('error', (error: Error) => this.socketErrors.push(error));
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    this.tokenUrl = `http://127.0.0.1:${(this.http.address() as AddressInfo).port}/oauth2/v2.0/token`;
    await new Promise<void>((resolve) => this.smtp.listen(0, '127.0.0.1', resolve));
    this.smtpPort = (this.smtp.server.address() as AddressInfo).port;
    this.apiUrl = (await this.api.start()).url;
    return this;
  }

  async stop(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise((resolve) => this.http.close(resolve));
    await new Promise((resolve) => this.smtp.close(() => resolve(undefined)));
    await this.api.stop();
  }

  private deviceCodeResponse(form: URLSearchParams): { status: number; payload: Record<string, unknown> } {
    if (form.get('client_id') !== this.clientId) return oauthError(400, 'invalid_client', 'AADSTS700016: Application not found.');
    const deviceCode = randomBytes(16).toString('hex');
    const userCode = randomBytes(4).toString('hex').toUpperCase();
    this.deviceCodes.set(deviceCode, { userCode, expiresAt: Date.now() + 900_000 });
    const verificationUri = this.tokenUrl.replace(/token$/, 'devicelogin');
    return {
      status: 200,
      payload: {
        device_code: deviceCode,
        user_code: userCode,
        verification_uri: verificationUri,
        expires_in: 900,
        interval: 1,
        message: `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${userCode} to authenticate.`,
      },
    };
  }

  /** A sign-in page: GET shows it, POST (Accept or Cancel) sends the browser back with a code or an error. */
  private authorizePage(method: string, url: URL, form: URLSearchParams, response: import('node:http').ServerResponse): void {
    const params = method === 'POST' ? form : url.searchParams;
    const redirectUri = params.get('redirect_uri') ?? '';
    const state = params.get('state') ?? '';
    if (params.get('client_id') !== this.clientId || !/^https?:\/\//.test(redirectUri)) {
      response.writeHead(400, { 'content-type': 'text/plain' }).end('invalid client_id or redirect_uri');
      return;
    }
    if (method !== 'POST') {
      const hidden = [...url.searchParams].map(([key, value]) => `<input type="hidden" name="${escapeHtml(key)}" value="${escapeHtml(value)}">`).join('');
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(
        `<!doctype html><title>Stand-in sign-in</title><h1>Stand-in provider</h1><p>Sign in as <b>${escapeHtml(this.options.mailboxes[0])}</b> and let the relay send mail?</p>` +
          `<form method="post">${hidden}<button name="decision" value="accept">Accept</button> <button name="decision" value="cancel">Cancel</button></form>`,
      );
      return;
    }
    const back = new URL(redirectUri);
    if (form.get('decision') === 'accept') {
      const code = randomBytes(12).toString('hex');
      this.authorizationCodes.set(code, { redirectUri, challenge: params.get('code_challenge') ?? '', mailbox: this.options.mailboxes[0] });
      back.searchParams.set('code', code);
    } else {
      back.searchParams.set('error', 'access_denied');
      back.searchParams.set('error_description', 'AADSTS65004: User declined to consent to access the app.');
    }
    back.searchParams.set('state', state);
    response.writeHead(302, { location: back.toString() }).end();
  }

  /** Microsoft's checks of a client assertion: a federated token, or a PS256 JWT by the registered certificate. */
  private clientAssertionProblem(type: string | null, assertion: string): string | undefined {
    if (type !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') return 'AADSTS50027: client_assertion_type is not jwt-bearer.';
    if (this.options.federatedAssertion !== undefined) return assertion === this.options.federatedAssertion ? undefined : 'AADSTS700213: No matching federated identity record found.';
    if (!this.options.clientCertificate) return 'AADSTS700027: Client assertion contains an invalid signature (no certificate registered).';
    const [headerPart, claimsPart, signature] = assertion.split('.');
    const header = JSON.parse(Buffer.from(headerPart ?? '', 'base64url').toString() || '{}') as Record<string, string>;
    const claims = JSON.parse(Buffer.from(claimsPart ?? '', 'base64url').toString() || '{}') as Record<string, string | number>;
    const certificate = new X509Certificate(this.options.clientCertificate);
    if (header.alg !== 'PS256' || header['x5t#S256'] !== createHash('sha256').update(certificate.raw).digest('base64url')) return 'AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.';
    const valid = verify('sha256', Buffer.from(`${headerPart}.${claimsPart}`), { key: certificate.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, Buffer.from(signature ?? '', 'base64url'));
    if (!valid) return 'AADSTS700027: Client assertion contains an invalid signature.';
    const now = Date.now() / 1000;
    if (claims.aud !== this.tokenUrl || claims.iss !== this.clientId || claims.sub !== this.clientId || Number(claims.exp) <= now || Number(claims.nbf) > now + 60) {
      return 'AADSTS700024: Client assertion is not within its valid time range, or aud/iss/sub do not match.';
    }
    return undefined;
  }

  private tokenResponse(form: URLSearchParams): { status: number; payload: Record<string, unknown> } {
    this.tokenRequests++;
    const scripted = this.tokenScript.shift();
    if (scripted) return { status: scripted.status, payload: scripted.body };
    const grant = form.get('grant_type');
    // The JWT bearer grant identifies the client by the signed assertion instead.
    if (grant !== 'urn:ietf:params:oauth:grant-type:jwt-bearer' && form.get('client_id') !== this.clientId) {
      return oauthError(400, 'invalid_client', "AADSTS700016: Application with identifier was not found in the directory.");
    }
    let mailbox: string | undefined;
    let refreshToken: string | undefined;
    if (grant === 'urn:ietf:params:oauth:grant-type:device_code') {
      this.devicePolls++;
      const entry = this.deviceCodes.get(form.get('device_code') ?? '');
      const scriptedError = this.devicePollScript.shift();
      if (scriptedError) return oauthError(400, scriptedError, `scripted ${scriptedError}`);
      if (!entry || entry.expiresAt < Date.now()) return oauthError(400, 'expired_token', 'AADSTS70020: The provided value for the input parameter device_code is not valid.');
      if (entry.decision === 'denied') return oauthError(400, 'authorization_declined', 'AADSTS70000: The user declined.');
      if (entry.decision !== 'approved') return oauthError(400, 'authorization_pending', 'AADSTS70016: Pending end-user authorization.');
      mailbox = this.options.mailboxes[0];
      refreshToken = this.issueRefreshToken(mailbox);
    } else if (grant === 'authorization_code') {
      const entry = this.authorizationCodes.get(form.get('code') ?? '');
      this.authorizationCodes.delete(form.get('code') ?? '');
      const challenge = createHash('sha256').update(form.get('code_verifier') ?? '').digest('base64url');
      if (!entry || entry.redirectUri !== form.get('redirect_uri') || entry.challenge !== challenge) {
        return oauthError(400, 'invalid_grant', 'AADSTS54005: OAuth2 Authorization code was already redeemed, or the code_verifier does not match.');
      }
      mailbox = entry.mailbox;
      refreshToken = this.issueRefreshToken(mailbox);
    } else if (grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
      mailbox = this.verifyAssertion(form.get('assertion') ?? '');
      if (!mailbox) return oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    } else if (grant === 'refresh_token') {
      mailbox = this.refreshTokens.get(form.get('refresh_token') ?? '');
      if (!mailbox) return oauthError(400, 'invalid_grant', 'AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.');
      refreshToken = this.issueRefreshToken(mailbox); // rotated; the old one stays valid, as at Microsoft
    } else if (grant === 'client_credentials') {
      const assertion = form.get('client_assertion');
      if (assertion !== null) {
        const problem = this.clientAssertionProblem(form.get('client_assertion_type'), assertion);
        if (problem) return oauthError(401, 'invalid_client', problem);
      } else if (form.get('client_secret') !== this.clientSecret) {
        return oauthError(401, 'invalid_client', 'AADSTS7000215: Invalid client secret provided.');
      }
      mailbox = '*';
    } else {
      return oauthError(400, 'unsupported_grant_type', `grant_type ${grant} is not supported`);
    }
    // The JWT bearer grant (Google's domain-wide delegation) carries its scope in the assertion.
    const scope = grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer' ? assertionScope(form.get('assertion') ?? '') : (form.get('scope') ?? '');
    const accessToken = this.profile.accessToken({ mailbox, clientId: this.clientId, lifetimeSeconds: this.tokenLifetime, scope });
    this.tokenIssuedAt.push(Date.now());
    this.accessTokens.set(accessToken, { mailbox, expiresAt: Date.now() + this.tokenLifetime * 1000, scope });
    const payload: Record<string, unknown> = { token_type: 'Bearer', access_token: accessToken, expires_in: this.tokenLifetime, scope: form.get('scope') };
    if (refreshToken) payload.refresh_token = refreshToken;
    if (refreshToken && this.options.testingApp) payload.refresh_token_expires_in = 604_799; // Google, consent screen in "Testing"
    return { status: 200, payload };
  }

  /** The mailbox (sub) of a correctly signed, unexpired service-account JWT, else undefined. */
  private verifyAssertion(assertion: string): string | undefined {
    const [header, claims, signature] = assertion.split('.');
    const key = this.options.serviceAccountPublicKey;
    if (!key || !signature || !verify('RSA-SHA256', Buffer.from(`${header}.${claims}`), key, Buffer.from(signature, 'base64url'))) return undefined;
    const body = JSON.parse(Buffer.from(claims, 'base64url').toString()) as { sub?: string; aud?: string; exp?: number };
    if (body.aud !== this.tokenUrl || (body.exp ?? 0) * 1000 < Date.now()) return undefined;
    return this.options.mailboxes.find((mailbox) => mailbox === body.sub);
  }

  private onRcptTo(address: string, callback: (error?: Error | null) => void): void {
    const own = this.recipientReplies.get(address);
    if (own) return callback(scriptedError(own));
    if (this.unknownRecipients.has(address)) {
      return callback(scriptedError(this.profile.replies.unknownRecipient));
    }
    const deferrals = this.deferredRecipients.get(address) ?? 0;
    if (deferrals > 0) {
      this.deferredRecipients.set(address, deferrals - 1);
      return callback(Object.assign(new Error('4.2.1 Mailbox temporarily unavailable'), { responseCode: 450 }));
    }
    callback();
  }

  private countSession(mailbox: string, sessionId: string): void {
    const sessions = this.openSessions.get(mailbox) ?? new Set<string>();
    this.openSessions.set(mailbox, sessions.add(sessionId));
    this.peakSessions.set(mailbox, Math.max(this.peakSessions.get(mailbox) ?? 0, sessions.size));
  }

  /** PLAIN or LOGIN: the providers refuse passwords for SMTP (Exchange with basic auth off, Gmail without app passwords). */
  private onBasicAuth(auth: SMTPServerAuthentication, callback: (error: Error | null | undefined) => void): void {
    this.authAttempts.push({ user: (auth.username ?? '').toLowerCase(), ok: false, mechanism: auth.method });
    callback(scriptedError(this.profile.replies.basicRefused));
  }

  private checkBearer(userName: string, token: string, session: SMTPServerSession): BearerVerdict {
    const user = userName.toLowerCase();
    const attempt = { user, ok: false, mechanism: 'XOAUTH2' };
    this.authAttempts.push(attempt);
    const scripted = this.authScript.shift();
    if (scripted) return { refuse: scripted };
    const grant = this.accessTokens.get(token);
    let ok = !!grant && grant.expiresAt > Date.now() && (grant.mailbox === '*' || grant.mailbox.toLowerCase() === user);
    ok &&= this.options.mailboxes.some((mailbox) => mailbox.toLowerCase() === user);
    if (ok && this.failNextLogins > 0) {
      this.failNextLogins--;
      ok = false;
    }
    if (!ok) return { refuse: this.profile.replies.tokenRefused, tokenRefused: true };
    const disabled = this.profile.replies.smtpAuthDisabled;
    if (this.smtpAuthDisabled && disabled) return { refuse: disabled };
    attempt.ok = true;
    this.countSession(user, session.id);
    return { user };
  }

  private async onMessage(raw: Buffer, session: SMTPServerSession): Promise<string> {
    const scripted = this.dataScript.shift();
    if (scripted) throw scriptedError(scripted);
    const mailbox = String(session.user);
    if (raw.length > this.messageLimit) throw scriptedError(this.profile.replies.tooLarge);
    const sendAsDenied = this.profile.replies.sendAsDenied;
    if (sendAsDenied && this.fromRefused(mailbox, raw)) throw scriptedError(sendAsDenied);
    const message: ReceivedMessage = {
      mailbox,
      envelope: { from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((rcpt) => rcpt.address) },
      dsn: { ret: session.envelope.dsn?.ret, envid: session.envelope.dsn?.envid, notify: session.envelope.rcptTo.map((rcpt) => rcpt.dsn?.notify) },
      declared: { body: (session.envelope as { bodyType?: string }).bodyType ?? '7bit', smtpUtf8: !!(session.envelope as { smtpUtf8?: boolean }).smtpUtf8 },
      raw,
    };
    return this.profile.accepted(await this.keep(message));
  }

  /** With enforceSendAs: the From is neither the mailbox nor one it may send as (Exchange's SendAsDenied). */
  private fromRefused(mailbox: string, raw: Buffer): boolean {
    if (!this.options.enforceSendAs) return false;
    const from = /^From:[^\r\n]*?<?([^\s<>]+@[^\s<>]+)>?\s*$/im.exec(raw.subarray(0, 64 * 1024).toString('latin1'))?.[1]?.toLowerCase();
    const allowed = [mailbox, ...this.options.enforceSendAs].map((address) => address.toLowerCase());
    return !from || !allowed.includes(from);
  }

  /** A delivered message: recorded, and written to the outbox when there is one. Resolves with its id. */
  private async keep(message: ReceivedMessage): Promise<string> {
    message.at ??= new Date().toISOString();
    this.received.push(message);
    const id = randomBytes(6).toString('hex').toUpperCase();
    if (this.options.outboxDir) {
      await mkdir(this.options.outboxDir, { recursive: true });
      await writeFile(path.join(this.options.outboxDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${id}.eml`), message.raw);
    }
    return id;
  }

  /** The HTTP APIs' view of this provider: its tokens, mailboxes, outbox and scripted answers. */
  private apiBackend(): ApiBackend {
    return {
      bearer: (token) => {
        const grant = this.accessTokens.get(token);
        if (!grant || grant.expiresAt <= Date.now()) return undefined;
        if (this.failNextLogins > 0) {
          this.failNextLogins--; // a token revoked at the provider
          return undefined;
        }
        return { mailbox: grant.mailbox, scope: grant.scope };
      },
      knowsMailbox: (mailbox) => this.options.mailboxes.some((known) => known.toLowerCase() === mailbox.toLowerCase()),
      deliver: (mailbox, raw, to) => this.keep({ mailbox, envelope: { from: mailbox, to }, dsn: { notify: [] }, raw }),
      nextScripted: () => this.apiScript.shift(),
      sendDenied: () => this.apiSendDenied,
      // Exchange refuses a From the mailbox may not send as; Gmail replaces it with the account (not modelled).
      sendAsRefused: (mailbox, raw) => this.profile.name === 'microsoft' && this.fromRefused(mailbox, raw),
      traced: (messageId) =>
        this.received
          .filter((message) => headerMessageId(message.raw) === messageId)
          .flatMap((message) => message.envelope.to.map((recipient) => ({ recipient, at: message.at ?? '', from: message.mailbox, size: message.raw.length, status: this.traceStatus.get(recipient) ?? 'delivered' }))),
    };
  }
}

function oauthError(status: number, error: string, description: string) {
  return { status, payload: { error, error_description: `${description}\r\nTrace ID: ${randomBytes(8).toString('hex')}` } };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

/** The Message-ID field of a delivered message, as Exchange's trace keys it. */
function headerMessageId(raw: Buffer): string | undefined {
  const head = raw.subarray(0, Math.max(0, raw.indexOf('\r\n\r\n'))).toString('latin1');
  return /^Message-ID:[ \t]*(\S+)/im.exec(head)?.[1];
}

/** The scope claim of a (verified) JWT bearer assertion. */
function assertionScope(assertion: string): string {
  const claims = JSON.parse(Buffer.from(assertion.split('.')[1] ?? '', 'base64url').toString() || '{}') as { scope?: unknown };
  return typeof claims.scope === 'string' ? claims.scope : '';
}
