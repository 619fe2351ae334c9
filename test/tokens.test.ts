import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { accountFor, message, sendRaw, startProvider, startRelay, type TestRelay, stopStarted } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const scan = (n: number) => ({ from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: scan ${n}`], 'pages') });

describe('access tokens', () => {
  let provider: FakeProvider;
  let relay: TestRelay | undefined;

  afterEach(stopStarted);

  it('makes exactly one token request for 100 concurrent sends', async () => {
    provider = await startProvider();
    relay = await startRelay(provider);
    const port = relay.port;
    await Promise.all(Array.from({ length: 100 }, (_, n) => sendRaw(port, scan(n))));
    expect(provider.received).toHaveLength(100);
    expect(provider.tokenRequests).toBe(1);
  });

  it('refreshes once when the token nears expiry in the middle of a run', async () => {
    provider = await startProvider({ tokenLifetime: 2 }); // refreshed at half its life
    relay = await startRelay(provider);
    const port = relay.port;
    await Promise.all(Array.from({ length: 10 }, (_, n) => sendRaw(port, scan(n))));
    expect(provider.tokenRequests).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    // Upstream sessions end (as they do when idle), so the next sends must log in again.
    provider.dropConnections();
    await Promise.all(Array.from({ length: 30 }, (_, n) => sendRaw(port, scan(n))));
    expect(provider.received).toHaveLength(40);
    expect(provider.tokenRequests).toBe(2);
  });

  it('keeps the rotated refresh token across a restart (file mode 0600) and uses it', async () => {
    provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-rotate-'));
    const original = provider.issueRefreshToken();
    const account = accountFor(provider, original);
    relay = await startRelay(provider, { account, dataDir });
    await sendRaw(relay.port, scan(1));
    await relay.stop();

    const file = path.join(dataDir, 'tokens', 'office.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8')) as { refreshToken: string };
    expect(stored.refreshToken).not.toBe(original);
    expect(JSON.stringify(stored)).not.toContain(original);

    provider.revokeRefreshToken(original); // only the rotated one still works
    relay = await startRelay(provider, { account, dataDir });
    await sendRaw(relay.port, scan(2));
    expect(provider.received).toHaveLength(2);
  });

  it('prefers a refresh token newly put in the config over the stored one', async () => {
    provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-rotate-'));
    relay = await startRelay(provider, { account: accountFor(provider), dataDir });
    await sendRaw(relay.port, scan(1));
    await relay.stop();
    const stored = JSON.parse(await readFile(path.join(dataDir, 'tokens', 'office.json'), 'utf8')) as { refreshToken: string };
    provider.revokeRefreshToken(stored.refreshToken); // e.g. the admin signed in again

    relay = await startRelay(provider, { account: accountFor(provider, provider.issueRefreshToken()), dataDir });
    await sendRaw(relay.port, scan(2));
    expect(provider.received).toHaveLength(2);
  });

  for (const only of ['basic', 'body'] as const) {
    it(`authenticates to a token endpoint that takes the client secret only by ${only}`, async () => {
      provider = await startProvider({ clientAuth: only });
      relay = await startRelay(provider);
      await sendRaw(relay.port, scan(1));
      await sendRaw(relay.port, scan(2));
      expect(provider.received).toHaveLength(2);
    });
  }

  it('gets a token at start and keeps accounts alive without mail (keep-alive)', async () => {
    provider = await startProvider();
    relay = await startRelay(provider, { keepAlive: true, top: { oauth: { keepAliveInterval: 0.3, retries: 0 } } });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(provider.tokenRequests).toBeGreaterThanOrEqual(3);
    expect(provider.received).toHaveLength(0);
  });
});
