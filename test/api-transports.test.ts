import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it } from 'vitest';
import { presetAccountFor } from '../bench/harness.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { REFUSALS, THROTTLED } from '../src/demo/provider-api.js';
import { RawSmtp } from './raw-smtp.js';
import { ADMIN_AUTHORIZATION, DEVICE, adminHttp, cli, headerValues, message, metric, readyz, sendRaw, sendRawExpectingError, splitMessage, startProvider, startRelay, stopStarted, until } from './helpers.js';

/**
 * Microsoft Graph's sendMail and the Gmail API's messages.send against the stand-in's APIs, which
 * behave as documented: MIME in base64 (Graph, 4 MB) or message/rfc822 (Gmail, 35 MB), delivery to
 * To, Cc and Bcc with Bcc removed, 429 with Retry-After, the documented error bodies.
 */

const TRANSPORTS = [
  { transport: 'graph', profile: 'microsoft', path: /^\/v1\.0\/users\/scanner%40contoso\.test\/sendMail$/, contentType: 'text/plain' },
  { transport: 'gmail', profile: 'google', path: /^\/upload\/gmail\/v1\/users\/scanner%40contoso\.test\/messages\/send$/, contentType: 'message/rfc822' },
] as const;

const SCAN = message(['From: mfp@printers.local', 'To: alice@example.com', 'Cc: carol@example.com', 'Subject: Scan from MFP', 'X-Device: lobby'], 'y'.repeat(76).concat('\r\n').repeat(133));

/** Compared by digest: a failed comparison of 25 MB buffers would print them. */
const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Sends to alice and carol (the To and Cc) and hidden (envelope only): delivered to all three, hidden named nowhere. */
async function sendWithBcc(provider: FakeProvider, port: number, raw: string | Buffer) {
  await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com', 'hidden@example.com'], raw });
  expect(provider.received).toHaveLength(1);
  const [received] = provider.received;
  expect([...received.envelope.to].sort()).toEqual(['alice@example.com', 'carol@example.com', 'hidden@example.com']);
  expect(received.raw.includes('hidden@')).toBe(false);
  return received;
}

function apiAccount(provider: FakeProvider, transport: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const account = presetAccountFor(provider) as { upstream: Record<string, unknown> };
  return { ...account, upstream: { ...account.upstream, transport, apiUrl: provider.apiUrl }, ...extra };
}

