import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { readFileSync } from 'node:fs';
import { freePort } from './harness.js';
import { FAKE_TLS } from '../src/demo/fake-provider.js';

/**
 * A private redis-server (Debian's package) on a free loopback port, with nothing saved to disk,
 * set up as the shipped Valkey is (deploy/kubernetes/valkey.yaml) and more: TLS only, the default
 * user off, the ACL user "relay" with a password, limited to the relay's keys and channels.
 */
export class RedisServer {
  private child?: ChildProcess;
  readonly password = randomBytes(18).toString('base64url');

  private constructor(readonly port: number) {}

  /** The `cluster:` keys that reach it (without secret and name). */
  get clusterConfig(): { redis: string; redisPassword: string; redisCa: string } {
    return { redis: this.url, redisPassword: this.password, redisCa: FAKE_TLS.ca() };
  }

  /** A client as the relay's ACL user (the write access an attacker who can write to Redis has), or as admin (statistics). */
  client(username: 'relay' | 'admin' = 'relay'): Redis {
    return new Redis(`rediss://127.0.0.1:${this.port}`, { username, password: this.password, tls: { ca: readFileSync(FAKE_TLS.ca()) }, maxRetriesPerRequest: 1 });
  }

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.restart();
    return server;
  }

  get url(): string {
    return `rediss://relay@127.0.0.1:${this.port}`;
  }

  /** (Re)starts it on the same port, empty, as after a crash without persistence. */
  restart(): Promise<void> {
    const tls = ['--port', '0', '--tls-port', String(this.port), '--tls-cert-file', FAKE_TLS.cert(), '--tls-key-file', FAKE_TLS.key(), '--tls-ca-cert-file', FAKE_TLS.ca(), '--tls-auth-clients', 'no'];
    const acl = ['--user', 'default', 'off', '--user', 'relay', 'on', `>${this.password}`, '~smtp-oauth-relay:*', '&smtp-oauth-relay:*', '+@all', '-@dangerous', '+info', '--user', 'admin', 'on', `>${this.password}`, '~*', '&*', '+@all'];
    const child = spawn('redis-server', [...tls, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...acl], { stdio: ['ignore', 'pipe', 'inherit'] });
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
