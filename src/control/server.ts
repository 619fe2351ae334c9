import { chmod, mkdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../log.js';
import { askDaemon } from './client.js';
import { MAX_SOCKET_PATH, controlSocketPath, type ControlReply, type ControlRequest } from './protocol.js';

/** The reason a daemon cannot start on this data folder, with what to do. */
export class ControlSocketError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'ControlSocketError';
  }
}

const MAX_REQUEST_BYTES = 64 * 1024;

/**
 * Answers the CLI on a Unix socket in <dataDir>/run (mode 0600, folder 0700): one JSON request per
 * connection, one JSON reply. It also keeps a second daemon off the same data folder.
 */
export class ControlServer {
  private readonly server: net.Server;
  readonly socketPath: string;

  constructor(
    dataDir: string,
    private readonly handle: (request: ControlRequest) => Promise<ControlReply>,
    private readonly logger: Logger,
  ) {
    this.socketPath = controlSocketPath(dataDir);
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async listen(): Promise<void> {
    if (this.socketPath.length > MAX_SOCKET_PATH) {
      throw new ControlSocketError(`the control socket path ${this.socketPath} is too long`, `use a dataDir with a shorter path (at most ${MAX_SOCKET_PATH - 'run/control.sock'.length - 1} characters)`);
    }
    await mkdir(path.dirname(this.socketPath), { recursive: true, mode: 0o700 });
    await chmod(path.dirname(this.socketPath), 0o700);
    if (await askDaemon(path.dirname(path.dirname(this.socketPath)), { op: 'ping' }).catch(() => undefined)) {
      throw new ControlSocketError(`another smtp-oauth-relay is running on ${path.dirname(path.dirname(this.socketPath))}`, 'stop it first; two daemons must never share a spool');
    }
    await unlink(this.socketPath).catch(() => undefined); // left by a daemon that died
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.socketPath, 0o600);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: net.Socket): void {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > MAX_REQUEST_BYTES) socket.destroy();
      const end = text.indexOf('\n');
      if (end < 0) return;
      socket.removeAllListeners('data');
      this.answer(text.slice(0, end)).then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
    });
  }

  private async answer(line: string): Promise<ControlReply> {
    try {
      const request = JSON.parse(line) as ControlRequest;
      if (request.op === 'ping') return { code: 0, output: 'smtp-oauth-relay is running\n' };
      if (request.op !== 'tokens-rekey') this.logger.info({ op: request.op, id: 'id' in request ? request.id : undefined }, 'control request');
      return await this.handle(request);
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'control request failed');
      return { code: 1, output: `The relay could not do that: ${(error as Error).message}\n` };
    }
  }
}
