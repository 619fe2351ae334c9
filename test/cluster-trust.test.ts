import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { RedisServer } from '../bench/redis-server.js';
import { HANDOFF_PATH, handOffQueue } from '../src/cluster/index.js';
import { ClusterTrust, generateClusterSecret } from '../src/cluster-state/index.js';
import { askPeers } from '../src/cluster-state/peers.js';
import { RedisCluster } from '../src/cluster-state/redis-cluster.js';
import { ConfigError, parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { createMetrics } from '../src/metrics/index.js';
import { Spool } from '../src/spool/index.js';
import { decodeClusterSecret } from '../src/util/cluster-secret.js';
import { cli, startProvider, startRelay, stopStarted } from './helpers.js';

/** The parts of the cluster's trust that a three-replica run does not reach: config, sealing, redirects, receipts. */

const trust = () => new ClusterTrust(decodeClusterSecret(generateClusterSecret())!, 'smtp-oauth-relay:');
const quiet = createLogger('silent');
const closers: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  await stopStarted();
  while (closers.length) await closers.pop()!();
});

function configWith(cluster: Record<string, unknown>): string {
  return stringify({ cluster: { redis: 'redis://relay@valkey:6379', ...cluster }, accounts: { office: { provider: 'microsoft', tenant: 't', mailbox: 'a@b.test', clientId: 'c', clientSecret: 's' } }, users: [{ username: 'u', password: 'p', account: 'office' }] });
}

async function listen(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('the cluster secret', () => {
  it('is required with cluster:, and must be 32 random bytes; the error names the key and the fix', () => {
    const problem = (cluster: Record<string, unknown>) => {
      try {
        parseConfig(configWith(cluster), 'config.yaml', {});
      } catch (error) {
        return error instanceof ConfigError ? error.message : String(error);
      }
      return 'accepted';
    };
    expect(problem({})).toMatch(/cluster\.secret.*required with cluster:.*smtp-oauth-relay cluster-secret/s);
    expect(problem({ secret: 'a sixteen char key!' })).toMatch(/cluster\.secret.*at least 32 random bytes/s);
    expect(problem({ secret: Buffer.alloc(32, 7).toString('base64') })).toMatch(/cluster\.secret.*at least 32 random bytes/s);
    expect(problem({ secret: generateClusterSecret() })).toBe('accepted');
  });

  it('is made by `smtp-oauth-relay cluster-secret`, new each time', async () => {
    const [first, second] = [await cli(['cluster-secret']), await cli(['cluster-secret'])];
    expect(first.code).toBe(0);
    expect(decodeClusterSecret(first.stdout)).toHaveLength(32);
    expect(first.stdout).not.toBe(second.stdout);
  });
});

describe('tokens shared in Redis', () => {
  it('are sealed for their own key: a sealed refresh token copied to another account does not open there', async () => {
    const redis = await RedisServer.start();
    closers.push(() => redis.stop());
    const cluster = new RedisCluster({ ...redis.clusterConfig, url: redis.url, password: redis.password, ca: redis.clusterConfig.redisCa, name: 'replica-a', keyPrefix: 'smtp-oauth-relay:', trust: trust(), logger: quiet, metrics: createMetrics([]) });
    closers.push(() => cluster.close());
    expect(await cluster.connected(5000)).toBe(true);
    await cluster.shareRefreshToken('alpha', { refreshToken: 'rt-of-alpha', seed: '', updatedAt: new Date().toISOString() });
    expect((await cluster.sharedRefreshToken('alpha'))?.refreshToken).toBe('rt-of-alpha');
    const attacker = redis.client();
    closers.push(() => attacker.disconnect());
    const sealed = (await attacker.get('smtp-oauth-relay:refresh:alpha'))!;
    expect(sealed).not.toContain('rt-of-alpha');
    await attacker.set('smtp-oauth-relay:refresh:beta', sealed);
    expect(await cluster.sharedRefreshToken('beta')).toBeUndefined();
    await attacker.set('smtp-oauth-relay:refresh:beta', JSON.stringify({ refreshToken: 'planted', seed: '', updatedAt: new Date().toISOString() }));
    expect(await cluster.sharedRefreshToken('beta')).toBeUndefined();
  });
});

describe('calls between replicas', () => {
  it('never follow a redirect (a fake peer cannot bounce a signed request elsewhere)', async () => {
    let reached = 0;
    const elsewhere = await listen((_request, response) => {
      reached++;
      response.end('{}');
    });
    const redirecting = await listen((_request, response) => response.writeHead(307, { location: `http://${elsewhere}/internal/queue` }).end());
    const [answer] = await askPeers([{ name: 'replica-b', http: redirecting }], '/internal/queue', {}, { self: 'replica-a', trust: trust(), timeoutMs: 2000 });
    expect(answer.error).toMatch(/redirect/);
    expect(reached).toBe(0);
  });

  it('a handoff keeps the message unless the peer answers with a receipt signed over it', async () => {
    const spool = new Spool(await mkdtemp(path.join(os.tmpdir(), 'relay-handoff-')));
    await spool.init();
    const content = Buffer.from('From: a@b.test\r\nSubject: kept\r\n\r\nbody\r\n');
    const record = { id: 'KEEPME00000001', account: 'office', envelope: { from: 'a@b.test', to: ['x@y.test'] }, size: content.length, receivedAt: new Date().toISOString(), attempts: 0, nextAttemptAt: new Date().toISOString(), delivered: [], failedRecipients: [] };
    await spool.enqueue(record, content);
    const answers = [
      (_request: unknown, response: import('node:http').ServerResponse) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ committed: record.id })),
      (_request: unknown, response: import('node:http').ServerResponse) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ committed: record.id, receipt: 'forged' })),
    ];
    for (const answer of answers) {
      const peer = await listen((request, response) => {
        expect(request.url).toBe(HANDOFF_PATH);
        request.resume().on('end', () => answer(request, response));
      });
      const result = await handOffQueue({ spool, trust: trust(), self: 'replica-c', peers: async () => [{ name: 'replica-a', http: peer }], logger: quiet, deadline: Date.now() + 10_000 });
      expect(result).toEqual({ handedOff: 0, kept: 1 });
      expect(await spool.has(record.id)).toBe(true);
    }
  });
});

