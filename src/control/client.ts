import net from 'node:net';
import { controlSocketPath, type ControlReply, type ControlRequest } from './protocol.js';

/**
 * Sends a request to the daemon running on this data folder. Resolves undefined when none runs
 * (no socket, or a socket nobody answers on): then the CLI may act on the files itself.
 */
export function askDaemon(dataDir: string, request: ControlRequest, timeoutMs = 30_000): Promise<ControlReply | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(controlSocketPath(dataDir));
    let text = '';
    let connected = false;
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('the running relay did not answer in time')));
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => {
      try {
        resolve(JSON.parse(text) as ControlReply);
      } catch {
        reject(new Error('the running relay gave an unreadable answer'));
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!connected && (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')) resolve(undefined);
      else reject(error);
    });
  });
}
