import type net from 'node:net';
import type tls from 'node:tls';
import type { SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import { PromptConnection, PromptSmtpServer } from '../listener/index.js';
import type { ProviderProfile, ScriptedReply } from './provider-profiles.js';

const OWN_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;

/** How the stand-in decides an XOAUTH2 login: the session's user, or the provider's refusal. */
export type BearerVerdict = { user: string } | { refuse: ScriptedReply; tokenRefused?: boolean };

export interface ProviderWire {
  profile: ProviderProfile;
  /** Every AUTH line as the client sent it, continuation lines included (what a test asserts on). */
  recordAuthLine(line: string): void;
  checkBearer(user: string, token: string, session: SMTPServerSession): BearerVerdict;
}

/**
 * The submission server of the stand-in provider: smtp-server's sessions, with the greeting, EHLO,
 * STARTTLS and XOAUTH2 exchange of a provider profile. Basic mechanisms (PLAIN, LOGIN) go through
 * smtp-server's SASL to the server's onAuth, which refuses them as the provider does.
 */
export class ProviderSmtpServer extends PromptSmtpServer {
  constructor(
    readonly wire: ProviderWire,
    options: SMTPServerOptions,
  ) {
    super(options);
  }

  protected override createConnection(socket: net.Socket | tls.TLSSocket, socketOptions?: ConstructorParameters<typeof PromptConnection>[2]): PromptConnection {
    return new ProviderConnection(this, socket, socketOptions);
  }
}

class ProviderConnection extends PromptConnection {
  private get wire(): ProviderWire {
    return (this._server as unknown as ProviderSmtpServer).wire;
  }

  override _sendGreeting(): void {
    this.send(220, this.wire.profile.greeting(), false);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    const parts = command.toString().trim().split(/\s+/);
    if (parts.length !== 2) {
      this.send(501, '5.5.4 Invalid domain name', false);
      return callback();
    }
    this.hostNameAppearsAs = parts[1].toLowerCase();
    this._resetSession(); // EHLO is an implicit RSET (RFC 5321 4.1.4)
    this.send(250, this.wire.profile.ehlo(this.secure, this.remoteAddress, Number(this._server.options.size)), false);
    callback();
  }

  override handler_STARTTLS(command: Buffer, callback: () => void): void {
    if (this.secure || command.toString().trim().split(/\s+/).length > 1) return super.handler_STARTTLS(command, callback);
    this.send(220, this.wire.profile.startTlsReply, false);
    this.upgrade(callback);
  }

  override handler_AUTH(command: Buffer, callback: () => void): void {
    const line = command.toString();
    this.wire.recordAuthLine(line);
    const [, mechanism = '', initialResponse] = line.trim().split(/\s+/);
    if (mechanism.toUpperCase() !== 'XOAUTH2' || !this.secure || this.session.user) return super.handler_AUTH(command, callback);
    if (initialResponse !== undefined) return this.xoauth2(initialResponse, callback);
    this._nextHandler = (response, next) => {
      this.wire.recordAuthLine(response.toString());
      this.xoauth2(response.toString(), next);
    };
    this.send(334, '', false);
    callback();
  }

  /**
   * A reply whose text has line breaks goes out as a multi-line reply, and one whose text starts
   * with its own enhanced code keeps it alone (the 250 after DATA included), as the providers send them.
   */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (typeof data === 'string' && data.includes('\n')) return super.send(code, data.split(/\r?\n/), false);
    super.send(code, data, typeof data === 'string' && OWN_CODE.test(data) ? false : context);
  }

  private xoauth2(encoded: string, callback: () => void): void {
    const { profile } = this.wire;
    const fields = new Map(
      Buffer.from(encoded.trim(), 'base64')
        .toString()
        .split('\x01')
        .map((field) => [field.slice(0, field.indexOf('=')).toLowerCase(), field.slice(field.indexOf('=') + 1)] as const),
    );
    const token = /^Bearer (\S+)$/i.exec(fields.get('auth') ?? '')?.[1];
    const user = fields.get('user');
    if (!user || !token) return this.reply(profile.replies.undecodableLogin, callback);
    const verdict = this.wire.checkBearer(user, token, this.session);
    if ('user' in verdict) {
      this.session.user = verdict.user;
      this.send(235, profile.authSucceeded, false);
      return callback();
    }
    if (!profile.tokenChallenge || !verdict.tokenRefused) return this.reply(verdict.refuse, callback);
    // Gmail: a refused token is told as a challenge; whatever the client answers, then the 535.
    this._nextHandler = (answer, next) => {
      this.wire.recordAuthLine(answer.toString());
      this.reply(verdict.refuse, next);
    };
    this.send(334, Buffer.from(JSON.stringify(profile.tokenChallenge)).toString('base64'), false);
    callback();
  }

  private reply(reply: ScriptedReply, callback: () => void): void {
    this.send(reply.code, reply.message, false);
    callback();
  }
}