describe('the console', () => {
  it('escapes whatever another replica answers (counts, queue records, registry fields)', async () => {
    const redis = await RedisServer.start();
    closers.push(() => redis.stop());
    const secret = generateClusterSecret();
    const provider = await startProvider();
    const relay = await startRelay(provider, { top: { delivery: 'queue', tokenKey: 'a token key, long enough', cluster: { ...redis.clusterConfig, secret, name: 'replica-a' } } });
    const markup = '<form id="injected" action="https://evil.example/">';
    const peerAnswers: Record<string, unknown> = {
      '/internal/activity': { accounts: { office: { today: { messages: markup, failures: markup }, hours: [{ hour: Date.now(), sent: markup, deferred: 0, failed: 0 }] } }, devices: { 'printer-2f': { messages: markup, failures: 0, addresses: [markup], lastLoginAt: markup } } },
      '/internal/queue': [{ record: { id: 'ABCDEFGH1234', account: 'office', envelope: { from: markup, to: [markup] }, size: markup, receivedAt: new Date().toISOString(), attempts: markup, nextAttemptAt: new Date().toISOString(), delivered: [], failedRecipients: [], lastReply: markup, user: markup }, area: 'queue', inFlight: false, held: false }],
      '/internal/trace': { events: [], truncated: false },
    };
    const evil = await listen((request, response) => {
      request.resume().on('end', () => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(peerAnswers[request.url ?? ''] ?? {})));
    });
    // A replica of the cluster (it holds the secret) whose answers carry markup; its registry entry too.
    const signer = new ClusterTrust(decodeClusterSecret(secret)!, 'smtp-oauth-relay:');
    const entry = JSON.stringify({ name: 'replica-b', version: markup, smtp: markup, http: evil, queued: markup, lastSeen: new Date().toISOString() });
    const writer = redis.client();
    closers.push(() => writer.disconnect());
    await writer.hset('smtp-oauth-relay:replicas', 'replica-b', JSON.stringify({ entry, signature: signer.sign('registry', ['replica-b', entry]) }));
    for (const page of ['/', '/devices', '/queue']) {
      const html = await (await fetch(`http://127.0.0.1:${relay.httpPort}${page}`)).text();
      if (page !== '/devices') expect(html, page).toContain('replica-b');
      expect(html, page).not.toContain('<form id="injected"');
    }
  });
});

describe("a provider's Retry-After in a cluster", () => {
  it('pauses the account on every replica, is only ever lengthened, and a pause written by someone else delays for an hour at most', async () => {
    const redis = await RedisServer.start();
    closers.push(() => redis.stop());
    const secret = trust();
    const replica = (name: string) => {
      const cluster = new RedisCluster({ ...redis.clusterConfig, url: redis.url, password: redis.password, ca: redis.clusterConfig.redisCa, name, keyPrefix: 'smtp-oauth-relay:', trust: secret, logger: quiet, metrics: createMetrics([]) });
      closers.push(() => cluster.close());
      return cluster;
    };
    const [a, b] = [replica('replica-a'), replica('replica-b')];
    expect(await a.connected(5000)).toBe(true);
    expect(await b.connected(5000)).toBe(true);
    const limits = { messagesPerMinute: 1000 };
    expect(await b.pace('office', limits, 1, 1)).toBe(0);
    await a.pauseSending('office', 30_000); // Graph's 429 on replica A
    const wait = await b.pace('office', limits, 1, 1);
    expect(wait).toBeGreaterThan(25_000);
    expect(wait).toBeLessThanOrEqual(30_000);
    await a.pauseSending('office', 5_000); // a shorter one does not shorten it
    expect(await b.pace('office', limits, 1, 1)).toBeGreaterThan(25_000);
    expect(await b.pace('other', limits, 1, 1)).toBe(0); // per account
    const attacker = redis.client();
    closers.push(() => attacker.disconnect());
    await attacker.set('smtp-oauth-relay:pace:office:pause', '1', 'PX', 86_400_000 * 30);
    expect(await b.pace('office', limits, 1, 1)).toBe(3_600_000);
  });
});
