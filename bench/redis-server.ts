import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from './harness.js';

/** A private redis-server (Debian's package) on a free loopback port, with nothing saved to disk. */
export class RedisServer {
  private child?: ChildProcess;

  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.restart();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** (Re)starts it on the same port, empty, as after a crash without persistence. */
  restart(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      let output = '';
      const failed = (code: number | null) => reject(new Error(`redis-server exited (${code}): ${output}`));
      const watch = (chunk: Buffer) => {
        output += chunk.toString();
        if (!output.includes('Ready to accept connections')) return;
        child.stdout!.off('data', watch).resume(); // its later log lines are not needed
        child.off('close', failed);
        resolve();
      };
      child.once('error', reject);
      child.once('close', failed);
      child.stdout!.on('data', watch);
    });
  }

  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('close', () => resolve());
      child.kill(signal);
    });
  }
}
