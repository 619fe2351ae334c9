import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { ADMIN_AUTHORIZATION, MAILBOX, consolePost, accountFor, adminHttp, cli, execFileAsync, message, metric, sendRaw, startProvider, until, writeRelayConfig } from './helpers.js';
import { TokenStore } from '../src/oauth/token-store.js';
import { HANDOFF_PATH } from '../src/cluster/index.js';
import { ClusterTrust, generateClusterSecret } from '../src/cluster-state/index.js';
import { signedRequestHeaders } from '../src/cluster-state/peers.js';
import { decodeClusterSecret } from '../src/util/cluster-secret.js';
import { sha256Hex } from '../src/cluster-state/trust.js';
import { RedisServer } from '../bench/redis-server.js';
import { RawSmtp } from './raw-smtp.js';
import { RelayProcess } from '../bench/relay-process.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import type { TraceSearchResult } from '../src/trace/index.js';

/*
 * Three relay processes, each with its own data directory, share one real Redis (Debian's
 * redis-server) in front of the stand-in provider, which counts token requests.
 */

const TOKEN_KEY = 'cluster test key, long enough';
const SECRET = generateClusterSecret();
/** A replica's view of the secret, to sign requests as a peer would (and see them refused when they are not right). */
const peer = new ClusterTrust(decodeClusterSecret(SECRET)!, 'smtp-oauth-relay:');
const scan = (n: number) => ({ from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: cluster ${n}`], `page ${n}`) });

interface Replica {
  relay: RelayProcess;
  dataDir: string;
  configFile: string;
}

/** Relay processes with data directories of their own, sharing one Redis as replica-a, replica-b, ... */
async function startReplicas(provider: FakeProvider, redis: RedisServer, count: number, extra: Record<string, unknown> = {}): Promise<Replica[]> {
  const { cluster, ...rest } = extra as { cluster?: Record<string, unknown> };
  const replicas: Replica[] = [];
  for (const name of ['replica-a', 'replica-b', 'replica-c'].slice(0, count)) {
    const { configFile, dataDir } = await writeRelayConfig(provider, { tokenKey: TOKEN_KEY, http: await adminHttp(), ...rest, cluster: { ...redis.clusterConfig, secret: SECRET, name, ...cluster } });
    const relay = new RelayProcess(configFile);
    await relay.start();
    replicas.push({ relay, dataDir, configFile });
  }
  return replicas;
}

/** A stand-in provider, a Redis and `count` replicas for one test, all stopped afterwards whatever happens. */
async function withCluster(count: number, extra: Record<string, unknown> | ((provider: FakeProvider) => Record<string, unknown>), test: (cluster: { provider: FakeProvider; redis: RedisServer; replicas: Replica[] }) => Promise<void>): Promise<void> {
  const provider = await startProvider();
  const redis = await RedisServer.start();
  let replicas: Replica[] = [];
  try {
    replicas = await startReplicas(provider, redis, count, typeof extra === 'function' ? extra(provider) : extra);
    await test({ provider, redis, replicas });
  } finally {
    await stopReplicas(replicas);
    await redis.stop();
    await provider.stop();
  }
}

/** A console form posted as a browser on the replica's machine would: with its session cookie and CSRF token. */
/** Stops the replicas still running (a test may have killed or stopped some). */
async function stopReplicas(replicas: Replica[]): Promise<void> {
  await Promise.all(replicas.map(({ relay }) => (relay.child?.exitCode === null && relay.child.signalCode === null ? relay.stop('SIGTERM') : undefined)));
}

/** The account without a refresh token: not signed in, so whatever is queued waits (held). */
function signedOut(provider: FakeProvider): Record<string, unknown> {
  const { refreshToken: _signedOut, ...account } = accountFor(provider);
  return account;
}

/** What `login` or the admin page's Sign in does on a replica: a new refresh token goes into its store. */
async function signIn(provider: FakeProvider, replica: Replica): Promise<void> {
  const now = new Date().toISOString();
  await new TokenStore(path.join(replica.dataDir, 'tokens'), TOKEN_KEY).write('office', { refreshToken: provider.issueRefreshToken(), seed: '', updatedAt: now, lastUsedAt: now });
}

describe('replicas share tokens through Redis', () => {
  let provider: FakeProvider;
  let redis: RedisServer;
  let replicas: RelayProcess[] = [];

  beforeAll(async () => {
    provider = await startProvider();
    // Refreshed at half-life: due 15 s after it was issued, a generous bound for starting three
    // replicas and a burst on a loaded machine (with 8 s, a slow start reached the refresh).
    provider.tokenLifetime = 30;
    redis = await RedisServer.start();
    const started = await startReplicas(provider, redis, 3, { delivery: 'direct', smtp: { maxConnectionsPerIp: 500, authFailures: { maxPerIp: 6, maxPerUser: 50 } } });
    replicas = started.map(({ relay }) => relay);
    await Promise.all(replicas.map((relay) => until(async () => (await metric(relay.httpPort, 'smtp_relay_cluster_up')) === 1)));
  }, 30_000);

  afterAll(async () => {
    await Promise.all(replicas.map((relay) => relay.stop('SIGTERM')));
    await redis?.stop();
    await provider?.stop();
  });

  /** Sends n messages spread over the replicas, all at once. */
  async function burst(n: number, offset: number): Promise<void> {
    await Promise.all(Array.from({ length: n }, (_, i) => sendRaw(replicas[i % replicas.length].port, scan(offset + i))));
  }

  it('makes one token request for the whole cluster, at start and across an expiry', async () => {
    // Three replicas started (each wants a token at start, to keep its refresh token alive) and took mail.
    await burst(30, 0);
    expect(provider.tokenRequests).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, provider.tokenIssuedAt[0] + 15_500 - Date.now()))); // every replica's token is due now
    provider.dropConnections(); // new upstream logins are needed
    await burst(60, 100);
    expect(provider.tokenRequests).toBe(2);
    expect(provider.received).toHaveLength(90);
    const shared = await Promise.all(replicas.map((relay) => metric(relay.httpPort, 'smtp_relay_cluster_token_shares_total', { account: 'office' })));
    expect(shared.reduce((sum, count) => sum + count, 0)).toBeGreaterThanOrEqual(4); // two replicas took each of the two tokens
  }, 30_000);

  it('lists every replica in /readyz, from any of them', async () => {
    const response = await fetch(`http://127.0.0.1:${replicas[1].httpPort}/readyz`);
    const body = (await response.json()) as { cluster: { name: string; storeUp: boolean; replicas: { name: string; version: string; stale?: boolean }[] } };
    expect(body.cluster).toMatchObject({ name: 'replica-b', storeUp: true });
    expect(body.cluster.replicas.map((replica) => replica.name)).toEqual(['replica-a', 'replica-b', 'replica-c']);
    expect(body.cluster.replicas.every((replica) => replica.version === '0.1.0' && !replica.stale)).toBe(true);
  });

  it('counts failed logins across replicas: guesses spread over three meet the limit of one', async () => {
    const attacker = '127.0.0.66'; // its own address: the other tests' clients stay welcome
    for (const relay of replicas) {
      for (let guess = 0; guess < 2; guess++) {
        const { client } = await RawSmtp.connect(relay.port, { localAddress: attacker });
        await client.command('EHLO guesser');
        expect(await client.login('printer-2f', `wrong ${guess}`)).toMatch(/^535 /);
        client.close();
      }
    }
    // Six failures in all (two per replica, each under the limit alone): every replica refuses the client now.
    for (const relay of replicas) {
      await until(async () => {
        const { client, greeting } = await RawSmtp.connect(relay.port, { localAddress: attacker });
        client.close();
        return /^421 /.test(greeting);
      });
    }
    await sendRaw(replicas[0].port, scan(500)); // the devices are not locked out

    // An administrator unlocks it on one replica's console: every replica lets it in again.
    expect(await (await fetch(`http://127.0.0.1:${replicas[0].httpPort}/devices`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text()).toContain(`Unlock ${attacker}`);
    expect(await consolePost(replicas[0].httpPort, '/devices/unlock', { scope: 'ip', key: attacker })).toContain(`${attacker} unlocked.`);
    for (const relay of replicas) {
      await until(async () => {
        const { client, greeting } = await RawSmtp.connect(relay.port, { localAddress: attacker });
        client.close();
        return /^220 /.test(greeting);
      });
    }
  }, 30_000);

  it('takes handed-over mail only with a valid signature for this replica, once, and only under a safe id', async () => {
    const url = `http://127.0.0.1:${replicas[0].httpPort}${HANDOFF_PATH}`;
    const content = 'From: x\r\n\r\nforged';
    const digest = sha256Hex(content);
    const recordLine = JSON.stringify({ id: '../../../etc/x', account: 'office', size: content.length });
    const post = (headers: Record<string, string>) => fetch(url, { method: 'POST', headers: { 'x-relay-sha256': digest, ...headers }, body: `${recordLine}\n${content}` });
    const signedFor = (to: string) => signedRequestHeaders(peer, 'replica-b', to, HANDOFF_PATH, `${sha256Hex(recordLine)}:${digest}`);
    expect((await post({ 'x-relay-time': String(Date.now()), 'x-relay-signature': 'ab' })).status).toBe(403);
    const forOther = signedFor('replica-c'); // a request for another replica, forwarded here
    expect((await post(forOther)).status).toBe(403);
    const good = signedFor('replica-a');
    expect((await post(good)).status).toBe(400); // signed right: the record is read, and its id refused
    expect((await post(good)).status).toBe(403); // the same request again: a replay
  });

  it('answers the other internal endpoints (log, counts, queue, queue actions) only to a signed peer, once, at the replica it names', async () => {
    const base = `http://127.0.0.1:${replicas[0].httpPort}`;
    const body = JSON.stringify({ action: 'retry-all', account: 'office' });
    const wrongKey = new ClusterTrust(decodeClusterSecret(generateClusterSecret())!, 'smtp-oauth-relay:');
    for (const path of ['/internal/trace', '/internal/activity', '/internal/queue', '/internal/queue-action']) {
      const ask = (headers: Record<string, string>, at = path) => fetch(`${base}${at}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
      expect((await ask(signedRequestHeaders(wrongKey, 'replica-b', 'replica-a', path, sha256Hex(body)))).status, path).toBe(403);
      expect((await ask(signedRequestHeaders(peer, 'replica-b', 'replica-c', path, sha256Hex(body)))).status, `${path} meant for another replica`).toBe(403);
      const otherPath = path === '/internal/queue' ? '/internal/queue-action' : '/internal/queue';
      expect((await ask(signedRequestHeaders(peer, 'replica-b', 'replica-a', path, sha256Hex(body)), otherPath)).status, `${path} signature on another path`).toBe(403);
      const signed = signedRequestHeaders(peer, 'replica-b', 'replica-a', path, sha256Hex(body));
      expect((await ask(signed)).status, path).toBe(200);
      expect((await ask(signed)).status, `${path} replayed`).toBe(403);
    }
    expect(await metric(replicas[0].httpPort, 'smtp_relay_cluster_untrusted_total', { kind: 'request' })).toBeGreaterThanOrEqual(16);
  });

  it('ignores what an attacker who can write to Redis forges or replays: replicas, lockouts, unlocks, held accounts, session slots', async () => {
    const attacker = redis.client();
    const listener = redis.client();
    try {
      // A "replica" of the attacker's, where a stopping replica would hand its queue.
      const now = new Date().toISOString();
      await attacker.hset('smtp-oauth-relay:replicas', 'evil', JSON.stringify({ name: 'evil', version: '0.1.0', smtp: '127.0.0.1:1', http: '127.0.0.1:1', queued: 0, lastSeen: now }));
      await attacker.hset('smtp-oauth-relay:replicas', 'evil-2', JSON.stringify({ entry: JSON.stringify({ name: 'evil-2', http: '127.0.0.1:1', lastSeen: now }), signature: 'x' }));
      const listed = (await (await fetch(`http://127.0.0.1:${replicas[1].httpPort}/readyz`)).json()) as { cluster: { replicas: { name: string }[] } };
      expect(listed.cluster.replicas.map((replica) => replica.name)).toEqual(['replica-a', 'replica-b', 'replica-c']);
      expect(await metric(replicas[1].httpPort, 'smtp_relay_cluster_untrusted_total', { kind: 'registry' })).toBe(2);

      // A real announcement, captured and replayed; forged ones in the old and the new shape.
      const heard: string[] = [];
      await listener.subscribe('smtp-oauth-relay:auth-failures');
      listener.on('message', (_channel: string, text: string) => heard.push(text));
      const victim = '127.0.0.77';
      const { client } = await RawSmtp.connect(replicas[0].port, { localAddress: victim });
      await client.command('EHLO victim');
      expect(await client.login('printer-2f', 'one typo')).toMatch(/^535 /);
      client.close();
      await until(() => heard.length === 1);
      for (let i = 0; i < 20; i++) {
        await attacker.publish('smtp-oauth-relay:auth-failures', heard[0]);
        await attacker.publish('smtp-oauth-relay:auth-failures', JSON.stringify({ ip: victim, username: 'printer-2f', from: 'replica-a' }));
        await attacker.publish('smtp-oauth-relay:auth-failures', JSON.stringify({ body: JSON.stringify({ ip: victim, username: 'printer-2f', from: 'replica-a', at: Date.now(), nonce: `n${i}` }), signature: 'forged' }));
      }
      await attacker.publish('smtp-oauth-relay:account-held', JSON.stringify({ account: 'office', reason: 'account_misconfigured', reply: 'forged', from: 'replica-a' }));
      await until(async () => (await metric(replicas[2].httpPort, 'smtp_relay_cluster_untrusted_total', { kind: 'announcement' })) >= 60);
      for (const relay of replicas) {
        const { client: device, greeting } = await RawSmtp.connect(relay.port, { localAddress: victim });
        device.close();
        expect(greeting, 'the victim is not locked out').toMatch(/^220 /);
        expect(await metric(relay.httpPort, 'smtp_relay_account_held', { account: 'office' })).toBe(0);
      }

      // Session slots "held" for ten days: the mailbox's sessions would all look busy.
      for (let i = 0; i < 10; i++) await attacker.zadd('smtp-oauth-relay:sessions:office', Date.now() + 10 * 86_400_000, `evil-${i}`);
      // A refresh lease that never expires.
      await attacker.set('smtp-oauth-relay:lease:token:office', 'evil');
      const received = provider.received.length;
      await burst(6, 700);
      expect(provider.received.length - received).toBe(6);
    } finally {
      attacker.disconnect();
      listener.disconnect();
    }
  }, 30_000);

  it('never has more than upstream.maxConnections sessions open for the mailbox across the cluster', async () => {
    provider.tokenLifetime = 3600;
    provider.dataDelayMs = 20; // each send lasts a while, so a burst piles up
    provider.peakSessions.clear();
    const received = provider.received.length;
    await burst(45, 400);
    provider.dataDelayMs = 0;
    expect(provider.received.length - received).toBe(45);
    expect(provider.peakSessions.get(MAILBOX)).toBe(3); // the custom provider's default; each replica alone would open 3
  }, 30_000);

  it('reuses upstream connections as a single relay does: a burst through one replica logs in a few times, not once per message', async () => {
    provider.tokenLifetime = 3600;
    provider.dataDelayMs = 5;
    const [logins, received] = [provider.authLines.length, provider.received.length];
    await Promise.all(Array.from({ length: 30 }, (_, i) => sendRaw(replicas[0].port, scan(700 + i))));
    provider.dataDelayMs = 0;
    expect(provider.received.length - received).toBe(30);
    // Each pooled connection holds one of the 3 session slots while it is open (a retry may add one).
    expect(provider.authLines.length - logins).toBeLessThanOrEqual(6);
  }, 30_000);

  it('keeps taking and delivering mail while Redis is down, says so, and shares again once it is back', async () => {
    provider.tokenLifetime = 3600;
    await redis.stop('SIGKILL');
    await Promise.all(replicas.map((relay) => until(async () => (await metric(relay.httpPort, 'smtp_relay_cluster_up')) === 0)));
    const received = provider.received.length;
    await burst(30, 200);
    expect(provider.received.length - received).toBe(30);
    await redis.restart();
    await Promise.all(replicas.map((relay) => until(async () => (await metric(relay.httpPort, 'smtp_relay_cluster_up')) === 1, 10_000)));
    await burst(6, 300);
    expect(provider.received.length - received).toBe(36);
  }, 40_000);
});

describe('a sign-in on one replica reaches the others', () => {
  it('lets replica B deliver its held message as soon as the account is signed in on replica A, with no restart', async () => {
    await withCluster(2, (provider) => ({ accounts: { office: signedOut(provider) }, queue: { retry: { initialDelay: 0.2, maxDelay: 1 } }, oauth: { reauthCheckInterval: 600 } }), async ({ provider, replicas }) => {
      const [a, b] = replicas;
      await sendRaw(b.relay.port, scan(1)); // queued on B, held: the account needs a sign-in
      await until(async () => (await metric(b.relay.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);
      await signIn(provider, a);
      await until(() => provider.received.length === 1, 10_000);
      expect(provider.received[0].raw.toString()).toContain('Subject: cluster 1');
      expect(await metric(b.relay.httpPort, 'smtp_relay_account_held', { account: 'office' })).toBe(0);
    });
  }, 40_000);
});

describe('a sign-in on one replica wakes every replica', () => {
  it('delivers the messages held on B and C within seconds of a sign-in on A, their own recheck far away', async () => {
    await withCluster(3, (provider) => ({ accounts: { office: signedOut(provider) }, queue: { retry: { initialDelay: 0.2, maxDelay: 1 } }, oauth: { reauthCheckInterval: 600, retries: 0 } }), async ({ provider, replicas }) => {
      const [a, b, c] = replicas;
      await signIn(provider, a);
      await sendRaw(c.relay.port, scan(1)); // signed in everywhere: this one goes out
      await until(() => provider.received.length === 1);
      // The refresh token is revoked and the provider stops honouring the access token.
      for (const token of provider.issuedSecrets()) provider.revokeRefreshToken(token);
      provider.failNextLogins = 1_000;
      provider.dropConnections();
      await sendRaw(b.relay.port, scan(2));
      await sendRaw(c.relay.port, scan(3));
      for (const replica of [a, b, c]) await until(async () => (await metric(replica.relay.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1, 20_000);
      provider.failNextLogins = 0;
      const signedInAt = Date.now();
      await signIn(provider, a);
      await until(() => provider.received.length === 3, 10_000);
      expect(Date.now() - signedInAt).toBeLessThan(5_000); // not the 600 s recheck
      expect(provider.received.map((received) => /Subject: cluster (\d+)/.exec(received.raw.toString())![1]).sort()).toEqual(['1', '2', '3']);
    });
  }, 60_000);
});

describe('scale-down hands the queue over', () => {
  let provider: FakeProvider;
  let redis: RedisServer;
  let replicas: Replica[];
  const queued = async (dataDir: string) => (await readdir(path.join(dataDir, 'spool', 'queue'))).filter((name) => name.endsWith('.msg')).length;

  /** Three replicas whose account is not signed in: everything queued is held. */
  beforeEach(async () => {
    provider = await startProvider();
    redis = await RedisServer.start();
    replicas = await startReplicas(provider, redis, 3, { cluster: { advertiseHost: '127.0.0.1' }, accounts: { office: signedOut(provider) }, queue: { retry: { initialDelay: 0.2, maxDelay: 1 } }, trace: { clusterTimeout: 1 } });
  }, 30_000);

  afterEach(async () => {
    await stopReplicas(replicas);
    await redis.stop();
    await provider.stop();
  });

  /** Signs the account in on replica A and expects exactly these messages, once each. */
  async function deliveredOnce(count: number): Promise<void> {
    await signIn(provider, replicas[0]);
    await until(() => provider.received.length >= count, 20_000);
    await new Promise((resolve) => setTimeout(resolve, 500)); // a duplicate would arrive now
    const subjects = provider.received.map((received) => /Subject: cluster (\d+)/.exec(received.raw.toString())![1]);
    expect(new Set(subjects).size).toBe(count);
    expect(subjects).toHaveLength(count);
  }

  it('moves every message of a stopped replica into the peers\' spools, to be delivered once, after a sign-in', async () => {
    const [a, b, c] = replicas;
    for (let n = 0; n < 100; n++) await sendRaw(c.relay.port, scan(1000 + n));
    expect(await queued(c.dataDir)).toBe(100);
    expect(await c.relay.stop('SIGTERM')).toBe(0);
    expect(await queued(c.dataDir)).toBe(0); // nothing stranded on the stopped replica's volume
    expect((await queued(a.dataDir)) + (await queued(b.dataDir))).toBe(100);
    expect(provider.received).toHaveLength(0);
    await deliveredOnce(100);
    // The trace on C's volume says where each message went; the survivors' say what became of it.
    const onC = (await cli(['trace', '--data-dir', c.dataDir, '--limit', '1'])).stdout;
    expect(onC).toMatch(/HANDED-OVER[\s\S]*handed over to replica-[ab]/);
    const id = /^(\S+)  HANDED-OVER/m.exec(onC)![1];
    await until(async () => /DELIVERED/.test((await cli(['trace', '--config', a.configFile, '--id', id])).stdout));
    expect((await cli(['trace', '--config', a.configFile, '--id', id])).stdout).toMatch(/taken over from a stopping replica[\s\S]*delivered/);
  }, 60_000);

  it('shows every replica\'s log, counts and queue on any one console (an action on a message is done by its replica), naming a replica that did not answer', async () => {
    const [a, , c] = replicas;
    for (const [index, replica] of replicas.entries()) for (let n = 0; n < 2; n++) await sendRaw(replica.relay.port, scan(3000 + index * 10 + n));
    const search = async () => JSON.parse((await cli(['trace', '--json', '--config', a.configFile])).stdout) as TraceSearchResult;
    await until(async () => (await search()).messages.length === 6);
    const everywhere = await search();
    expect(everywhere.replicas.map((replica) => [replica.name, replica.answered])).toEqual([['replica-a', true], ['replica-b', true], ['replica-c', true]]);
    expect(new Set(everywhere.messages.map((found) => found.events[0].replica))).toEqual(new Set(['replica-a', 'replica-b', 'replica-c']));
    // The console's counts on one replica add up every replica's.
    const page = async (path: string) => (await fetch(`http://127.0.0.1:${a.relay.httpPort}${path}`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
    expect(await page('/')).toMatch(/Today: <strong>6<\/strong> message\(s\)/);
    // The queue of every replica on A's console; an action on C's message is carried out by C.
    const queuePage = await page('/queue');
    expect(queuePage.match(/<td data-label="Replica">replica-c<\/td>/g)).toHaveLength(2);
    const onC = everywhere.messages.find((found) => found.events[0].replica === 'replica-c')!.id;
    expect(await consolePost(a.relay.httpPort, `/queue/${onC}/delete`, { replica: 'replica-c' })).toContain(`${onC} deleted.`);
    expect(await queued(c.dataDir)).toBe(1);
    expect(await consolePost(a.relay.httpPort, '/accounts/office/retry-all', {})).toContain('5 message(s) of office scheduled for delivery now.');
    expect(await page('/devices')).toMatch(/<strong>printer-2f<\/strong><\/td><td[^>]*>office<\/td><td[^>]*>[^<]+<\/td><td[^>]*>127\.0\.0\.1<\/td><td data-label="Messages today">6<\/td>/);

    c.relay.child!.kill('SIGSTOP'); // alive in the registry, but answering nothing
    try {
      const overview = await page('/');
      expect(overview).toContain('Replica replica-c did not answer');
      expect(overview).toMatch(/Today: <strong>4<\/strong> message\(s\)/);
      const started = Date.now();
      const { stdout } = await cli(['trace', '--config', a.configFile]);
      expect(Date.now() - started).toBeLessThan(8000);
      expect(stdout).toMatch(/^warning: replica replica-c did not answer \(no answer within 1 s\); its part of the log is missing$/m);
      expect(stdout).toMatch(/^4 message\(s\)$/m);
    } finally {
      c.relay.child!.kill('SIGCONT');
    }
  }, 60_000);

  it('hands over a message whose record is larger than any HTTP header (400 long recipients)', async () => {
    await stopReplicas(replicas); // this one needs room for many recipients
    await withCluster(2, (provider) => ({ cluster: { advertiseHost: '127.0.0.1' }, smtp: { maxRecipients: 500 }, accounts: { office: signedOut(provider) } }), async ({ provider: upstream, replicas: [a, b] }) => {
      const to = Array.from({ length: 400 }, (_, i) => `recipient-${String(i).padStart(3, '0')}-with-a-rather-long-mailbox-name@subsidiary.example.com`);
      await sendRaw(b.relay.port, { ...scan(5000), to });
      expect(await queued(b.dataDir)).toBe(1);
      expect(await b.relay.stop('SIGTERM')).toBe(0);
      expect(await queued(b.dataDir)).toBe(0);
      expect(await queued(a.dataDir)).toBe(1);
      await signIn(upstream, a);
      await until(() => upstream.received.reduce((sum, received) => sum + received.envelope.to.length, 0) === 400, 20_000);
    });
  }, 60_000);

  it('hands an orphaned volume over with `queue handoff --data-dir` (a replica that died and will not come back)', async () => {
    const [a, b, c] = replicas;
    for (let n = 0; n < 20; n++) await sendRaw(c.relay.port, scan(2000 + n));
    await c.relay.stop('SIGKILL'); // no chance to hand anything over
    expect(await queued(c.dataDir)).toBe(20);
    const { stdout } = await execFileAsync(process.execPath, [path.resolve('dist/src/cli/main.js'), 'queue', 'handoff', '--data-dir', c.dataDir, '--config', c.configFile]);
    expect(stdout).toMatch(/^20 message\(s\) handed over, 0 kept/m);
    expect(await queued(c.dataDir)).toBe(0);
    expect((await queued(a.dataDir)) + (await queued(b.dataDir))).toBe(20);
    await deliveredOnce(20);
  }, 60_000);
});

describe('the provider\'s pace holds across the cluster, in direct mode too', () => {
  it('lets through limits.messagesPerMinute messages a minute over three replicas, and defers the rest with 451', async () => {
    await withCluster(3, (provider) => ({ delivery: 'direct', accounts: { office: { ...accountFor(provider), limits: { messagesPerMinute: 6 } } } }), async ({ provider, replicas: started }) => {
      const replicas = started.map(({ relay }) => relay);
      const replies = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          sendRaw(replicas[i % 3].port, scan(3000 + i)).then(
            () => '250',
            (error: { response?: string }) => error.response ?? String(error),
          ),
        ),
      );
      expect(replies.filter((reply) => reply === '250')).toHaveLength(6);
      expect(replies.filter((reply) => /^451 4\.7\.0 Sending pace of office reached/.test(reply))).toHaveLength(6);
      expect(provider.received).toHaveLength(6);
    });
  }, 40_000);
});

describe('replicas and Redis die mid-burst', () => {
  it('delivers every message that got 250 while one replica is SIGKILLed and restarted, and Redis too', async () => {
    await withCluster(3, { queue: { retry: { initialDelay: 0.2, maxDelay: 1 } } }, async ({ provider, redis, replicas: started }) => {
      const replicas = started.map(({ relay }) => relay);
      provider.dataDelayMs = 5; // messages stay queued for a while when the kills land
      const total = 150;
      const accepted = new Set<number>();
      let next = 0;
      let restarting: Promise<unknown> | undefined;
      let kills = 0;
      const device = async (turn: number) => {
        for (let n = next++; n < total; n = next++) {
          for (let attempt = 0; ; attempt++) {
            await restarting;
            const relay = replicas[(n + turn + attempt) % 3]; // a device whose relay is gone tries the load balancer again
            const sent = await sendRaw(relay.port, scan(4000 + n)).then(() => true, () => false);
            if (sent) break;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          accepted.add(n);
          const kill = accepted.size === 50 ? () => replicas[1].stop('SIGKILL').then(() => replicas[1].start()) : accepted.size === 100 ? () => redis.stop('SIGKILL').then(() => redis.restart()) : undefined;
          if (kill) {
            kills++;
            restarting = kill().finally(() => (restarting = undefined));
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, (_, turn) => device(turn)));
      await restarting;
      expect(accepted.size).toBe(total);
      expect(kills).toBe(2);
      const delivered = () => new Set(provider.received.map((received) => Number(/Subject: cluster (\d+)/.exec(received.raw.toString())![1]) - 4000));
      await until(() => delivered().size === total, 30_000);
      const lost = [...accepted].filter((n) => !delivered().has(n));
      const duplicates = provider.received.length - delivered().size;
      console.log(`cluster kill test: ${accepted.size} accepted, ${delivered().size} delivered, ${lost.length} lost, ${duplicates} duplicates`);
      expect(lost).toEqual([]);
    });
  }, 90_000);
});

describe('account state is the same on every replica', () => {
  it('holds an account on every replica when one had to hold it, with the provider\'s words in /readyz/accounts', async () => {
    await withCluster(2, { oauth: { reauthCheckInterval: 600 } }, async ({ provider, replicas: started }) => {
      const replicas = started.map(({ relay }) => relay);
      const [a, b] = replicas;
      const disabled = { code: 535, message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant' };
      provider.authScript.push(disabled, disabled); // the login and its one retry
      await sendRaw(a.port, scan(5000)); // queued on A; its delivery finds the tenant's SMTP AUTH off
      await until(async () => (await metric(b.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);
      const accounts = (await (await fetch(`http://127.0.0.1:${b.httpPort}/readyz/accounts`)).json()) as { accounts: { office: { lastProblem?: { reason: string; reply: string } } } };
      expect(accounts.accounts.office.lastProblem).toMatchObject({ reason: 'account_misconfigured', reply: expect.stringMatching(/5\.7\.139/) });
      expect(await metric(a.httpPort, 'smtp_relay_account_held', { account: 'office' })).toBe(1);
    });
  }, 30_000);
});
