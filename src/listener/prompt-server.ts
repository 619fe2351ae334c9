import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** A reply text that already starts with an enhanced status code (RFC 3463), e.g. "5.7.60 ...". */
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

/**
 * One SMTP session. Two things differ from smtp-server's own connection:
 * - the greeting goes out at once. smtp-server holds it 100 ms to catch "early talkers", an
 *   anti-spam measure for port 25; on this listener it only capped a printer at ~9 messages a
 *   second and refused BusyBox `sendmail`, which writes before the greeting;
 * - a reply whose text carries its own enhanced code (the upstream's 5.7.60, our 4.3.1) keeps it:
 *   smtp-server would derive one from the reply code alone (550 → 5.1.1) and show both.
 */
class PromptConnection extends SMTPConnection {
  override init(): void {
    this._setListeners(() => {
      const { options, connections } = this._server;
      if (options.maxClients && connections.size > options.maxClients) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      this.connectionReady();
    });
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = context === undefined && typeof data === 'string' && ENHANCED_PREFIX.test(data);
    super.send(code, data, ownCode ? false : context);
  }
}

/**
 * smtp-server with PromptConnection sessions: the device listener, and the stand-in provider (which
 * greets at once, as the real providers do). Everything else is the library's.
 */
export class PromptSmtpServer extends SMTPServer {
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): void {
    const connection = new PromptConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (error: Error) => this._onError(error));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}
