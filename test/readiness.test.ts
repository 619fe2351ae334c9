import { afterEach, describe, expect, it } from 'vitest';
import { RawSmtp } from './raw-smtp.js';
import { accountFor, execFileAsync, message, sendRaw, startProvider, startRelay, stopStarted, until } from './helpers.js';

/*
 * /readyz is what a load balancer or Kubernetes asks: can this replica take mail? An account that
 * needs a sign-in must not take the replica out of service (devices could not even queue);
 * /readyz/accounts keeps the per-account answer.
 */

const SCAN = { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', 'Subject: scan'], 'pages') };

async function probe(httpPort: number, path = '/readyz') {
  const response = await fetch(`http://127.0.0.1:${httpPort}${path}`);
  return { status: response.status, body: (await response.json()) as { status: string; problems?: string[]; accountsReady?: boolean; accounts: Record<string, { ready: boolean; state?: string }> } };
}

describe('readiness means "can take mail"', () => {
  afterEach(stopStarted);

  it('stays ready while an account needs a sign-in, and takes the mail into the queue; /readyz/accounts says 503', async () => {
    const provider = await startProvider();
    const { refreshToken: _signedOut, ...account } = accountFor(provider);
    const relay = await startRelay(provider, { account, top: { delivery: 'queue' } });
    expect(await probe(relay.httpPort)).toMatchObject({ status: 200, body: { status: 'ready', problems: [], accountsReady: false } });
    const accounts = await probe(relay.httpPort, '/readyz/accounts');
    expect(accounts.status).toBe(503);
    expect(accounts.body.accounts.office).toMatchObject({ ready: false });
    await sendRaw(relay.port, SCAN); // queued, held until the sign-in
  });

  it('is not ready once the spool has less than 1 MB of room, and says why', async () => {
    const provider = await startProvider();
    provider.refuseConnections = true; // what is queued stays queued
    const relay = await startRelay(provider, { top: { delivery: 'queue', queue: { maxSize: '1500KB' } } });
    expect((await probe(relay.httpPort)).status).toBe(200);
    await sendRaw(relay.port, { ...SCAN, raw: message(['From: mfp@printers.local', 'Subject: big'], 'x'.repeat(600_000)) });
    const full = await probe(relay.httpPort);
    expect(full.status).toBe(503);
    expect(full.body.problems).toEqual([expect.stringMatching(/^spool: nearly full \(see queue\.maxSize/)]);
  });

  it('is not ready while it drains on stop, and answers new sessions 421', async () => {
    const provider = await startProvider();
    provider.dataDelayMs = 1500; // a delivery in flight keeps the relay draining
    const relay = await startRelay(provider, { top: { delivery: 'queue', queue: { shutdownTimeout: 10 } } });
    await sendRaw(relay.port, SCAN);
    await until(() => provider.dataStarted === 1);
    const stopped = relay.stop();
    const draining = await probe(relay.httpPort);
    expect(draining.status).toBe(503);
    expect(draining.body.problems).toEqual([expect.stringMatching(/^draining/)]);
    const { client, greeting } = await RawSmtp.connect(relay.port); // a device arriving now is told to come back
    client.close();
    expect(greeting).toMatch(/^421 4\.3\.2 /);
    await stopped;
    expect(provider.received).toHaveLength(1);
  });
});

describe('the state endpoints and DNS rebinding', () => {
  afterEach(stopStarted);

  it('answer /metrics and /readyz under an address, a private or a configured name, never under a foreign one (curl)', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { top: { http: { host: '127.0.0.1', port: 0, allowedHosts: ['relay.corp.example'] } } });
    const status = async (path: string, host: string) => {
      const { stdout } = await execFileAsync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Host: ${host}`, `http://127.0.0.1:${relay.httpPort}${path}`]);
      return Number(stdout);
    };
    for (const path of ['/metrics', '/readyz', '/readyz/accounts']) {
      expect(await status(path, 'rebind.evil.example'), path).toBe(421);
      expect(await status(path, `rebind.evil.example:${relay.httpPort}`), path).toBe(421);
      for (const good of [`127.0.0.1:${relay.httpPort}`, '[::1]', 'smtp-oauth-relay', 'smtp-oauth-relay.relay.svc.cluster.local', 'relay.corp.example:9464']) {
        expect(await status(path, good), `${path} as ${good}`).not.toBe(421);
      }
    }
    expect(await status('/healthz', 'rebind.evil.example')).toBe(200);
  });
});
