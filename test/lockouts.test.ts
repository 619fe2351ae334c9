import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, message, metric, sendRaw, startProvider, startRelay, stopStarted, type RelayOptions } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import { AuthGuard, clientKey } from '../src/listener/auth-guard.js';
import { hashPassword } from '../src/listener/index.js';

async function login(port: number, from: string, username: string, password: string): Promise<string> {
  const { client, greeting } = await RawSmtp.connect(port, { localAddress: from });
  if (!greeting.startsWith('220')) {
    client.close();
    return greeting;
  }
  await client.command('EHLO device.local');
  const reply = await client.login(username, password);
  client.close();
  return reply;
}

describe('lockouts protect the devices, not the attacker', () => {
  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  async function setUp(authFailures: Record<string, unknown>, options: RelayOptions = {}) {
    const provider = await startProvider();
    return startRelay(provider, { ...options, top: { smtp: { host: '127.0.0.1', port: 0, maxConnectionsPerIp: 500, authFailures }, ...options.top } });
  }

  it('never refuses the right password from an address that is not guessing, even on a fresh relay', async () => {
    const relay = await setUp({ maxPerIp: 5, maxPerUser: 10, window: 60, lockout: 60 });
    // 30 guesses at the printer's name from six other addresses; the relay has never seen the printer.
    for (let round = 0; round < 5; round++) {
      await Promise.all([2, 3, 4, 5, 6, 7].map((host) => login(relay.port, `127.0.0.${host}`, DEVICE.username, `guess ${round}`)));
    }
    expect(await login(relay.port, '127.0.0.1', DEVICE.username, DEVICE.password)).toMatch(/^235 /);
    // The guessing addresses are refused even with the right password.
    expect(await login(relay.port, '127.0.0.2', DEVICE.username, DEVICE.password)).toMatch(/^421 4\.7\.0 /);
    expect(await metric(relay.httpPort, 'smtp_relay_smtp_auth_lockouts_total', { scope: 'user' })).toBe(1);
  });

  it('counts an attempt before the password check: 50 parallel AUTHs from one address get 10 checks', async () => {
    const relay = await setUp({ maxPerIp: 10, maxPerUser: 1000, window: 60, lockout: 60 });
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => login(relay.port, '127.0.0.9', DEVICE.username, `parallel ${i}`)));
    expect(replies.filter((reply) => reply.startsWith('535'))).toHaveLength(10);
    expect(replies.filter((reply) => reply.startsWith('421'))).toHaveLength(40);
    expect(await metric(relay.httpPort, 'smtp_relay_smtp_auth_failures_total')).toBe(10);
  });

  it('costs the same for an unknown name, a wrong hashed password and a wrong plain password', async () => {
    const relay = await setUp(
      { maxPerIp: 1000, maxPerUser: 1000, window: 60, lockout: 60 },
      { users: [{ ...DEVICE, account: 'office' }, { username: 'hashed', passwordHash: await hashPassword('secret'), account: 'office' }] },
    );
    const median = async (username: string) => {
      const times: number[] = [];
      for (let i = 0; i < 7; i++) {
        const { client } = await RawSmtp.connect(relay.port, { localAddress: '127.0.0.20' });
        await client.command('EHLO device.local');
        const started = performance.now();
        expect(await client.login(username, `wrong ${i}`)).toMatch(/^535 /);
        times.push(performance.now() - started);
        client.close();
      }
      return times.sort((a, b) => a - b)[3];
    };
    const plain = await median(DEVICE.username);
    const hashed = await median('hashed');
    const unknown = await median('nobody-by-this-name');
    // Each is one scrypt (tens of ms); the plain password used to cost about 1 ms against 110.
    for (const ratio of [plain / unknown, hashed / unknown]) {
      expect(ratio).toBeGreaterThan(0.5);
      expect(ratio).toBeLessThan(2);
    }
  });

  it('locks out wrong admin passwords, and a flood of them does not stall mail', async () => {
    const relay = await setUp(
      { maxPerIp: 10, maxPerUser: 10, window: 60, lockout: 60 },
      { top: { delivery: 'queue', http: { host: '127.0.0.1', port: 0, adminPasswordHash: await hashPassword('admin secret') } } },
    );
    const page = `http://127.0.0.1:${relay.httpPort}/`;
    const basic = (password: string) => ({ authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: warm-up'], 'x') });
    const flood = Promise.all(Array.from({ length: 40 }, (_, i) => fetch(page, { headers: basic(`wrong ${i}`) }).then((response) => response.status)));
    const started = performance.now();
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: during the flood'], 'x') });
    const transactionMs = performance.now() - started;
    const statuses = await flood;
    expect(statuses.filter((status) => status === 401).length).toBeLessThanOrEqual(10);
    expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(30);
    expect((await fetch(page, { headers: basic('admin secret') })).status).toBe(429);
    // In the review, 40 concurrent wrong admin passwords stretched a transaction from 115 ms to 31 s.
    expect(transactionMs).toBeLessThan(2000);
  });
});

