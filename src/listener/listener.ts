import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession, type SMTPServerAuthentication } from 'smtp-server';
import './replies.js';
import type { Config, UserConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { SmtpError, defer, reject } from '../reply.js';
import { DeviceAuthenticator } from './passwords.js';

/** What the listener knows about a message when its DATA starts. */
export interface Transaction {
  sessionId: string;
  clientIp: string;
  user: UserConfig;
  mailFrom: string;
  rcptTo: string[];
}

/** The next stage: consumes the DATA stream and resolves with the text of the 250 reply. */
export type MessageHandler = (stream: SMTPServerDataStream, transaction: Transaction) => Promise<string>;

export interface ListenerOptions {
  config: Config;
  hostname: string;
  handler: MessageHandler;
  /** Asked at MAIL FROM (with the SIZE the device declared) whether new mail can be taken now. */
  admit: (declaredSize: number | undefined) => Promise<void>;
  metrics: Metrics;
  logger: Logger;
}

/** Remembers which clients were warned about clear-text AUTH, without growing forever. */
const WARNED_CLIENTS_LIMIT = 1000;

/**
 * The SMTP side the devices talk to: AUTH PLAIN/LOGIN against the configured users, MAIL only
 * after AUTH, and every DATA handed to the message handler, whose verdict becomes the reply.
 */
export class Listener {
  private readonly server: SMTPServer;
  private authenticator: DeviceAuthenticator;
  private readonly warnedClearText = new Set<string>();

  constructor(private readonly options: ListenerOptions) {
    const { config, hostname } = options;
    this.authenticator = new DeviceAuthenticator(config.users);
    const tls = config.smtp.tls;
    this.server = new SMTPServer({
      name: hostname,
      banner: 'smtp-oauth-relay ready',
      authMethods: ['PLAIN', 'LOGIN'],
      // Printers rarely speak TLS; clear-text AUTH is allowed and logged (see onAuth).
      allowInsecureAuth: true,
      authRequiredMessage: 'Authentication required',
      size: config.smtp.maxMessageSize,
      maxClients: config.smtp.maxClients,
      socketTimeout: config.smtp.socketTimeout * 1000,
      closeTimeout: 5000,
      // Without a certificate of our own, smtp-server would offer STARTTLS with a key that ships in
      // its package (anyone could decrypt): offer no STARTTLS at all instead.
      disabledCommands: tls ? [] : ['STARTTLS'],
      key: tls ? readFileSync(tls.key) : undefined,
      cert: tls ? readFileSync(tls.cert) : undefined,
      // The upstream leg is not known to carry SMTPUTF8; 8BITMIME is honoured by both providers.
      hideSMTPUTF8: true,
      // RFC 3463 codes on every reply, so devices and logs can tell 4.7.0 from 4.4.1.
      hideENHANCEDSTATUSCODES: false,
      logger: false,
      onConnect: (session, callback) => this.onConnect(session, callback),
      onClose: () => options.metrics.activeConnections.dec(),
      onAuth: (auth, session, callback) => void this.onAuth(auth, session, callback),
      onMailFrom: (address, _session, callback) => {
        const declared = Number(address.args && (address.args as Record<string, string>).SIZE) || undefined;
        options.admit(declared).then(() => callback(), callback);
      },
      onData: (stream, session, callback) => this.onData(stream, session, callback),
    });
    this.server.on('error', (error) => options.logger.warn({ err: error.message }, 'smtp listener error'));
  }

  /** Device users from a reloaded config; sessions already authenticated keep going. */
  replaceUsers(users: UserConfig[]): void {
    this.authenticator = new DeviceAuthenticator(users);
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.options.config.smtp;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private onConnect(session: SMTPServerSession, callback: (error?: Error) => void): void {
    this.options.metrics.connections.inc();
    this.options.metrics.activeConnections.inc();
    this.options.logger.debug({ session: session.id, clientIp: session.remoteAddress }, 'device connected');
    callback();
  }

  private async onAuth(
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    callback: (error: Error | null | undefined, response?: { user: unknown }) => void,
  ): Promise<void> {
    const user = await this.authenticator.verify(auth.username ?? '', auth.password ?? '').catch(() => undefined);
    const log = this.options.logger.child({ session: session.id, clientIp: session.remoteAddress, user: auth.username });
    if (!user) {
      this.options.metrics.authFailures.inc();
      log.warn({ method: auth.method }, 'device authentication failed');
      return callback(reject('internal', 535, '5.7.8', 'Authentication credentials invalid'));
    }
    if (!session.secure) this.warnClearText(session.remoteAddress, log);
    callback(null, { user });
  }

  private warnClearText(clientIp: string, log: Logger): void {
    if (this.warnedClearText.has(clientIp)) return;
    if (this.warnedClearText.size >= WARNED_CLIENTS_LIMIT) this.warnedClearText.clear();
    this.warnedClearText.add(clientIp);
    log.warn('device sent its password without TLS; configure smtp.tls and enable STARTTLS on the device if it can');
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void {
    const transaction: Transaction = {
      sessionId: session.id,
      clientIp: session.remoteAddress,
      user: session.user as unknown as UserConfig,
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      rcptTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
    };
    this.options.handler(stream, transaction).then(
      (reply) => callback(null, reply),
      (error: unknown) => {
        // Whatever failed, the rest of DATA must be read or the session hangs until it times out.
        stream.unpipe();
        stream.resume();
        callback(error instanceof SmtpError ? error : defer('internal', 'Local error; try again later', '4.3.0', error));
      },
    );
  }
}
