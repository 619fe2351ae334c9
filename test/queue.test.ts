import { afterEach, describe, expect, it } from 'vitest';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MAILBOX, accountFor, message, mime, metric, readyz, sendRaw, sendRawExpectingError, startProvider, startRelay, type RelayOptions, type TestRelay, until, stopStarted } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { TokenStore } from '../src/oauth/index.js';
import { fingerprint } from '../src/oauth/token-store.js';
import { queueCommand } from '../src/cli/queue.js';

const scan = (n: number, to = ['alice@example.com']) => ({ from: 'mfp@printers.local', to, raw: message(['From: mfp@printers.local', `Subject: scan ${n}`], `page ${n}`) });
const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 1, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.2 } };

describe('queue mode (store and forward)', () => {
  let provider: FakeProvider;
  let relay: TestRelay | undefined;

  afterEach(stopStarted);

  async function setUp(options: RelayOptions = {}) {
    provider ??= await startProvider();
    relay = await startRelay(provider, { ...options, top: { ...QUEUE, ...options.top } });
    return relay;
  }

  it('answers 250 once the message is on disk, then delivers it', async () => {
    provider = await startProvider();
    provider.refuseConnections = true;
    const { port, httpPort } = await setUp();
    const info = await sendRaw(port, scan(1));
    expect(info.response).toMatch(/^250 2\.6\.0 Ok: queued as [0-9A-Z]+$/);
    await until(async () => (await metric(httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'deferred' })) === 1);
    provider.refuseConnections = false;
    await until(() => provider.received.length === 1);
    expect(provider.received[0].envelope.from).toBe(MAILBOX);
    await until(async () => (await readdir(path.join(relay!.dataDir, 'spool', 'queue'))).length === 0);
    expect(await metric(httpPort, 'smtp_relay_messages_relayed_total', { account: 'office' })).toBe(1);
    expect(await metric(httpPort, 'smtp_relay_delivery_attempts_total', { account: 'office', result: 'deferred' })).toBeGreaterThanOrEqual(1);
  });

  it('retries with growing delays while the upstream is down, and delivers when it is back', async () => {
    provider = await startProvider();
    provider.refuseConnections = true;
    const { port } = await setUp();
    await sendRaw(port, scan(1));
    await until(() => provider.connectionTimes.length >= 4);
    provider.refuseConnections = false;
    await until(() => provider.received.length === 1);
    const [first, second, third, fourth] = provider.connectionTimes;
    // initialDelay 0.2 s doubling, ±20% jitter: gaps of about 0.2, 0.4, 0.8 s
    expect(second - first).toBeGreaterThanOrEqual(150);
    expect(third - second).toBeGreaterThanOrEqual(300);
    expect(fourth - third).toBeGreaterThanOrEqual(600);
  });

  it('rides out a storm of 421 and 451 replies without losing a message', async () => {
    provider = await startProvider();
    for (let i = 0; i < 12; i++) provider.dataScript.push(i % 2 ? { code: 451, message: '4.7.500 Server busy, try again later' } : { code: 421, message: '4.3.2 Service not available' });
    const { port, httpPort } = await setUp();
    await Promise.all(Array.from({ length: 6 }, (_, n) => sendRaw(port, scan(n))));
    await until(() => provider.received.length === 6, 30_000);
    expect(new Set(provider.received.map((m) => /Subject: (scan \d)/.exec(m.raw.toString())![1])).size).toBe(6);
    expect(await metric(httpPort, 'smtp_relay_deferrals_total', { account: 'office', reason: 'upstream_deferred' })).toBeGreaterThan(0);
  });

  it('keeps mail queued while the token endpoint fails, and delivers once it recovers', async () => {
    provider = await startProvider();
    provider.tokenScript.push({ status: 500, body: {} }, { status: 502, body: {} }, { status: 503, body: {} });
    const { port, httpPort } = await setUp();
    await sendRaw(port, scan(1));
    await until(() => provider.received.length === 1);
    expect(await metric(httpPort, 'smtp_relay_deferrals_total', { account: 'office', reason: 'token_unavailable' })).toBeGreaterThan(0);
  });

  it('holds an account whose refresh token is rejected, and resumes by itself once it is signed in again', async () => {
    provider = await startProvider();
    const dead = 'rt-dead';
    const { port, httpPort, dataDir } = await setUp({ account: accountFor(provider, dead) });
    await sendRaw(port, scan(1));
    await until(async () => (await metric(httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);
    const ready = await readyz(httpPort);
    expect(ready.status).toBe(503);
    expect(ready.body.accounts.office).toMatchObject({ state: 'needs_reauth', queue: { held: true } });
    expect(provider.received).toHaveLength(0);

    // Signing in again puts a new refresh token in the store (what `login` does).
    await new TokenStore(path.join(dataDir, 'tokens')).write('office', { refreshToken: provider.issueRefreshToken(), seed: fingerprint(dead), updatedAt: new Date().toISOString() });
    await until(() => provider.received.length === 1);
    await until(async () => (await metric(httpPort, 'smtp_relay_account_held', { account: 'office' })) === 0);
  });

  it('paces delivery under messagesPerMinute: a burst is accepted whole and sent at the allowed rate', async () => {
    provider = await startProvider();
    const { port, httpPort } = await setUp({ account: { ...accountFor(provider), limits: { messagesPerMinute: 3 } } });
    const replies = await Promise.all(Array.from({ length: 8 }, (_, n) => sendRaw(port, scan(n))));
    expect(replies.every((info) => info.response.startsWith('250'))).toBe(true);
    await until(() => provider.received.length === 3);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(provider.received).toHaveLength(3);
    expect(await metric(httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'queued' })).toBe(5);
  });

  it('does not send again to recipients that were accepted', async () => {
    provider = await startProvider();
    provider.deferredRecipients.set('bob@example.com', 1);
    const { port } = await setUp();
    await sendRaw(port, scan(1, ['alice@example.com', 'bob@example.com']));
    await until(() => provider.received.length === 2);
    expect(provider.received.map((m) => m.envelope.to)).toEqual([['alice@example.com'], ['bob@example.com']]);
  });

  it('moves a permanent failure to the failed area and reports it to the postmaster and the sender', async () => {
    provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    const { port, httpPort, dataDir } = await setUp({ top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test', notifySender: true } } });
    await sendRaw(port, scan(1, ['nobody@example.com']));
    await until(() => provider.received.length === 2);
    expect(provider.received.map((received) => received.envelope.to[0]).sort()).toEqual(['it@contoso.test', 'mfp@printers.local']);
    const report = provider.received[0];
    expect(report.envelope.from).toBe(MAILBOX);
    const text = report.raw.toString();
    expect(text).toContain('Content-Type: multipart/report; report-type=delivery-status');
    expect(text).toContain('Final-Recipient: rfc822; nobody@example.com');
    expect(text).toContain('Status: 5.1.1');
    expect(text).toContain('Subject: scan 1'); // the original headers, not the body
    expect(text).not.toContain('page 1');
    // The reports are queued before the message moves to failed/ (crash safety): they may arrive first.
    await until(async () => /550 5\.1\.1/.test((await queueCommand(dataDir, ['failed'], false)).output));
    expect(await metric(httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'failed' })).toBe(1);
    expect(await metric(httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'upstream_rejected' })).toBe(1);
  });

  it('answers 452 4.3.1 when the spool is full, leaves no partial file, and takes mail again once it drains', async () => {
    provider = await startProvider();
    provider.refuseConnections = true;
    const { port, dataDir } = await setUp({ top: { ...QUEUE, queue: { ...QUEUE.queue, maxSize: '3KB' } } });
    const big = (n: number) => ({ ...scan(n), raw: message(['From: mfp@printers.local', `Subject: big ${n}`], 'z'.repeat(900)) });
    await sendRaw(port, big(1));
    await sendRaw(port, big(2));
    expect(await sendRawExpectingError(port, big(3))).toMatch(/^452 4\.3\.1 /);
    expect(await readdir(path.join(dataDir, 'spool', 'incoming'))).toEqual([]);
    provider.refuseConnections = false;
    await until(() => provider.received.length === 2);
    await sendRaw(port, big(3));
    await until(() => provider.received.length === 3);
  });

  it('keeps failed messages within queue.maxSize: the oldest make room, and the relay keeps taking mail', async () => {
    provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com'); // every message fails for good
    const { port, dataDir, logs } = await setUp({ top: { ...QUEUE, queue: { ...QUEUE.queue, maxSize: '20KB' }, bounces: { notifySender: false } } });
    const failedMessages = async () => (await readdir(path.join(dataDir, 'spool', 'failed'))).filter((name) => name.endsWith('.msg'));
    for (let n = 0; n < 20; n++) {
      await sendRaw(port, { ...scan(n, ['nobody@example.com']), raw: message(['From: mfp@printers.local', `Subject: doomed ${n}`], 'z'.repeat(2000)) });
      await until(async () => (await readdir(path.join(dataDir, 'spool', 'queue'))).length === 0); // failed before the next one
    }
    await until(async () => (await readdir(path.join(dataDir, 'spool', 'queue'))).length === 0);
    // Every one got 250; of ~2.1 KB messages, at most 9 fit in 20 KB beside the queue.
    expect((await failedMessages()).length).toBeGreaterThan(0);
    expect((await failedMessages()).length).toBeLessThanOrEqual(9);
    expect(logs.join('')).toContain('failed messages deleted before queue.failedRetention to keep the spool within queue.maxSize');
  });

  it('recovers the spool at start: complete messages are delivered, partial files removed', async () => {
    provider = await startProvider();
    provider.refuseConnections = true;
    const first = await setUp();
    const dataDir = first.dataDir;
    await sendRaw(first.port, scan(1));
    await sendRaw(first.port, scan(2));
    await first.app.stop();
    relay = undefined;
    // What a crash mid-receive or mid-commit leaves behind.
    await writeFile(path.join(dataDir, 'spool', 'incoming', 'HALF.eml'), 'From: x\r\n\r\npartial');
    await writeFile(path.join(dataDir, 'spool', 'queue', 'UNCOMMITTED.eml'), 'From: x\r\n\r\nno record');
    provider.refuseConnections = false;
    relay = await startRelay(provider, { dataDir, top: QUEUE });
    await until(() => provider.received.length === 2);
    expect(await readdir(path.join(dataDir, 'spool', 'incoming'))).toEqual([]);
    await until(async () => (await readdir(path.join(dataDir, 'spool', 'queue'))).length === 0);
  });

  it('queue list shows a deferred message with its last upstream reply; retry and delete work on it', async () => {
    provider = await startProvider();
    provider.dataScript.push({ code: 432, message: '4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded' });
    const { port, dataDir } = await setUp({ top: { ...QUEUE, queue: { retry: { initialDelay: 3600, maxDelay: 3600, maxAge: 86400 } } } });
    await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: mime('Scan 2026-11-23 10:05', { name: 'scan0001.pdf', type: 'application/pdf', bytes: 4096 }) });
    await until(async () => (await queueCommand(dataDir, ['list'], false)).output.includes('432'));
    const listing = (await queueCommand(dataDir, ['list'], false)).output;
    expect(listing).toMatch(/^ID\s+ACCOUNT\s+AGE\s+ATTEMPTS\s+NEXT TRY\s+RCPTS\s+LAST REPLY/);
    expect(listing).toMatch(/office\s+\d+s\s+1\s+in \d+m\s+1\s+432 4\.3\.2 STOREDRV\.ClientSubmit; sender thread limit exceeded/);
    const id = /^([0-9A-Z]+) /m.exec(listing.split('\n')[1])![1];
    const shown = (await queueCommand(dataDir, ['show', id], false)).output;
    expect(shown).toContain('"attempts": 1');
    // First what a person recognises (parsed with mailparser), then the record and the header.
    expect(shown).toMatch(/^Subject: {5}Scan 2026-11-23 10:05\nFrom: {8}"Scanner" <scanner@contoso\.test>\n[\s\S]*Attachments: \n {2}scan0001\.pdf {2}application\/pdf {2}4096 bytes\n/);
    expect((await queueCommand(dataDir, ['retry', id], false)).code).toBe(0);
    await until(() => provider.received.length === 1); // the daemon noticed the retry
    await until(async () => (await queueCommand(dataDir, ['list'], false)).output === 'Queue is empty.\n');
    expect((await queueCommand(dataDir, ['delete', id], false)).code).toBe(1);
  });
});
