import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, accountFor, message, metric, readyz, sendRaw, sendRawExpectingError, startProvider, startRelay, type TestRelay, stopStarted, until } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import type { ProviderProfileName } from '../src/demo/provider-profiles.js';

const SCAN = { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', 'Subject: scan'], 'pages') };

describe('when the upstream or the token endpoint fails', () => {
  let provider: FakeProvider;
  let relay: TestRelay;

  afterEach(stopStarted);

  async function setUp(profile: ProviderProfileName = 'microsoft', account: Record<string, unknown> = {}, providerOptions = {}) {
    provider = await startProvider({ profile, ...providerOptions });
    relay = await startRelay(provider, { account: { ...accountFor(provider), ...account } });
  }

  for (const profile of ['microsoft', 'google'] as const) {
    it(`${profile}: a refused token is refreshed once and the send retried once`, async () => {
      await setUp(profile);
      provider.failNextLogins = 1; // the provider no longer honours the token it issued
      await sendRaw(relay.port, SCAN);
      expect(provider.tokenRequests).toBe(2);
      expect(provider.received).toHaveLength(1);
      expect(provider.authAttempts.map((attempt) => attempt.ok)).toEqual([false, true]);
    });

    it(`${profile}: a login refused twice defers with 451 and shows in /readyz and /metrics`, async () => {
      await setUp(profile);
      provider.failNextLogins = 2;
      const reply = await sendRawExpectingError(relay.port, SCAN);
      expect(reply).toMatch(/^451 4\.7\.0 Upstream refused the relay account office: 535[ -]5\.7\.[38]/);
      expect(provider.tokenRequests).toBe(2);
      expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'upstream_auth' })).toBe(1);
      const ready = await readyz(relay.httpPort);
      expect(ready.status).toBe(503);
      expect(ready.body.accounts.office.lastProblem).toMatchObject({ reason: 'upstream_auth' });
      // It recovers by itself once a send goes through.
      await sendRaw(relay.port, SCAN);
      expect((await readyz(relay.httpPort)).status).toBe(200);
    });
  }

  it('passes 550 5.7.60 SendAsDenied through as a permanent failure', async () => {
    await setUp('microsoft', { sendAs: ['boss@contoso.test'] }, { enforceSendAs: [] });
    const reply = await sendRawExpectingError(relay.port, { ...SCAN, raw: message(['From: boss@contoso.test'], 'x') });
    expect(reply).toMatch(/^550 5\.7\.60 Upstream: SMTP; Client does not have permissions to send as this sender/);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'send_as_denied' })).toBe(1);
  });

  it('turns upstream throttling (432 4.3.2) into 451 with the upstream code', async () => {
    await setUp();
    provider.dataScript.push({ code: 432, message: '4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded' });
    const reply = await sendRawExpectingError(relay.port, SCAN);
    expect(reply).toBe('451 4.3.2 Upstream: STOREDRV.ClientSubmit; sender thread limit exceeded');
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'upstream_deferred' })).toBe(1);
  });

  it('passes a recipient refusal through as 550 5.1.1', async () => {
    await setUp();
    provider.unknownRecipients.add('nobody@example.com');
    const reply = await sendRawExpectingError(relay.port, { ...SCAN, to: ['nobody@example.com'] });
    expect(reply).toMatch(/^550 5\.1\.10 Upstream: RESOLVER\.ADR\.RecipientNotFound/);
  });

  it('defers with 451 while the token endpoint fails, and recovers', async () => {
    await setUp();
    provider.tokenScript.push({ status: 500, body: {} }, { status: 503, body: {} });
    const reply = await sendRawExpectingError(relay.port, SCAN);
    expect(reply).toMatch(/^451 4\.4\.3 /);
    expect(await metric(relay.httpPort, 'smtp_relay_token_refreshes_total', { account: 'office', result: 'error' })).toBe(1);
    expect((await readyz(relay.httpPort)).body.accounts.office.state).toBe('unavailable');
    await sendRaw(relay.port, SCAN);
    expect((await readyz(relay.httpPort)).body.accounts.office.state).toBe('ready');
  });

  it('marks the account as needing re-authorisation on invalid_grant, with the provider text', async () => {
    provider = await startProvider();
    relay = await startRelay(provider, { account: { ...accountFor(provider, 'rt-revoked-long-ago') } });
    const reply = await sendRawExpectingError(relay.port, SCAN);
    expect(reply).toMatch(/^451 4\.7\.0 Relay account office needs to be signed in again/);
    const ready = await readyz(relay.httpPort);
    expect(ready.status).toBe(503);
    expect(ready.body.accounts.office).toMatchObject({ state: 'needs_reauth', ready: false });
    expect(String(ready.body.accounts.office.lastError)).toContain('invalid_grant: AADSTS70008');
    expect(await metric(relay.httpPort, 'smtp_relay_token_refreshes_total', { account: 'office', result: 'reauth_required' })).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_account_ready', { account: 'office' })).toBe(0);
    // A second message does not hammer the token endpoint with the same dead token.
    await sendRawExpectingError(relay.port, SCAN);
    expect(provider.tokenRequests).toBe(1);
  });

  it('refuses to send to an upstream whose certificate it cannot verify', async () => {
    provider = await startProvider();
    const account = accountFor(provider);
    relay = await startRelay(provider, { account: { ...account, upstream: { ...(account.upstream as object), ca: undefined } } });
    const reply = await sendRawExpectingError(relay.port, SCAN);
    expect(reply).toMatch(/^451 4\.7\.10 Upstream TLS failed/);
    expect(provider.received).toHaveLength(0);
    expect(provider.authAttempts).toHaveLength(0);
  });

  it('defers with 451 4.4.1 when the upstream is unreachable', async () => {
    provider = await startProvider();
    const account = accountFor(provider);
    relay = await startRelay(provider, { account: { ...account, upstream: { ...(account.upstream as object), port: 1 } } });
    const reply = await sendRawExpectingError(relay.port, SCAN);
    expect(reply).toMatch(/^451 4\.4\.1 /);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'upstream_unreachable' })).toBe(1);
  });

  it('refuses an oversized message with 552 without any of it reaching the upstream', async () => {
    provider = await startProvider();
    relay = await startRelay(provider, { top: { smtp: { host: '127.0.0.1', port: 0, maxMessageSize: '64KB' } } });
    const reply = await sendRawExpectingError(relay.port, { ...SCAN, raw: message(['From: mfp@printers.local'], 'y'.repeat(200_000)) });
    expect(reply).toMatch(/^552 5\.3\.4 Message exceeds the size limit of 64KB/);
    expect(provider.received).toHaveLength(0);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'too_large' })).toBe(1);
    // The session is still usable afterwards.
    await sendRaw(relay.port, SCAN);
    expect(provider.received[0].envelope.from).toBe(MAILBOX);
  });
});