describe('the failure counters', () => {
  const limits = { maxPerIp: 1_000_000, maxPerUser: 10, windowMs: 60_000, lockoutMs: 60_000 };

  it('cannot be flushed by failing with 10,000 other names', () => {
    const guard = new AuthGuard(limits, (name) => name === 'printer');
    for (let i = 0; i < 10; i++) (guard.begin('192.0.2.1', 'printer') as { failed(): unknown }).failed();
    for (let i = 0; i < 10_000; i++) (guard.begin(`198.51.${i >> 8}.${i & 255}`, `name-${i}`) as { failed(): unknown }).failed();
    expect(guard.lockout('192.0.2.1', 'printer')).toMatchObject({ scope: 'user' });
    expect(guard.lockout('192.0.2.200', 'printer')).toBeUndefined();
  });

  it('costs an invented user name what it costs a real one: the same slow-down, the same refusal (no name is revealed)', () => {
    const guard = new AuthGuard({ ...limits, maxPerIp: 100, maxPerUser: 6 }, (username) => username === 'printer');
    const replies = (username: string) =>
      Array.from({ length: 8 }, (_, i) => {
        const ip = `198.51.100.${i}`;
        const attempt = guard.begin(ip, username);
        return 'failed' in attempt ? `delay ${attempt.failed().delayMs}` : `refused ${attempt.scope}`;
      }).concat(guard.lockout('198.51.100.1', username)?.scope ?? 'open');
    expect(replies('nobody-here')).toEqual(replies('printer'));
  });

  it('counts IPv6 clients per address (a /64 is a whole LAN), the /64 only at 20 times the limit', () => {
    expect(clientKey('2001:db8:1:2::1')).toBe(clientKey('2001:0db8:1:2:0::1'));
    expect(clientKey('2001:db8:1:2::1')).not.toBe(clientKey('2001:db8:1:2:ffff::9'));
    expect(clientKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    const guard = new AuthGuard({ ...limits, maxPerIp: 3 }, () => false);
    for (let i = 0; i < 3; i++) (guard.begin('2001:db8::bad', 'x') as { failed(): unknown }).failed();
    expect(guard.lockout('2001:db8::bad')).toMatchObject({ scope: 'ip' });
    expect(guard.lockout('2001:db8::1')).toBeUndefined(); // the printer beside the guesser
    // A host hopping through its /64 still meets a limit: 20 × 3 failures from 60 addresses.
    for (let i = 0; i < 57; i++) (guard.begin(`2001:db8::${(i + 16).toString(16)}`, 'x') as { failed(): unknown }).failed();
    expect(guard.lockout('2001:db8::1')).toMatchObject({ scope: 'ip' });
    expect(guard.lockout('2001:db8:0:1::1')).toBeUndefined();
  });
});
