import net from 'node:net';
import tls from 'node:tls';

/**
 * A bare SMTP client for what polite clients never send: smuggling payloads, control characters,
 * junk. It writes exactly the bytes it is given and reads whole replies.
 */
export class RawSmtp {
  private static readonly open = new Set<RawSmtp>();
  private buffer = '';
  private waiting?: (reply: string) => void;
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (data: string) => {
      this.buffer += data;
      this.deliver();
    });
    socket.on('error', () => undefined);
    RawSmtp.open.add(this);
    socket.on('close', () => {
      RawSmtp.open.delete(this);
      this.closed = true;
      this.waiting?.(this.buffer || '(closed)');
    });
  }

  /** `preface`: bytes sent before anything else (a load balancer's PROXY header). */
  static async connect(port: number, options: { host?: string; implicitTls?: boolean; localAddress?: string; preface?: Buffer | string } = {}): Promise<{ client: RawSmtp; greeting: string }> {
    const host = options.host ?? '127.0.0.1';
    const { localAddress } = options;
    const socket = options.implicitTls ? tls.connect({ port, host, rejectUnauthorized: false }) : net.connect({ port, host, localAddress });
    if (options.preface !== undefined) socket.write(options.preface);
    const client = new RawSmtp(socket);
    const greeting = await client.read();
    return { client, greeting };
  }

  /** A device logged in and past DATA's 354, about to send its message (to break it off, or trickle it). */
  static async inData(port: number, login: { username: string; password: string }, envelope: { from: string; to: string[] }): Promise<RawSmtp> {
    const { client } = await RawSmtp.connect(port);
    await client.command('EHLO printer');
    await client.login(login.username, login.password);
    await client.command(`MAIL FROM:<${envelope.from}>`);
    for (const recipient of envelope.to) await client.command(`RCPT TO:<${recipient}>`);
    const reply = await client.command('DATA');
    if (!reply.startsWith('354')) throw new Error(`DATA was answered ${reply.trim()}`);
    return client;
  }

  /** One command line (CRLF added); resolves with the complete reply. */
  command(line: string): Promise<string> {
    return this.write(`${line}\r\n`);
  }

  write(bytes: string | Buffer): Promise<string> {
    const reply = this.read();
    this.socket.write(bytes);
    return reply;
  }

  /** Writes bytes without waiting for a reply (a device in the middle of DATA). */
  send(bytes: string | Buffer): Promise<void> {
    return new Promise((resolve) => this.socket.write(bytes, () => resolve()));
  }

  read(): Promise<string> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.deliver();
    });
  }

  /** AUTH PLAIN in one line. */
  login(username: string, password: string): Promise<string> {
    return this.command(`AUTH PLAIN ${Buffer.from(`\0${username}\0${password}`).toString('base64')}`);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Ends every session a test left open, so the relay can stop without waiting for them. */
  static closeAll(): void {
    for (const client of RawSmtp.open) client.close();
  }

  private deliver(): void {
    const end = /(^|\r\n)\d{3} [^\r\n]*\r\n/.exec(this.buffer);
    if (!end || !this.waiting) return;
    const cut = end.index + end[0].length;
    const reply = this.buffer.slice(0, cut).trimEnd();
    this.buffer = this.buffer.slice(cut);
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve(reply);
  }
}
