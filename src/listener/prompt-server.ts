import type net from 'node:net';
import type tls from 'node:tls';
import { domainToASCII } from 'node:url';
import { randomBytes } from 'node:crypto';
import { SMTPServer } from 'smtp-server';
import { readProxyV2 } from './proxy-v2.js';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** A reply text that already starts with an enhanced status code (RFC 3463), e.g. "5.7.60 ...". */
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;
/** `MAIL FROM: printer@example.com` / `RCPT TO:x@y` without angle brackets, parameters after it. */
const BARE_PATH = /^((?:MAIL FROM|RCPT TO)[ \t]*:[ \t]*)([^\s<>]+@[^\s<>]+)((?:[ \t].*)?)$/is;

/** Emitted by the server when MAIL FROM declared a SIZE over the limit (smtp-server answers 552 itself). */
export const SIZE_REFUSED = 'sizeRefused';

/**
 * One SMTP session. Two things differ from smtp-server's own connection:
 * - the greeting goes out at once. smtp-server holds it 100 ms to catch "early talkers", an
 *   anti-spam measure for port 25; on this listener it only capped a printer at ~9 messages a
 *   second and refused BusyBox `sendmail`, which writes before the greeting;
 * - a reply whose text carries its own enhanced code (the upstream's 5.7.60, our 4.3.1) keeps it:
 *   smtp-server would derive one from the reply code alone (550 → 5.1.1) and show both;
 * - a path without angle brackets (`MAIL FROM: printer@example.com`), which old devices send and
 *   Postfix accepts by default (strict_rfc821_envelopes = no), is read as if it had them;
 * - a SIZE refused at MAIL FROM is told to the server (SIZE_REFUSED), to be logged and counted.
 */
export class PromptConnection extends SMTPConnection {
  declare _server: PromptSmtpServer;

  override upgrade(callback: () => void, secureCallback?: () => void): void {
    this._server.withContextFor(this.remoteAddress, () => super.upgrade(callback, secureCallback));
  }

  override _onError(error: Error & { meta?: Record<string, unknown> }): void {
    if (error.meta) {
      // A failed STARTTLS handshake arrives without the client's address; the log needs it. An
      // error on a session already upgraded (a refused renegotiation) is no handshake failure.
      error.meta.remoteAddress ??= this.remoteAddress;
      error.meta.established = this.secure;
    }
    super._onError(error);
  }

  override init(): void {
    this._setListeners(() => {
      const { options, connections } = this._server;
      if (options.maxClients && connections.size > options.maxClients) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      this.connectionReady();
    });
  }

  override _parseAddressCommand(name: string, command: Buffer | string): ReturnType<SMTPConnection['_parseAddressCommand']> {
    const text = command.toString();
    const bare = BARE_PATH.exec(text);
    const parsed = super._parseAddressCommand(name, bare ? `${bare[1]}<${bare[2]}>${bare[3]}` : command);
    // smtp-server turns an ASCII (punycode) domain into Unicode; the address goes on as it was sent.
    if (parsed && parsed.address && !/[^\x00-\x7f]/.test(text)) parsed.address = withAsciiDomain(parsed.address);
    return parsed;
  }

  override _validateMailParams(parsed: Parameters<SMTPConnection['_validateMailParams']>[0]): ReturnType<SMTPConnection['_validateMailParams']> {
    const problem = super._validateMailParams(parsed);
    if (problem?.code === 552) this._server.emit(SIZE_REFUSED, this.session, Number(parsed.args && (parsed.args as Record<string, string>).SIZE));
    return problem;
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = context === undefined && typeof data === 'string' && ENHANCED_PREFIX.test(data);
    super.send(code, data, ownCode ? false : context);
  }
}

function withAsciiDomain(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : `${address.slice(0, at)}@${domainToASCII(address.slice(at + 1)) || address.slice(at + 1)}`;
}

/**
 * smtp-server with PromptConnection sessions: the device listener, and the stand-in provider (which
 * greets at once, as the real providers do). Everything else is the library's.
 */
export class PromptSmtpServer extends SMTPServer {
  /** Old devices (by address) that get the legacy TLS context instead of the strict one. */
  legacyTls?: { isLegacy: (address: string) => boolean; context: tls.SecureContext };

  /**
   * Runs a handshake set-up with the legacy context when the client is a listed old device.
   * smtp-server reads the context from its map synchronously while setting up the socket, so
   * the entry is swapped for exactly that call.
   */
  withContextFor(address: string, setUp: () => void): void {
    const legacy = this.legacyTls;
    if (!legacy?.isLegacy(address)) return setUp();
    const strict = this.secureContext.get('*')!;
    this.secureContext.set('*', legacy.context);
    try {
      setUp();
    } finally {
      this.secureContext.set('*', strict);
    }
  }

  override _upgrade(socket: net.Socket, callback: Parameters<SMTPServer['_upgrade']>[1]): void {
    this.withContextFor(socket.remoteAddress ?? '', () => super._upgrade(socket, callback));
  }

  /**
   * From a proxy listed in useProxy: a PROXY v2 header is read here, a v1 header by smtp-server
   * (which reads only v1). Either way the session sees the device's address.
   */
  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (!this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    readProxyV2(socket).then(
      (header) => {
        if (header.kind === 'not-v2') return super._handleProxy(socket, callback);
        const id = BigInt(`0x${randomBytes(10).toString('hex')}`).toString(32).padStart(16, '0');
        callback(null, header.kind === 'proxied' ? { id, remoteAddress: header.address, remotePort: header.port } : { id });
      },
      (error: Error) => {
        socket.on('error', () => undefined);
        socket.destroy();
        callback(error);
      },
    );
  }

  /** The session class; the stand-in provider's sessions speak a provider's wire instead. */
  protected createConnection(socket: net.Socket | tls.TLSSocket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): PromptConnection {
    return new PromptConnection(this, socket, socketOptions);
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): void {
    const connection = this.createConnection(socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (error: Error) => this._onError(error));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}
