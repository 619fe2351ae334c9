import { readFileSync } from 'node:fs';
import { constants as cryptoConstants } from 'node:crypto';
import { createSecureContext, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerDataStream,
  type SMTPServerOptions,
  type SMTPServerSession,
  type SMTPServerAuthentication,
} from 'smtp-server';
import { PromptSmtpServer, SIZE_REFUSED } from './prompt-server.js';
import { NetworkList, type Config, type UserConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { SmtpError, asSmtpError, defer, reject } from '../reply.js';
import { declaredContent, type DeclaredContent, type DsnRequest } from '../envelope.js';
import { DeviceAuthenticator } from './passwords.js';
import { AuthGuard, type ActiveLockout, type AuthGuardLimits, type Lockout } from './auth-guard.js';
import { RecipientPolicy } from './recipient-policy.js';
import { FrontDoor } from './front-door.js';

/** What the listener knows about a message when its DATA starts. */
export interface Transaction {
  sessionId: string;
  clientIp: string;
  /** The name the client gave in EHLO/HELO, and whether it was EHLO. */
  helo: string;
  esmtp: boolean;
  /** Whether the session is TLS (STARTTLS or implicit). */
  secure: boolean;
  user: UserConfig;
  /** Whether the device authenticated (as opposed to being let in by its network). */
  authenticated: boolean;
  mailFrom: string;
  rcptTo: string[];
  /** RFC 3461 parameters the device gave (RET, ENVID, NOTIFY, ORCPT), if any. */
  dsn?: DsnRequest;
  /** What the device declared of its content at MAIL FROM: BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531). */
  content: DeclaredContent;
}

/**
 * The next stage: consumes the DATA stream and resolves with the text of the 250 reply. The signal
 * is aborted when the device hangs up before the end of DATA.
 */
export type MessageHandler = (stream: SMTPServerDataStream, transaction: Transaction, signal: AbortSignal) => Promise<string>;

export interface ListenerOptions {
  config: Config;
  hostname: string;
  handler: MessageHandler;
  /** Asked at MAIL FROM (with the SIZE the device declared) whether new mail can be taken now. */
  admit: (declaredSize: number | undefined) => Promise<void>;
  metrics: Metrics;
  logger: Logger;
  /** Told of every failed device login (a cluster shares them, so limits hold across replicas). */
  onAuthFailure?: (ip: string, username: string) => void;
  /** Told of every successful device login (the console's Devices page). */
  onLogin?: (username: string, ip: string) => void;
}

/** Remembers which clients were warned about clear-text AUTH, without growing forever. */
const WARNED_CLIENTS_LIMIT = 1000;
/** CR, LF, NUL and the other controls never belong in an address or a login name. */
const CONTROL_CHARACTERS = /[\x00-\x1f\x7f]/;
/** ESMTP parameters the listener implements (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 DSN, 4954 AUTH); others get 555. */
const MAIL_PARAMETERS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH']);
const RCPT_PARAMETERS = new Set(['NOTIFY', 'ORCPT']);

type Callback = (error?: Error | null) => void;

/**
 * The SMTP side the devices talk to: who may connect (networks, per-address limits, lockouts),
 * who they are (AUTH PLAIN/LOGIN, or a listed network for devices that cannot AUTH), where they
 * may send, and every DATA handed to the message handler, whose verdict becomes the reply.
 */
/**
 * Everything about who may do what that a SIGHUP can change, built whole from one config and
 * swapped in one assignment: a reload applies all of it or none of it.
 */
interface DevicePolicy {
  authenticator: DeviceAuthenticator;
  allowed: NetworkList;
  unauthenticated?: { networks: NetworkList; user: UserConfig };
  userNetworks: Map<string, NetworkList>;
  recipients: RecipientPolicy;
  requireTls: boolean;
  maxConnectionsPerIp: number;
}

function buildPolicy(config: Config): DevicePolicy {
  const unauthenticated = config.unauthenticated && {
    networks: new NetworkList(config.unauthenticated.networks),
    user: { username: `(unauthenticated ${config.unauthenticated.account})`, account: config.unauthenticated.account, password: '-' } as UserConfig,
  };
  return {
    authenticator: new DeviceAuthenticator(config.users),
    allowed: new NetworkList(config.allowNetworks),
    unauthenticated,
    userNetworks: new Map(config.users.filter((user) => user.allowNetworks).map((user) => [user.username, new NetworkList(user.allowNetworks!)])),
    recipients: new RecipientPolicy(config.smtp.maxRecipients),
    requireTls: config.smtp.requireTls,
    maxConnectionsPerIp: config.smtp.maxConnectionsPerIp,
  };
}

function readTls(config: Config): { key: Buffer; cert: Buffer } | undefined {
  const tls = config.smtp.tls;
  return tls && { key: readFileSync(tls.key), cert: readFileSync(tls.cert) };
}

/**
 * TLS 1.2 suites by default: forward secrecy (ECDHE) and AEAD (GCM, ChaCha20) only, as Mozilla's
 * "intermediate" profile; TLS 1.3 suites are all of that kind anyway.
 */
const STRICT_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
/** OpenSSL 3 allows TLS below 1.2 (and SHA-1 signatures) only at security level 0. */
const LEGACY_CIPHERS = 'DEFAULT:@SECLEVEL=0';
/** No client-initiated renegotiation (a DoS lever and an old attack surface). */
const SECURE_OPTIONS = cryptoConstants.SSL_OP_NO_RENEGOTIATION;

type TlsConfig = NonNullable<Config['smtp']['tls']>;
/** smtp-server's error for a failed handshake, with what PromptConnection added. */
type TlsError = Error & { code?: string; meta?: { stage?: string; remoteAddress?: string; message?: string; tlsProtocol?: string | null; established?: boolean } };

function isOutdated(version: TlsConfig['minVersion']): boolean {
  return version === 'TLSv1' || version === 'TLSv1.1';
}

/** The TLS settings of the listeners themselves (every client not listed as a legacy device). */
function strictTlsOptions(tls: TlsConfig, keys: { key: Buffer; cert: Buffer }) {
  return {
    ...keys,
    minVersion: tls.minVersion,
    ciphers: tls.ciphers ?? (isOutdated(tls.minVersion) ? LEGACY_CIPHERS : STRICT_CIPHERS),
    secureOptions: SECURE_OPTIONS,
    honorCipherOrder: true,
  };
}

/** The context for listed old devices: TLS 1.0 and the old suites they know, at security level 0. */
function legacyTls(tls: TlsConfig | undefined, keys: { key: Buffer; cert: Buffer } | undefined) {
  if (!tls?.legacyDevices?.length || !keys) return undefined;
  const networks = new NetworkList(tls.legacyDevices);
  const context = createSecureContext({ ...keys, minVersion: 'TLSv1', ciphers: LEGACY_CIPHERS, secureOptions: SECURE_OPTIONS, honorCipherOrder: true });
  return { isLegacy: (address: string) => networks.has(address), context };
}

/** What went wrong in a handshake, as a metric label and a hint for the log. */
function describeTlsFailure(error: TlsError): { result: string; hint: string } {
  const text = `${error.meta?.message ?? ''} ${error.message} ${error.code ?? ''}`.toLowerCase();
  if (/unsupported protocol|version too low|no protocols available/.test(text)) {
    return { result: 'old_protocol', hint: 'the device offered a TLS version below smtp.tls.minVersion: list its network in smtp.tls.legacyDevices (or update its firmware)' };
  }
  if (/no shared cipher|no suitable signature|no cipher|sslv3 alert handshake failure/.test(text)) {
    return { result: 'no_shared_cipher', hint: 'the device offered only old cipher suites: list its network in smtp.tls.legacyDevices, or widen smtp.tls.ciphers' };
  }
  if (/wrong version number|http request|unknown protocol|packet length too long/.test(text)) {
    return { result: 'not_tls', hint: 'the device did not speak TLS here: check its port and its SSL/TLS setting (STARTTLS on smtp.port, implicit TLS on smtp.tls.implicitPort)' };
  }
  if (/socket closed|econnreset/.test(text)) return { result: 'aborted', hint: 'the device hung up during the handshake (often: it does not trust the certificate)' };
  return { result: 'other', hint: 'see the OpenSSL reason; check the device certificate trust and TLS settings' };
}

export class Listener {
  private readonly servers: { server: PromptSmtpServer; port: number; secure: boolean }[] = [];
  private policy: DevicePolicy;
  private readonly guard: AuthGuard;
  private readonly connectionsPerIp = new Map<string, number>();
  /** Set on stop: new sessions get 421 while those in progress finish. */
  private draining = false;
  private readonly warnedClearText = new Set<string>();
  private readonly reportedTlsErrors = new WeakSet<Error>();
  /** Sessions sending without AUTH because their network is listed in `unauthenticated`. */
  private readonly letInByNetwork = new WeakSet<SMTPServerSession>();
  private readonly frontDoor: FrontDoor;
  /** Admitted sessions not logged in yet, with the timer that ends them at smtp.authTimeout. */
  private readonly awaitingLogin = new Map<SMTPServerSession, NodeJS.Timeout>();

  constructor(private readonly options: ListenerOptions) {
    const { config } = options;
    const smtp = config.smtp;
    this.policy = buildPolicy(config);
    this.warnUnauthenticated(config);
    this.guard = new AuthGuard(authGuardLimits(smtp.authFailures), (username) => this.policy.authenticator.has(username));
    this.frontDoor = new FrontDoor({ maxClients: smtp.maxClients, maxUnauthenticatedPerIp: smtp.maxUnauthenticatedPerIp });
    if (smtp.tls && smtp.tls.minVersion !== 'TLSv1.2' && smtp.tls.minVersion !== 'TLSv1.3') {
      options.logger.warn({ minVersion: smtp.tls.minVersion }, 'smtp.tls.minVersion allows outdated TLS for old devices; raise it once they are replaced');
    }
    const tls = readTls(config);
    this.servers.push({ server: this.createServer(false, tls), port: smtp.port, secure: false });
    if (smtp.tls?.implicitPort !== undefined) this.servers.push({ server: this.createServer(true, tls), port: smtp.tls.implicitPort, secure: true });
    if (smtp.tls?.legacyDevices?.length) options.logger.warn({ legacyDevices: smtp.tls.legacyDevices }, 'old TLS (1.0/1.1, security level 0) is allowed for these device networks only');
  }

  /**
   * Reads what a new config needs (certificates) and builds its device policy; throws, changing
   * nothing, when anything cannot be read. The returned function applies it to new sessions
   * (sessions already authenticated keep going).
   */
  prepareReload(config: Config): () => void {
    const keys = readTls(config);
    const legacy = legacyTls(config.smtp.tls, keys);
    const policy = buildPolicy(config);
    return () => {
      this.policy = policy;
      for (const { server } of this.servers) {
        if (keys) server.updateSecureContext(keys);
        server.legacyTls = legacy;
      }
      this.warnUnauthenticated(config);
    };
  }

  /** Whether this device user may send to this address (a report about its mail may go there). */
  mayReceive(username: string | undefined, address: string): boolean {
    const user = username === undefined ? undefined : this.policy.authenticator.user(username) ?? (this.policy.unauthenticated?.user.username === username ? this.policy.unauthenticated.user : undefined);
    return user !== undefined && this.policy.recipients.check(user, address, 0) === undefined;
  }

  private warnUnauthenticated(config: Config): void {
    if (!config.unauthenticated) return;
    const { networks, account } = config.unauthenticated;
    this.options.logger.warn({ networks, account }, 'UNAUTHENTICATED submission is on: any device in these networks can send as the account without a password');
  }

  /** Starts every listener; resolves with their addresses (the plain one first). */
  async listen(): Promise<AddressInfo[]> {
    const addresses: AddressInfo[] = [];
    try {
      for (const { server, port } of this.servers) addresses.push(await listenOn(server, port, this.options.config.smtp.host));
    } catch (error) {
      await this.close();
      throw error;
    }
    return addresses;
  }

  /**
   * Stopping: new sessions are answered 421 (a device tries again later, or through the load
   * balancer elsewhere) while those in progress finish; resolves when none is left, or after
   * timeoutMs. The port stays open until close().
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const giveUpAt = Date.now() + timeoutMs;
    while (this.connectionsPerIp.size > 0 && Date.now() < giveUpAt) await new Promise((resolve) => setTimeout(resolve, 50));
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }

  private createServer(secure: boolean, keys: { key: Buffer; cert: Buffer } | undefined): PromptSmtpServer {
    const { config, hostname, logger } = this.options;
    const smtp = config.smtp;
    const tls = smtp.tls;
    const options: SMTPServerOptions = {
      secure,
      name: hostname,
      banner: 'smtp-oauth-relay ready',
      authMethods: ['PLAIN', 'LOGIN'],
      // Printers rarely speak TLS; clear-text AUTH is allowed (unless requireTls) and logged.
      allowInsecureAuth: true,
      // MAIL without AUTH is refused in onMailFrom unless the policy lists the client's network,
      // which a reload may change: so smtp-server itself never insists.
      authOptional: true,
      authRequiredMessage: 'Authentication required',
      size: smtp.maxMessageSize,
      maxClients: smtp.maxClients,
      socketTimeout: smtp.socketTimeout * 1000,
      closeTimeout: 5000,
      // Without a certificate of our own, smtp-server would offer STARTTLS with a key that ships in
      // its package (anyone could decrypt): offer no STARTTLS at all instead.
      disabledCommands: tls ? [] : ['STARTTLS'],
      ...(tls && keys ? strictTlsOptions(tls, keys) : {}),
      // Exchange Online and Gmail both offer SMTPUTF8 and 8BITMIME: offering them here keeps Postfix
      // (smtputf8_enable = yes) from bouncing mail with raw UTF-8 headers. nodemailer asks the
      // upstream for SMTPUTF8 when an address needs it; an upstream without it refuses that message.
      hideSMTPUTF8: false,
      // RFC 3463 codes on every reply, so devices and logs can tell 4.7.0 from 4.4.1.
      hideENHANCEDSTATUSCODES: false,
      // RFC 3461: NOTIFY, RET, ENVID and ORCPT are honoured (failure reports, passed upstream).
      hideDSN: false,
      // A PTR lookup per connection buys nothing here and stalls where office DNS is slow.
      disableReverseLookup: true,
      // Behind HAProxy or a cloud load balancer: the device's address from its PROXY header (only from those listed).
      useProxy: smtp.proxyProtocol.length ? smtp.proxyProtocol : false,
      logger: false,
      onConnect: (session, callback) => this.onConnect(session, callback),
      onSecure: (socket, _session, callback) => {
        this.options.metrics.tlsHandshakes.inc({ listener: secure ? 'smtps' : 'starttls', version: (socket as TLSSocket).getProtocol() ?? 'unknown', result: 'ok' });
        callback();
      },
      onClose: (session) => this.onClose(session),
      onAuth: (auth, session, callback) => void this.onAuth(auth, session, callback),
      onMailFrom: (address, session, callback) => void this.onMailFrom(address, session, callback),
      onRcptTo: (address, session, callback) => this.onRcptTo(address, session, callback),
      onData: (stream, session, callback) => this.onData(stream, session, callback),
    } as SMTPServerOptions;
    const server = new PromptSmtpServer(options);
    server.legacyTls = legacyTls(tls, keys);
    server.on('error', (error: TlsError) => {
      if (error.meta?.stage === 'connect') return this.tlsFailed(error, secure ? 'smtps' : 'starttls');
      logger.warn({ err: error.message }, 'smtp listener error');
    });
    server.on(SIZE_REFUSED, (session: SMTPServerSession, declared: number) => {
      const user = session.user as unknown as UserConfig | undefined;
      if (user) this.options.metrics.messagesFailed.inc({ account: user.account, reason: 'too_large' });
      logger.warn({ session: session.id, clientIp: session.remoteAddress, user: user?.username, declaredSize: declared, limit: smtp.maxMessageSize }, 'message refused at MAIL FROM: its declared SIZE is over smtp.maxMessageSize');
    });
    return server;
  }

  /** A failed handshake: logged once (smtp-server reports some twice), with the client and a hint, and counted. */
  private tlsFailed(error: TlsError, listener: 'starttls' | 'smtps'): void {
    if (this.reportedTlsErrors.has(error)) return;
    this.reportedTlsErrors.add(error);
    const { remoteAddress: clientIp, tlsProtocol, established } = error.meta ?? {};
    const reason = (error.meta?.message ?? error.message).trim();
    if (established) {
      // An error on a session whose handshake succeeded (a refused renegotiation, a reset).
      this.options.logger.info({ clientIp, listener, protocol: tlsProtocol, reason }, 'TLS session with a device ended with an error');
      return;
    }
    const { result, hint } = describeTlsFailure(error);
    this.options.metrics.tlsHandshakes.inc({ listener, version: tlsProtocol ?? 'unknown', result });
    // The version is the one the client offered (OpenSSL keeps it from the ClientHello).
    this.options.logger[result === 'aborted' ? 'debug' : 'warn']({ clientIp, listener, offered: tlsProtocol ?? undefined, result, reason, hint }, 'TLS handshake with a device failed');
  }

  private onConnect(session: SMTPServerSession, callback: Callback): void {
    if (this.draining) return callback(smtpError(421, '4.3.2', 'Relay shutting down; try again later'));
    const ip = session.remoteAddress;
    const { metrics, logger } = this.options;
    const policy = this.policy;
    if (!policy.allowed.empty && !policy.allowed.has(ip) && !policy.unauthenticated?.networks.has(ip)) {
      logger.warn({ clientIp: ip }, 'connection from an address outside allowNetworks refused');
      return callback(smtpError(554, '5.7.1', 'Access denied: this address may not use the relay'));
    }
    if (this.guard.lockout(ip)) return callback(smtpError(421, '4.7.0', 'Too many failed logins from your address; try again later'));
    const open = this.connectionsPerIp.get(ip) ?? 0;
    if (open >= policy.maxConnectionsPerIp) return callback(smtpError(421, '4.7.0', 'Too many connections from your address; try again later'));
    const admission = this.frontDoor.admit(ip);
    if (!admission.admitted) {
      logger.info({ clientIp: ip, reason: admission.reason }, 'connection refused at the front door');
      return callback(smtpError(421, '4.7.0', admission.reason));
    }
    this.connectionsPerIp.set(ip, open + 1);
    (session as SMTPServerSession & { counted?: true }).counted = true;
    this.awaitingLogin.set(session, setTimeout(() => this.loginTimedOut(session), this.options.config.smtp.authTimeout * 1000).unref());
    metrics.connections.inc();
    metrics.activeConnections.inc();
    logger.debug({ session: session.id, clientIp: ip }, 'device connected');
    callback();
  }

  private onClose(session: SMTPServerSession): void {
    if (!(session as SMTPServerSession & { counted?: true }).counted) return;
    const ip = session.remoteAddress;
    const timer = this.awaitingLogin.get(session);
    clearTimeout(timer);
    this.awaitingLogin.delete(session);
    this.frontDoor.closed(ip, timer !== undefined);
    const open = (this.connectionsPerIp.get(ip) ?? 1) - 1;
    if (open > 0) this.connectionsPerIp.set(ip, open);
    else this.connectionsPerIp.delete(ip);
    this.options.metrics.activeConnections.dec();
  }

  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (error: Error | null | undefined, response?: { user: unknown }) => void): Promise<void> {
    const ip = session.remoteAddress;
    const username = auth.username ?? '';
    const { metrics, logger } = this.options;
    const policy = this.policy;
    const log = logger.child({ session: session.id, clientIp: ip });
    if (policy.requireTls && !session.secure) return callback(smtpError(530, '5.7.0', 'Must issue a STARTTLS command first'));
    if (CONTROL_CHARACTERS.test(username)) return callback(smtpError(501, '5.5.4', 'Invalid characters in the user name'));
    // RFC 4616: acting as another identity (an authzid other than the user) is not something a device may do here.
    if (auth.authzid && auth.authcid && auth.authzid !== auth.authcid) {
      return callback(smtpError(535, '5.7.8', 'Authorization identity must be empty or the same as the user name'));
    }
    const lockout = this.guard.lockout(ip, username);
    if (lockout) return this.refuseLockedOut(lockout, username, log, callback);
    // A remembered login, or one being checked right now, costs nothing: it is not counted ahead.
    // Any other attempt counts as a failure before its slow check, so bursts cannot outrun the limit.
    const attempt = policy.authenticator.costsNothing(username, auth.password ?? '') ? undefined : this.guard.begin(ip, username);
    if (attempt && !('succeeded' in attempt)) return this.refuseLockedOut(attempt, username, log, callback);
    let user: UserConfig | undefined;
    try {
      user = await policy.authenticator.verify(username, auth.password ?? '');
    } catch (error) {
      attempt?.succeeded(); // not checked, so not counted
      log.warn({ user: username, err: (error as Error).message }, 'login not checked: too many password checks waiting');
      return callback(smtpError(454, '4.7.0', 'Temporary authentication failure; try again later'));
    }
    const networks = user && policy.userNetworks.get(user.username);
    if (!user || (networks && !networks.has(ip))) {
      metrics.authFailures.inc();
      // A failure that joined another's check is counted now, for its own client too.
      const counted = attempt ?? this.guard.begin(ip, username);
      const { delayMs, lockouts } = 'failed' in counted ? counted.failed() : { delayMs: 0, lockouts: [] };
      for (const scope of lockouts) metrics.authLockouts.inc({ scope });
      this.options.onAuthFailure?.(ip, username);
      log.warn({ user: username, method: auth.method, outsideUserNetworks: !!user, lockouts }, 'device authentication failed');
      await sleep(delayMs);
      return callback(smtpError(535, '5.7.8', 'Authentication credentials invalid'));
    }
    attempt?.succeeded();
    this.admitted(session);
    if (!session.secure) this.warnClearText(ip, log.child({ user: user.username }));
    this.options.onLogin?.(user.username, ip);
    callback(null, { user });
  }

  /** A session logged in (or was let in by its network): no deadline, and its address is a known device. */
  private admitted(session: SMTPServerSession): void {
    const timer = this.awaitingLogin.get(session);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.awaitingLogin.delete(session);
    this.frontDoor.loggedIn(session.remoteAddress);
  }

  /** smtp.authTimeout passed without a login: the session goes, so idle strangers cannot hold the listener. */
  private loginTimedOut(session: SMTPServerSession): void {
    if (!this.awaitingLogin.has(session)) return;
    for (const { server } of this.servers) {
      for (const connection of server.connections as Set<{ session: SMTPServerSession; send(code: number, text: string): void; close(): void }>) {
        if (connection.session !== session) continue;
        this.options.logger.info({ session: session.id, clientIp: session.remoteAddress }, 'session closed: no login within smtp.authTimeout');
        connection.send(421, '4.7.0 No login in time; closing connection');
        connection.close();
        return;
      }
    }
  }

  /** Client addresses and user names locked out now (the console's Devices page). */
  lockouts(): ActiveLockout[] {
    return this.guard.active();
  }

  /** An administrator lifts a lockout (after fixing the device's password, say). */
  unlock(scope: Lockout['scope'], key: string): boolean {
    const lifted = this.guard.lift(scope, key);
    if (lifted) this.options.logger.info({ scope, key }, 'lockout lifted by an administrator');
    return lifted;
  }

  /**
   * A failed login on another replica (or in another process of this host) counts against the same
   * limits here. `reported`: the lockout it causes is counted and logged here (false where a
   * process beside this one counts it for the host).
   */
  noteFailureElsewhere(ip: string, username: string, reported = true): void {
    for (const scope of this.guard.noteFailureElsewhere(ip, username)) {
      if (!reported) continue;
      this.options.metrics.authLockouts.inc({ scope });
      this.options.logger.warn({ clientIp: ip, user: username, scope }, 'device login locked out after failures across the cluster');
    }
  }

  private refuseLockedOut(lockout: Lockout, username: string, log: Logger, callback: (error: Error) => void): void {
    log.warn({ user: username, scope: lockout.scope, until: new Date(lockout.until).toISOString() }, 'login refused: locked out after failed attempts');
    callback(smtpError(421, '4.7.0', 'Too many failed logins; try again later'));
  }

  private warnClearText(clientIp: string, log: Logger): void {
    if (this.warnedClearText.has(clientIp)) return;
    if (this.warnedClearText.size >= WARNED_CLIENTS_LIMIT) this.warnedClearText.clear();
    this.warnedClearText.add(clientIp);
    log.warn('device sent its password without TLS; configure smtp.tls and enable STARTTLS on the device if it can');
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): Promise<void> {
    if (CONTROL_CHARACTERS.test(address.address)) return callback(smtpError(501, '5.1.7', 'Invalid characters in the sender address'));
    const refusal = envelopeRefusal(address, MAIL_PARAMETERS, address.args !== false && (address.args as Record<string, unknown>).SMTPUTF8 === true);
    if (refusal) return callback(refusal);
    if (!session.user) {
      const { unauthenticated, requireTls } = this.policy;
      if (!unauthenticated?.networks.has(session.remoteAddress)) return callback(smtpError(530, '5.7.0', 'Authentication required'));
      if (requireTls && !session.secure) return callback(smtpError(530, '5.7.0', 'Must issue a STARTTLS command first'));
      // The device is let in by its address: it sends as the configured account.
      session.user = unauthenticated.user as unknown as string;
      this.letInByNetwork.add(session);
      this.admitted(session);
    }
    const declared = Number(address.args ? (address.args as Record<string, string>).SIZE : undefined) || undefined;
    this.options.admit(declared).then(
      () => callback(),
      (error: unknown) => callback(this.localFault(error, session)),
    );
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): void {
    if (CONTROL_CHARACTERS.test(address.address)) return callback(smtpError(501, '5.1.3', 'Invalid characters in the recipient address'));
    const envelopeProblem = envelopeRefusal(address, RCPT_PARAMETERS, session.envelope.smtpUtf8 === true);
    if (envelopeProblem) return callback(envelopeProblem);
    const user = session.user as unknown as UserConfig;
    const refusal = this.policy.recipients.check(user, address.address, session.envelope.rcptTo.length);
    if (refusal) this.options.logger.warn({ session: session.id, user: user.username, recipient: address.address, reply: refusal.message }, 'recipient refused');
    callback(refusal);
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void {
    const user = session.user as unknown as UserConfig;
    const transaction: Transaction = {
      sessionId: session.id,
      clientIp: session.remoteAddress,
      helo: session.hostNameAppearsAs || '',
      esmtp: session.openingCommand !== 'HELO',
      secure: session.secure,
      user,
      authenticated: !this.letInByNetwork.has(session),
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      rcptTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
      dsn: dsnRequest(session),
      content: declaredContent(session.envelope),
    };
    const hangUp = new AbortController();
    const lost = () => {
      if (!stream.readableEnded) hangUp.abort(defer('disconnected', 'Connection closed in the middle of DATA', '4.4.2'));
    };
    stream.once('close', lost);
    stream.once('error', lost);
    this.options.handler(stream, transaction, hangUp.signal).then(
      (reply) => callback(null, reply),
      (error: unknown) => {
        // Whatever failed, the rest of DATA must be read or the session hangs until it times out.
        stream.unpipe();
        stream.resume();
        callback(this.localFault(error, session));
      },
    );
  }

  /** A failure as the device's reply; a fault of ours is logged with its cause and is a 4xx. */
  private localFault(error: unknown, session: SMTPServerSession): SmtpError {
    const reply = asSmtpError(error);
    if (reply.reason === 'internal') {
      this.options.logger.error({ session: session.id, err: (reply.cause as Error | undefined)?.message }, 'local error; the device was told to try again');
    }
    return reply;
  }
}

/**
 * An envelope address the listener cannot take: a parameter it does not implement (RFC 5321
 * 4.1.1.11: 555), or a non-ASCII address in a transaction that did not ask for SMTPUTF8 (RFC 6531: 553 5.6.7).
 */
function envelopeRefusal(address: SMTPServerAddress, implemented: ReadonlySet<string>, smtpUtf8: boolean): SmtpError | undefined {
  const unknown = Object.keys(address.args || {}).find((key) => !implemented.has(key.toUpperCase()));
  if (unknown) return smtpError(555, '5.5.4', `Parameter ${unknown} is not supported`);
  if (!smtpUtf8 && /[^\x00-\x7f]/.test(address.address)) return smtpError(553, '5.6.7', 'Non-ASCII addresses need the SMTPUTF8 parameter on MAIL FROM');
  return undefined;
}

/** The session's DSN parameters, or undefined when the device gave none. */
function dsnRequest(session: SMTPServerSession): DsnRequest | undefined {
  const { ret, envid } = session.envelope.dsn ?? {};
  const recipients = Object.fromEntries(
    session.envelope.rcptTo.filter((rcpt) => rcpt.dsn?.notify || rcpt.dsn?.orcpt).map((rcpt) => [rcpt.address, { notify: rcpt.dsn?.notify, orcpt: rcpt.dsn?.orcpt }]),
  );
  const hasRecipients = Object.keys(recipients).length > 0;
  if (!ret && !envid && !hasRecipients) return undefined;
  return { ret: (ret as DsnRequest['ret']) ?? undefined, envid: envid ?? undefined, recipients: hasRecipients ? recipients : undefined };
}

export function authGuardLimits(failures: Config['smtp']['authFailures']): AuthGuardLimits {
  return { maxPerIp: failures.maxPerIp, maxPerUser: failures.maxPerUser, windowMs: failures.window * 1000, lockoutMs: failures.lockout * 1000 };
}

function smtpError(code: number, enhanced: string, text: string): SmtpError {
  return reject('policy', code, enhanced, text);
}

function listenOn(server: SMTPServer, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.server.address() as AddressInfo);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}
