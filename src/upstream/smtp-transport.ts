import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { ResolvedAccount } from '../config/index.js';
import type { AccessTokens } from '../oauth/index.js';
import type { SmtpError } from '../reply.js';
import { classifySendError, type NodemailerError } from './classify.js';
import { SmtpPool, type SessionSlots } from './smtp-pool.js';
import type { Envelope, SendReceipt, Transport } from './transport.js';
import './smtputf8.js';
import { RELAY_LOGIN_METHOD, XOAuth2Rejected, logInWithXOAuth2, type LoginContext } from './xoauth2-login.js';

/**
 * SMTP submission (587, STARTTLS with a verified certificate) that logs in with AUTH XOAUTH2 using
 * the token manager's token, over nodemailer's SMTPConnection: the raw message is streamed as it
 * is (no Mail object compiled per message), and MAIL, RCPT and DATA go in one write where the
 * server offers PIPELINING. Nodemailer's own OAuth2 client is bypassed (it caches per connection
 * and does not retry Office 365's plain 535).
 */
export class SmtpTransport implements Transport {
  readonly name = 'smtp';
  readonly deliversToHeader = false;
  readonly sessionsPerConnection = true;
  readonly maxRecipientsPerAttempt?: number;
  private readonly pool: SmtpPool;
  private readonly options: SMTPConnection.Options;

  constructor(
    private readonly account: ResolvedAccount,
    private readonly tokens: AccessTokens,
    private readonly hostname: string,
    sessions: SessionSlots,
  ) {
    const upstream = account.upstream;
    this.options = {
      host: upstream.host,
      port: upstream.port,
      secure: false,
      requireTLS: true,
      // SNI carries host names only (RFC 6066); an IP address is still checked against the certificate.
      tls: { ca: upstream.ca ? readFileSync(upstream.ca) : undefined, minVersion: 'TLSv1.2', servername: isIP(upstream.host) ? undefined : upstream.host },
      name: hostname,
      connectionTimeout: upstream.timeoutMs,
      greetingTimeout: upstream.timeoutMs,
      socketTimeout: upstream.timeoutMs,
      logger: false,
      // XOAUTH2 only, whatever else the server lists, and no password at all (xoauth2-login.ts).
      customAuth: { [RELAY_LOGIN_METHOD]: (ctx) => logInWithXOAuth2(ctx as unknown as LoginContext, this.account.mailbox, this.tokens, this.hostname) },
    };
    this.pool = new SmtpPool({ maxConnections: upstream.maxConnections, sessions, open: () => this.connect() });
    this.maxRecipientsPerAttempt = upstream.maxRecipientsPerMessage;
  }

  async deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    // BODY=8BITMIME and SMTPUTF8 where the device declared them (SMTPUTF8 content is 8-bit too).
    const smtpUtf8 = envelope.content?.smtpUtf8 === true;
    const use8BitMime = smtpUtf8 || envelope.content?.eightBitMime === true;
    const info = await this.pool.send({ from: envelope.from, to: envelope.to, size: envelope.size, use8BitMime, smtpUtf8, dsn: envelope.dsn as SMTPConnection.DSNOptions | undefined }, message, signal);
    const rejected = (info.rejectedErrors ?? []).map((error) => ({
      address: String((error as { recipient?: string }).recipient ?? ''),
      response: error.response ?? error.message,
    }));
    return { accepted: info.accepted, rejected, response: info.response };
  }

  /**
   * A connected session, logged in whatever the server lists: a server that lists no AUTH is still
   * "logged in to", so the handler refuses it instead of the message going out unauthenticated.
   */
  private connect(): Promise<SMTPConnection> {
    const connection = new SMTPConnection(this.options);
    // No error event goes unheard: a second one (the socket's, once the connection is being closed),
    // nor one between sends, when the pool learns of a closed connection from its 'end'.
    connection.on('error', () => undefined);
    return new Promise((resolve, reject) => {
      const fail = (error: Error) => {
        connection.close();
        reject(error);
      };
      connection.once('error', fail);
      connection.connect((connectError) => {
        if (connectError) return fail(connectError);
        connection.login({ method: RELAY_LOGIN_METHOD, user: this.account.mailbox }, (loginError) => {
          if (loginError) return fail(loginError);
          connection.removeListener('error', fail);
          resolve(connection);
        });
      });
    });
  }

  worthOneRetry(error: unknown): boolean {
    // A refused token was dropped when the login failed (nodemailer re-labels the handler's error
    // as EAUTH but keeps the object); a pooled connection the upstream had closed is gone.
    return error instanceof XOAuth2Rejected || (error as NodemailerError).code === 'ECONNECTION';
  }

  pauseAsked(): undefined {
    return undefined; // SMTP throttling (4.7.x) is a reply like any other: the queue's backoff applies
  }

  classify(error: unknown, account: string): SmtpError {
    return classifySendError(error, account);
  }

  close(): void {
    this.pool.close();
  }
}
