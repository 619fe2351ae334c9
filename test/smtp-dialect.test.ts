import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, execFileAsync, metric, startProvider, startRelay, stopStarted, until, type RelayOptions } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import { downstreamView } from './header-shapes.js';

const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 0.5, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05 } };

async function session(port: number): Promise<RawSmtp> {
  const { client } = await RawSmtp.connect(port);
  await client.command('EHLO printer-2f.lan');
  expect(await client.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
  return client;
}

async function transaction(port: number, mailFrom: string, data: string): Promise<string> {
  const client = await session(port);
  try {
    expect(await client.command(`MAIL FROM:${mailFrom}`)).toMatch(/^250/);
    expect(await client.command('RCPT TO:<alice@example.com>')).toMatch(/^250/);
    expect(await client.command('DATA')).toMatch(/^354/);
    return await client.write(`${data}\r\n.\r\n`);
  } finally {
    client.close();
  }
}

function field(raw: Buffer, name: string): string[] {
  return downstreamView(raw)
    .fields.filter((entry) => entry.name === name)
    .map((entry) => entry.value.trim());
}

describe('speaking SMTP the way devices and servers expect', () => {
  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  async function setUp(options: RelayOptions = {}) {
    const provider = await startProvider();
    const relay = await startRelay(provider, options);
    return { provider, relay };
  }

  it('adds a Received field that traces the message to the device (full, minimal, off)', async () => {
    const { provider, relay } = await setUp();
    await transaction(relay.port, '<scan@printers.local>', 'Subject: traced\r\n\r\nx');
    const [received] = field(provider.received[0].raw, 'received');
    expect(received).toMatch(/^from printer-2f\.lan \(\[127\.0\.0\.1\]\)\s+\(Authenticated sender: printer-2f\)\s+by relay\.test \(smtp-oauth-relay\) with ESMTPA id [0-9A-Z]+; \w{3}, \d{2} \w{3} \d{4}/);
    expect(downstreamView(provider.received[0].raw).fields[0].name).toBe('received'); // on top
    await stopStarted();

    for (const [mode, expected] of [
      ['minimal', /^by relay\.test \(smtp-oauth-relay\) with ESMTPA id [0-9A-Z]+; /],
      ['off', undefined],
    ] as const) {
      const next = await setUp({ top: { smtp: { host: '127.0.0.1', port: 0, hostname: 'relay.test', receivedHeader: mode } } });
      await transaction(next.relay.port, '<scan@printers.local>', 'Subject: traced\r\n\r\nx');
      const values = field(next.provider.received[0].raw, 'received');
      if (expected) {
        expect(values[0]).toMatch(expected);
        expect(values[0]).not.toContain('127.0.0.1');
        expect(values[0]).not.toContain('printer-2f');
      } else expect(values).toEqual([]);
      await stopStarted();
    }
  });

  it('takes MAIL FROM without angle brackets, as Postfix does', async () => {
    const { provider, relay } = await setUp();
    const client = await session(relay.port);
    expect(await client.command('MAIL FROM: printer@printers.local')).toMatch(/^250/);
    expect(await client.command('RCPT TO: alice@example.com')).toMatch(/^250/);
    await client.command('DATA');
    expect(await client.write('Subject: old firmware\r\n\r\nx\r\n.\r\n')).toMatch(/^250 /);
    expect(provider.received[0].envelope.to).toEqual(['alice@example.com']);
    expect(field(provider.received[0].raw, 'reply-to')).toEqual(['printer@printers.local']);
  });

  it('refuses parameters it does not implement (555) and non-ASCII addresses without SMTPUTF8 (553)', async () => {
    const { relay } = await setUp();
    const client = await session(relay.port);
    expect(await client.command('MAIL FROM:<a@printers.local> XFOO=1')).toMatch(/^555 5\.5\.4 /);
    expect(await client.command('MAIL FROM:<a@printers.local> SMTPUTF8')).toMatch(/^555 5\.5\.4 /);
    expect(await client.command('MAIL FROM:<jörg@printers.local>')).toMatch(/^553 5\.6\.7 /);
    expect(await client.command('MAIL FROM:<a@printers.local> RET=HDRS ENVID=scan42 AUTH=<>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<b@example.com> NOTIFY=FAILURE ORCPT=rfc822;b@example.com')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<c@example.com> XBAR=2')).toMatch(/^555 5\.5\.4 /);
    expect(await client.command('RCPT TO:<d@münchen.example>')).toMatch(/^553 5\.6\.7 /);
    // A punycode domain is passed on as it was written (smtp-server would turn it into Unicode).
    expect(await client.command('RCPT TO:<e@xn--mnchen-3ya.example>')).toMatch(/^250/);
  });

  it('refuses an authorization identity other than the user (RFC 4616)', async () => {
    const { relay } = await setUp();
    const { client } = await RawSmtp.connect(relay.port);
    await client.command('EHLO x');
    const proxy = Buffer.from(`ceo@contoso.test\0${DEVICE.username}\0${DEVICE.password}`).toString('base64');
    expect(await client.command(`AUTH PLAIN ${proxy}`)).toMatch(/^535 5\.7\.8 /);
    const same = Buffer.from(`${DEVICE.username}\0${DEVICE.username}\0${DEVICE.password}`).toString('base64');
    expect(await client.command(`AUTH PLAIN ${same}`)).toMatch(/^235/);
  });

  it('folds header lines over 998 octets, and refuses one that cannot be folded', async () => {
    const { provider, relay } = await setUp();
    const words = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
    expect(await transaction(relay.port, '<scan@printers.local>', `Subject: ${words}\r\n\r\nx`)).toMatch(/^250 /);
    const raw = provider.received[0].raw.toString('latin1');
    const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
    expect(Math.max(...head.split('\r\n').map((line) => line.length))).toBeLessThanOrEqual(998);
    expect(field(provider.received[0].raw, 'subject')[0].replace(/\s+/g, ' ')).toBe(words);
    expect(await transaction(relay.port, '<scan@printers.local>', `Subject: ${'x'.repeat(3009)}\r\n\r\nx`)).toMatch(/^554 5\.6\.0 /);
  });

  it('never reports on a bounce, and never gives it a MAILER-DAEMON Reply-To', async () => {
    const { provider, relay } = await setUp({ top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test' } } });
    provider.unknownRecipients.add('gone@example.com');
    const client = await session(relay.port);
    await client.command('MAIL FROM:<>');
    await client.command('RCPT TO:<gone@example.com>');
    await client.command('RCPT TO:<alice@example.com>');
    await client.command('DATA');
    expect(await client.write('From: MAILER-DAEMON@printers.local\r\nSubject: Undelivered\r\n\r\nbounce\r\n.\r\n')).toMatch(/^250 /);
    await until(() => provider.received.length === 1);
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'failed' })) === 1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(provider.received).toHaveLength(1); // no report, not even to the postmaster
    expect(field(provider.received[0].raw, 'reply-to')).toEqual([]);
    expect(provider.received[0].envelope.from).toBe(MAILBOX);
  });

  it('logs and counts a SIZE refused at MAIL FROM as too_large (curl declares SIZE)', async () => {
    const { relay } = await setUp({ top: { smtp: { host: '127.0.0.1', port: 0, hostname: 'relay.test', maxMessageSize: '1KB' } } });
    const file = path.join(os.tmpdir(), `relay-big-${process.pid}.eml`);
    await writeFile(file, `Subject: big\r\n\r\n${'x'.repeat(5000)}\r\n`);
    const curl = await execFileAsync('curl', ['-sS', `smtp://127.0.0.1:${relay.port}`, '--user', `${DEVICE.username}:${DEVICE.password}`, '--mail-from', 'scan@printers.local', '--mail-rcpt', 'alice@example.com', '-T', file]).then(
      () => 'sent',
      (error: { stderr: string }) => error.stderr,
    );
    expect(curl).toMatch(/552/);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'too_large' })).toBe(1);
    expect(relay.logs.some((line) => line.includes('declared SIZE is over smtp.maxMessageSize'))).toBe(true);
  });
});
