import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import nodemailer, { type Mail, type SMTPPoolOptions } from 'nodemailer';
import type { ResolvedAccount } from '../config/index.js';
import type { TokenManager } from '../oauth/index.js';
import type { SmtpError } from '../reply.js';
import { classifySendError, type NodemailerError } from './classify.js';
import type { Envelope, SendReceipt, Transport } from './transport.js';
import './smtputf8.js';
import { RELAY_LOGIN_METHOD, XOAuth2Rejected, logInWithXOAuth2, type LoginContext } from './xoauth2-login.js';

/**
 * SMTP submission (587, STARTTLS with a verified certificate) that logs in with AUTH XOAUTH2 using
 * the token manager's token, through a nodemailer transport. Nodemailer's own OAuth2 client is
 * bypassed (it caches per connection and does not retry Office 365's plain 535).
 */
export class SmtpTransport implements Transport {
  readonly name = 'smtp';
  readonly deliversToHeader = false;
  private readonly transport: Mail;

  /** @param pooled whether idle connections are kept (not in a cluster: every send holds a cluster-wide slot and its own connection). */
  constructor(account: ResolvedAccount, tokens: TokenManager, hostname: string, pooled: boolean) {
    const upstream = account.upstream;
    this.transport = nodemailer.createTransport({
      pool: pooled,
      maxConnections: upstream.maxConnections,
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
      // nodemailer would re-send a message whose connection closed mid-send from the same, already
      // read stream; the retry is the caller's, from a fresh read of the file.
      maxRequeues: 0,
      // XOAUTH2 only, whatever else the server lists, and no password at all (xoauth2-login.ts).
      // forceAuth: a server that lists no AUTH is still "logged in to", so the handler refuses it
      // instead of the message going out unauthenticated.
      forceAuth: true,
      auth: { type: 'custom', method: RELAY_LOGIN_METHOD, user: account.mailbox },
      customAuth: { [RELAY_LOGIN_METHOD]: (ctx: LoginContext) => logInWithXOAuth2(ctx, account.mailbox, tokens, hostname) },
    } as SMTPPoolOptions & { pool: true });
    this.maxRecipientsPerAttempt = upstream.maxRecipientsPerMessage;
  }

  readonly maxRecipientsPerAttempt?: number;

  async deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    // BODY=8BITMIME and SMTPUTF8 where the device declared them (SMTPUTF8 content is 8-bit too).
    const smtpUtf8 = envelope.content?.smtpUtf8 === true;
    const use8BitMime = smtpUtf8 || envelope.content?.eightBitMime === true;
    const info = await this.transport.sendMail({ envelope: { from: envelope.from, to: envelope.to, size: envelope.size, use8BitMime, smtpUtf8 } as Mail.Options['envelope'], raw: message, dsn: envelope.dsn, signal });
    const rejectedErrors = ((info as { rejectedErrors?: NodemailerError[] }).rejectedErrors ?? []).map((error) => ({
      address: String((error as { recipient?: string }).recipient ?? ''),
      response: error.response ?? error.message,
    }));
    return { accepted: (info.accepted as string[]) ?? [], rejected: rejectedErrors, response: info.response ?? '' };
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
    this.transport.close();
  }
}