describe('direct mode streams upstream while the device sends', () => {
  const LINE = `${'z'.repeat(78)}\r\n`;

  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  /** A device that has sent the header and part of the body, with the upstream's DATA under way. */
  async function midMessage(provider: FakeProvider, relay: TestRelay): Promise<RawSmtp> {
    const client = await RawSmtp.inData(relay.port, DEVICE, { from: 'mfp@printers.local', to: ['alice@example.com'] });
    await client.send(`From: mfp@printers.local\r\nSubject: half a scan\r\n\r\n${LINE.repeat(501)}`);
    await until(() => provider.dataStarted === 1); // the upstream has begun this message
    return client;
  }

  async function nextMessageArrivesIntact(provider: FakeProvider, relay: TestRelay): Promise<void> {
    await sendRaw(relay.port, SCAN);
    expect(provider.received).toHaveLength(1);
    expect(provider.received[0].raw.toString()).toMatch(/Subject: scan\r\n[\s\S]*\r\n\r\npages\r\n$/);
    expect(provider.received[0].raw.toString()).not.toContain('half a scan');
  }

  it('drops the upstream transaction before its final dot when the message turns out too large', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { top: { smtp: { host: '127.0.0.1', port: 0, maxMessageSize: '64KB' } } });
    const device = await midMessage(provider, relay);
    expect(await device.write(`${LINE.repeat(1000)}.\r\n`)).toMatch(/^552 5\.3\.4 /);
    await new Promise((resolve) => setTimeout(resolve, 200)); // a completed upstream message would be in by now
    expect(provider.received).toHaveLength(0);
    await nextMessageArrivesIntact(provider, relay);
  });

  it('drops the upstream transaction when the device hangs up in the middle of DATA', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider);
    const device = await midMessage(provider, relay);
    device.close();
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'disconnected' })) === 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(provider.received).toHaveLength(0);
    await nextMessageArrivesIntact(provider, relay);
  });

  it('lets a device that trickles its DATA hold no upstream session: another device sends meanwhile, and the slow one arrives once, whole', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { account: { ...accountFor(provider), upstream: { ...(accountFor(provider).upstream as object), maxConnections: 1 } } });
    const slow = await midMessage(provider, relay); // it holds the mailbox's one session now
    const started = Date.now();
    await sendRaw(relay.port, SCAN); // waits for the session until the slow device has stalled (2 s)
    expect(Date.now() - started).toBeLessThan(8_000);
    expect(provider.received.map((received) => /Subject: ([\w ]+)/.exec(received.raw.toString())![1])).toEqual(['scan']);
    await slow.send(LINE.repeat(10));
    expect(await slow.write('.\r\n')).toMatch(/^250 /);
    expect(provider.received.map((received) => /Subject: ([\w ]+)/.exec(received.raw.toString())![1])).toEqual(['scan', 'half a scan']);
    expect(provider.received[1].raw.toString().split('\r\n\r\n').slice(1).join('\r\n\r\n')).toBe(LINE.repeat(511));
  });

  it('completes the streamed message once the device ends it, byte for byte', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider);
    const device = await midMessage(provider, relay);
    expect(await device.write('.\r\n')).toMatch(/^250 /);
    expect(provider.received).toHaveLength(1);
    const body = provider.received[0].raw.toString().split('\r\n\r\n').slice(1).join('\r\n\r\n');
    expect(body).toBe(LINE.repeat(501));
  });
});

describe('direct mode keeps the provider\'s pace', () => {
  afterEach(stopStarted);

  it('relays limits.messagesPerMinute messages and answers the next one 451 4.7.0, so the device retries later', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { account: { ...accountFor(provider), limits: { messagesPerMinute: 2 } } });
    await sendRaw(relay.port, SCAN);
    await sendRaw(relay.port, SCAN);
    expect(await sendRawExpectingError(relay.port, SCAN)).toMatch(/^451 4\.7\.0 Sending pace of office reached \(limits\); try again in \d+ s/);
    expect(provider.received).toHaveLength(2);
  });
});