describe('API transports', () => {
  afterEach(stopStarted);

  for (const { transport, profile, path, contentType } of TRANSPORTS) {
    it(`${transport}: a 10 KB scan with a Bcc recipient arrives as sent, Bcc undisclosed, over the API only`, async () => {
      const provider = await startProvider({ profile });
      const relay = await startRelay(provider, { account: apiAccount(provider, transport) });
      const received = await sendWithBcc(provider, relay.port, SCAN);
      const { header, body } = splitMessage(received.raw);
      expect(body).toEqual(splitMessage(Buffer.from(SCAN)).body);
      expect(headerValues(header, 'subject')).toEqual(['Scan from MFP']);
      expect(headerValues(header, 'x-device')).toEqual(['lobby']);
      expect(headerValues(header, 'to')).toEqual(['alice@example.com']);
      expect(headerValues(header, 'from')).toEqual(['scanner@contoso.test']);
      expect(provider.authAttempts).toEqual([]); // no SMTP session at all
      expect(provider.api.requests).toEqual([{ path: expect.stringMatching(path), contentType, status: transport === 'graph' ? 202 : 200 }]);
      expect(await metric(relay.httpPort, 'smtp_relay_upstream_send_duration_seconds_count', { account: 'office', transport })).toBe(1);
    });

    it(`${transport}: a To or Cc naming an address the device did not send to is refused at DATA, in direct and queue mode (the API would deliver to it)`, async () => {
      const provider = await startProvider({ profile });
      for (const delivery of ['direct', 'queue']) {
        const relay = await startRelay(provider, { account: apiAccount(provider, transport), top: { delivery } });
        const reply = await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: SCAN });
        expect(reply).toMatch(/^550 5\.7\.1 Message names recipients it is not addressed to \(carol@example\.com\)/);
        expect(await metric(relay.httpPort, 'smtp_relay_queue_messages')).toBe(0);
      }
      expect(provider.api.requests).toEqual([]);
    });

    it(`${transport}: 429 with Retry-After is waited out, the API's words in the delivery log`, async () => {
      const provider = await startProvider({ profile });
      const relay = await startRelay(provider, { account: apiAccount(provider, transport), top: { delivery: 'queue', queue: { retry: { initialDelay: 1, maxDelay: 2 } } } });
      provider.apiScript.push(THROTTLED[transport](2));
      const started = Date.now();
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
      await until(() => provider.received.length === 1, 30_000);
      expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
      expect(provider.api.requests.map((request) => request.status)).toEqual([429, transport === 'graph' ? 202 : 200]);
      const { stdout } = await cli(['trace', '--data-dir', relay.dataDir, '--json']);
      const attempts = (JSON.parse(stdout) as { messages: { events: { event: string; result?: string; reply?: string }[] }[] }).messages[0].events.filter((event) => event.event === 'attempt');
      expect(attempts[0]).toMatchObject({ result: 'deferred', reply: expect.stringMatching(/^HTTP 429 (ApplicationThrottled|rateLimitExceeded): /) });
    });

    it(`${transport}: 403 (no permission to send) holds the account with the fix on the console; the permission granted, it sends`, async () => {
      const provider = await startProvider({ profile });
      provider.apiSendDenied = true;
      const relay = await startRelay(provider, { account: apiAccount(provider, transport), top: { delivery: 'queue', http: await adminHttp(), oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.3 } } });
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
      await until(async () => (await metric(relay.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);
      const health = (await readyz(relay.httpPort)).body.accounts.office as { lastProblem?: { hint?: string; reason?: string; reply?: string } };
      const fix = transport === 'graph' ? /Application Mail\.Send/ : /gmail\.send/;
      expect(health.lastProblem).toMatchObject({ reason: 'account_misconfigured', hint: expect.stringMatching(fix) });
      const page = await (await fetch(`http://127.0.0.1:${relay.httpPort}/`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
      expect(page).toMatch(fix);
      expect(page).toMatch(/HTTP 403/);
      // The Set up page gives this transport's steps: Graph's Mail.Send, the Gmail API and its scope; no SMTP AUTH.
      const setup = await (await fetch(`http://127.0.0.1:${relay.httpPort}/setup`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
      expect(setup).toMatch(transport === 'graph' ? /Microsoft Graph › Delegated › Mail\.Send/ : /enable the <strong>Gmail API<\/strong>/);
      expect(setup).not.toMatch(/SmtpClientAuthenticationDisabled|https:\/\/mail\.google\.com\//);
      provider.apiSendDenied = false;
      await until(() => provider.received.length === 1);
    });

    it(`${transport}: a token revoked at the provider is refreshed once and the send retried`, async () => {
      const provider = await startProvider({ profile });
      const relay = await startRelay(provider, { account: apiAccount(provider, transport) });
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
      provider.failNextLogins = 1;
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
      expect(provider.received).toHaveLength(2);
      expect(provider.tokenRequests).toBe(2);
      expect(provider.api.requests.map((request) => request.status)).toEqual(transport === 'graph' ? [202, 401, 202] : [200, 401, 200]);
    });
  }

  for (const { transport, profile } of TRANSPORTS) {
    it(`${transport}: a 25 MB scan with a Bcc recipient arrives with its headers and its attachment's bytes as sent${transport === 'graph' ? ' (draft, upload session, send)' : ' (streamed media upload)'}`, async () => {
      const pdf = randomBytes(19 * 1024 * 1024);
      const scan = Buffer.concat([
        Buffer.from(message(['From: mfp@printers.local', 'To: alice@example.com', 'Cc: carol@example.com', 'Subject: 25 MB scan', 'X-Device: lobby', 'MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary="scan-boundary"'], '--scan-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nScan attached.\r\n--scan-boundary\r\nContent-Type: application/pdf; name="scan.pdf"\r\nContent-Disposition: attachment; filename="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n')),
        Buffer.from(pdf.toString('base64').replace(/.{76}/g, '$&\r\n')),
        Buffer.from('\r\n--scan-boundary--\r\n'),
      ]);
      expect(scan.length).toBeGreaterThan(25 * 1024 * 1024);
      const provider = await startProvider({ profile });
      const relay = await startRelay(provider, { account: apiAccount(provider, transport) });
      const received = await sendWithBcc(provider, relay.port, scan);
      const { header } = splitMessage(received.raw);
      for (const [name, value] of [['subject', '25 MB scan'], ['to', 'alice@example.com'], ['cc', 'carol@example.com'], ['x-device', 'lobby'], ['content-type', 'multipart/mixed; boundary="scan-boundary"'], ['from', 'scanner@contoso.test']]) {
        expect(headerValues(header, name)).toEqual([value]);
      }
      const parsed = await simpleParser(received.raw);
      expect(parsed.text?.trim()).toBe('Scan attached.');
      expect(parsed.attachments.map((attachment) => [attachment.filename, attachment.contentType, digest(attachment.content)])).toEqual([['scan.pdf', 'application/pdf', digest(pdf)]]);
      if (transport === 'graph') {
        const paths = provider.api.requests.map((request) => `${request.status} ${request.path.replace(/AAMkAD[\w-]+/, 'DRAFT').replace(/upload-sessions\/[\w-]+/, 'upload-sessions/S')}`);
        expect(paths[0]).toBe('201 /v1.0/users/scanner%40contoso.test/messages');
        expect(paths[1]).toBe('201 /v1.0/users/scanner%40contoso.test/messages/DRAFT/attachments/createUploadSession');
        expect(paths.filter((entry) => entry.includes('/upload-sessions/')).length).toBeGreaterThanOrEqual(7); // chunks under 4 MB
        expect(paths.at(-1)).toBe('202 /v1.0/users/scanner%40contoso.test/messages/DRAFT/send');
        expect(await readdir(path.join(relay.dataDir, 'upload-parts'))).toEqual([]); // the lifted attachment's file is gone
      }
    });
  }

  it('graph: a message whose text alone passes 3 MB is refused at once, nothing left at Graph', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    const relay = await startRelay(provider, { account: apiAccount(provider, 'graph') });
    const text = message(['From: mfp@printers.local', 'To: alice@example.com', 'Subject: a long log'], 'log line of a chatty device\r\n'.repeat(130_000));
    expect(await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: text })).toMatch(/^552 5\.3\.4 Message is too large for Microsoft Graph: without its attachments it is over 3 MB/);
    expect(provider.api.requests).toEqual([]);
  });

  it('graph: the copy Graph files in Sent Items is deleted (saveToSentItems defaults to false), kept with true, and a missing Mail.ReadWrite is said once', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    const scan = { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN };
    const keeping = await startRelay(provider, { account: apiAccount(provider, 'graph', { upstream: { ...(apiAccount(provider, 'graph') as { upstream: object }).upstream, saveToSentItems: true } }) });
    await sendRaw(keeping.port, scan);
    const cleaning = await startRelay(provider, { account: apiAccount(provider, 'graph') });
    await sendRaw(cleaning.port, scan);
    expect(provider.api.sentItems.size).toBe(2);
    // The cleaning relay deletes its copy; the keeping one, which sent first, never looks.
    await until(() => provider.api.sentItems.size === 1);
    const [kept] = [...provider.api.sentItems.values()];
    expect(kept.internetMessageId).toBe(headerValues(splitMessage(provider.received[0].raw).header, 'message-id')[0]);
    provider.api.mailReadWriteDenied = true;
    await sendRaw(cleaning.port, scan);
    await sendRaw(cleaning.port, scan);
    await until(() => provider.api.requests.filter((request) => request.path.endsWith('/mailFolders/SentItems/messages') && request.status === 403).length === 2);
    await until(() => cleaning.logs.some((line) => line.includes('cannot delete the sent copies Graph files in Sent Items')));
    expect(provider.received).toHaveLength(4);
    expect(cleaning.logs.filter((line) => line.includes('Mail.ReadWrite')).length).toBe(1);
  });

  // Each documented refusal, scripted at the stand-in, as a device in direct mode hears it and as the account's health shows it.
  const refusals = [
    { transport: 'graph', answer: REFUSALS.mailboxNotEnabled, device: /^451 4\.7\.0 Relay account office cannot send now \(HTTP 404 MailboxNotEnabledForRESTAPI\)/, reason: 'account_misconfigured' },
    { transport: 'graph', answer: REFUSALS.invalidRecipients, device: /^550 5\.1\.3 Upstream API: HTTP 400 ErrorInvalidRecipients: At least one recipient isn't valid/, reason: 'upstream_rejected' },
    { transport: 'graph', answer: REFUSALS.graphTooLarge, device: /^552 5\.3\.4 Upstream API: HTTP 413/, reason: 'too_large' },
    { transport: 'graph', answer: REFUSALS.unavailable(1), device: /^451 4\.3\.2 Upstream API: HTTP 503 ServiceUnavailable/, reason: 'upstream_deferred' },
    { transport: 'gmail', answer: REFUSALS.gmailFailedPrecondition, device: /^554 5\.6\.0 Upstream API: HTTP 400 failedPrecondition: Bad Request/, reason: 'upstream_rejected' },
    { transport: 'gmail', answer: REFUSALS.gmailInvalidArgument, device: /^554 5\.6\.0 Upstream API: HTTP 400 invalidArgument: Invalid To header/, reason: 'upstream_rejected' },
    { transport: 'gmail', answer: REFUSALS.gmailDailyLimit, device: /^451 4\.7\.0 Relay account office cannot send now \(HTTP 403 dailyLimitExceeded\)/, reason: 'quota_exhausted' },
  ] as const;
  for (const { transport, answer, device, reason } of refusals) {
    it(`${transport}: HTTP ${answer.status} ${JSON.stringify(answer.body).match(/"(?:code|reason)":"([A-Za-z]+)"/g)?.at(-1)?.split('"')[3]} is read as ${reason}`, async () => {
      const provider = await startProvider({ profile: transport === 'graph' ? 'microsoft' : 'google' });
      const relay = await startRelay(provider, { account: apiAccount(provider, transport) });
      provider.apiScript.push(answer);
      expect(await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN })).toMatch(device);
      expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason })).toBe(1);
      expect(provider.received).toHaveLength(0);
    });
  }

  it('gmail: a Workspace service account with domain-wide delegation sends with the gmail.send scope only', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const provider = await startProvider({ profile: 'google', serviceAccountPublicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    const keyFile = path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-sa-')), 'key.json');
    await writeFile(keyFile, JSON.stringify({ client_email: 'relay@project.iam.gserviceaccount.com', private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }) }));
    const { refreshToken: _none, clientSecret: _secret, ...account } = apiAccount(provider, 'gmail');
    const relay = await startRelay(provider, { account: { ...account, flow: 'service_account', serviceAccountKeyFile: keyFile } });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
    expect(provider.received).toHaveLength(1);
    expect(provider.api.requests.map((request) => request.status)).toEqual([200]);
  });

  it('gmail: a device that hangs up mid-DATA in direct mode leaves the streamed request unfinished, and Gmail sends nothing', async () => {
    const provider = await startProvider({ profile: 'google' });
    const relay = await startRelay(provider, { account: apiAccount(provider, 'gmail') });
    const client = await RawSmtp.inData(relay.port, DEVICE, { from: 'mfp@printers.local', to: ['alice@example.com'] });
    await client.send(`From: mfp@printers.local\r\nTo: alice@example.com\r\nSubject: half a scan\r\n\r\n${'QUJD'.repeat(19).concat('\r\n').repeat(3000)}`);
    await until(() => provider.api.bodiesBegun === 1); // the message is streaming to Gmail
    client.close();
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'disconnected' })) === 1);
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
    expect(provider.received).toHaveLength(1);
    expect(provider.received[0].raw.toString()).not.toContain('half a scan');
  });

  it('graph: a From the mailbox may not send as is refused by Exchange (403 ErrorSendAsDenied), for good, with the fix', async () => {
    const provider = await startProvider({ profile: 'microsoft', enforceSendAs: [] });
    const relay = await startRelay(provider, { account: apiAccount(provider, 'graph', { sendAs: ['mfp@printers.local'] }) });
    const reply = await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
    expect(reply).toMatch(/^550 5\.7\.60 Upstream API: HTTP 403 ErrorSendAsDenied: /);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'send_as_denied' })).toBe(1);
    expect(provider.received).toHaveLength(0);
  });

  it('graph: while the provider asks to wait (Retry-After), a device gets 451 with the time left and Graph is not asked', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    const relay = await startRelay(provider, { account: apiAccount(provider, 'graph') });
    provider.apiScript.push(THROTTLED.graph(30));
    const scan = { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN };
    expect(await sendRawExpectingError(relay.port, scan)).toMatch(/^451 4\.7\.0 Upstream API: HTTP 429 ApplicationThrottled: Application is over its MailboxConcurrency limit\./);
    expect(await sendRawExpectingError(relay.port, scan)).toMatch(/^451 4\.7\.0 The provider asked office to wait \(Retry-After\); try again in (29|30) s/);
    expect(provider.api.requests).toHaveLength(1);
  });

  it('graph: the token is for Microsoft Graph (scope and audience), not for SMTP AUTH', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    const relay = await startRelay(provider, { account: apiAccount(provider, 'graph', { flow: 'client_credentials', refreshToken: undefined }) });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
    expect(provider.received).toHaveLength(1);
    // An account that asks for Exchange's SMTP scope gets Graph's 401 "Invalid audience", and is held with the fix.
    const wrong = await startRelay(provider, { account: apiAccount(provider, 'graph', { scopes: 'https://outlook.office365.com/.default', flow: 'client_credentials', refreshToken: undefined }) });
    expect(await sendRawExpectingError(wrong.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN })).toMatch(/^451 4\.7\.0 Relay account office cannot send now \(HTTP 401 InvalidAuthenticationToken\)/);
  });

  for (const transport of ['smtp', 'graph'] as const) {
    it(`${transport}: the console's timeline shows what Exchange did with the message (its message trace, asked on demand, cached)`, async () => {
      const provider = await startProvider({ profile: 'microsoft' });
      provider.traceStatus.set('carol@example.com', 'quarantined');
      const account = apiAccount(provider, transport, { flow: 'client_credentials', refreshToken: undefined });
      const relay = await startRelay(provider, { account, top: { http: await adminHttp(), trace: { providerLookup: true } } });
      const sent = await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
      const id = /as ([0-9A-Z]+)/.exec(sent.response)![1];
      const page = async () => (await fetch(`http://127.0.0.1:${relay.httpPort}/messages/${id}`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
      const first = await page();
      expect(first).toContain('What Exchange Online did');
      expect(first).toMatch(/alice@example\.com<\/td><td[^>]*>Delivered<\/td>/);
      expect(first).toMatch(/carol@example\.com<\/td><td[^>]*>Quarantined<\/td>/);
      expect(first).toContain('The message was successfully delivered.');
      const asked = provider.api.trace.requests.length;
      expect(asked).toBe(3); // the list, and the detail of each recipient
      await page();
      expect(provider.api.trace.requests.length).toBe(asked); // final statuses are cached
    });
  }

  it('trace.providerLookup: without ExchangeMessageTrace.Read.All the console says what to grant; a delegated-only account is a config error', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    provider.api.trace.denied = true;
    const relay = await startRelay(provider, { account: apiAccount(provider, 'graph', { flow: 'client_credentials', refreshToken: undefined }), top: { http: await adminHttp(), trace: { providerLookup: ['office'] } } });
    const sent = await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com', 'carol@example.com'], raw: SCAN });
    const id = /as ([0-9A-Z]+)/.exec(sent.response)![1];
    const page = await (await fetch(`http://127.0.0.1:${relay.httpPort}/messages/${id}`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
    expect(page).toMatch(/grant the app the Microsoft Graph application permission ExchangeMessageTrace\.Read\.All/);
    const { clientSecret: _none, ...publicClient } = apiAccount(provider, 'smtp') as Record<string, unknown>;
    await expect(startRelay(provider, { account: publicClient, top: { trace: { providerLookup: ['office'] } } })).rejects.toThrow(/trace\.providerLookup\[0\].*no app credential/s);
  });
});
