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

  it('offers SMTPUTF8: UTF-8 addresses with it, raw UTF-8 headers with or without it, delivered intact', async () => {
    const { provider, relay } = await setUp();
    const ehlo = await (await RawSmtp.connect(relay.port)).client.command('EHLO x');
    expect(ehlo).toMatch(/^250[- ]SMTPUTF8$/m);
    const client = await session(relay.port);
    expect(await client.command('MAIL FROM:<jörg@drucker.example> SMTPUTF8')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<grüße@example.com>')).toMatch(/^250/);
    await client.command('DATA');
    const subject = 'Scan vom Drucker – Größe 3 MB ✓';
    expect(await client.write(Buffer.from(`From: Jörg <jörg@drucker.example>\r\nSubject: ${subject}\r\n\r\nx\r\n.\r\n`))).toMatch(/^250 /);
    expect(provider.received[0].envelope.to).toEqual(['grüße@example.com']);
    expect(provider.received[0].raw.toString('utf8')).toContain(`Subject: ${subject}\r\n`);
    // A client that does not ask for SMTPUTF8 (many scripts) may still send raw UTF-8 headers.
    const plain = await transaction(relay.port, '<cron@printers.local>', `Subject: ${subject}\r\n\r\nx`);
    expect(plain).toMatch(/^250 /);
    expect(provider.received[1].raw.toString('utf8')).toContain(`Subject: ${subject}\r\n`);
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
    expect(await client.command('MAIL FROM:<a@printers.local> REQUIRETLS')).toMatch(/^5\d\d /);
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

  it('folds header lines over 998 octets: at white space, else (as Postfix does) with a folding space at the limit', async () => {
    const { provider, relay } = await setUp();
    const words = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
    expect(await transaction(relay.port, '<scan@printers.local>', `Subject: ${words}\r\n\r\nx`)).toMatch(/^250 /);
    const raw = provider.received[0].raw.toString('latin1');
    const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
    expect(Math.max(...head.split('\r\n').map((line) => line.length))).toBeLessThanOrEqual(998);
    expect(field(provider.received[0].raw, 'subject')[0].replace(/\s+/g, ' ')).toBe(words);
    // One word of 3009 octets, and a UTF-8 one whose characters straddle the limit: folded, not refused, no character cut.
    const word = 'x'.repeat(3009);
    const utf8 = 'é'.repeat(700);
    expect(await transaction(relay.port, '<scan@printers.local>', `Subject: ${word}\r\nX-Label: ${utf8}\r\n\r\nx`)).toMatch(/^250 /);
    const second = provider.received[1].raw;
    const secondHead = second.subarray(0, second.indexOf('\r\n\r\n')).toString('latin1');
    expect(Math.max(...secondHead.split('\r\n').map((line) => line.length))).toBeLessThanOrEqual(998);
    const unfolded = (name: string) => /^[^:]+:(.*(?:\r\n[ \t].*)*)/m.exec(secondHead.split(/\r\n(?=[^ \t])/).find((line) => line.toLowerCase().startsWith(`${name}:`))!)![1].replace(/\s+/g, '');
    expect(unfolded('subject')).toBe(word);
    expect(Buffer.from(unfolded('x-label'), 'latin1').toString('utf8')).toBe(utf8);
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

describe('delivery status notifications as the device asked (RFC 3461)', () => {
  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  async function send(port: number, mail: string, rcpts: string[], subject: string): Promise<void> {
    const client = await session(port);
    try {
      expect(await client.command(`MAIL FROM:${mail}`)).toMatch(/^250/);
      for (const rcpt of rcpts) expect(await client.command(`RCPT TO:${rcpt}`)).toMatch(/^250/);
      await client.command('DATA');
      expect(await client.write(`From: scan@printers.local\r\nSubject: ${subject}\r\n\r\nx\r\n.\r\n`)).toMatch(/^250/);
    } finally {
      client.close();
    }
  }

  it('reports failures only to a sender that asked, with its ENVID and ORCPT; the postmaster always hears', async () => {
    const provider = await startProvider();
    provider.unknownRecipients.add('gone@example.com');
    provider.unknownRecipients.add('left@example.com');
    const relay = await startRelay(provider, { top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test' } } });
    await send(relay.port, '<scan@printers.local> ENVID=job-17 RET=HDRS', ['<gone@example.com> NOTIFY=FAILURE ORCPT=rfc822;Gone@Example.com'], 'asked');
    await until(() => provider.received.length === 2);
    const toSender = provider.received.find((received) => received.envelope.to[0] === 'scan@printers.local')!;
    expect(toSender.raw.toString()).toContain('Original-Envelope-Id: job-17');
    expect(toSender.raw.toString()).toContain('Original-Recipient: rfc822; Gone@Example.com');
    for (const notify of ['NEVER', 'SUCCESS']) {
      const before = provider.received.length;
      await send(relay.port, '<scan@printers.local>', [`<left@example.com> NOTIFY=${notify}`], `not asked ${notify}`);
      await until(() => provider.received.length === before + 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(provider.received.slice(before).map((received) => received.envelope.to)).toEqual([['it@contoso.test']]);
    }
  });

  it('sends one delay report to a sender that asked for it, then delivers', async () => {
    const provider = await startProvider();
    provider.refuseConnections = true;
    const relay = await startRelay(provider, { top: { ...QUEUE, bounces: { delayWarning: 0.3 } } });
    await send(relay.port, '<scan@printers.local>', ['<alice@example.com> NOTIFY=DELAY,FAILURE'], 'slow');
    await new Promise((resolve) => setTimeout(resolve, 1200));
    provider.refuseConnections = false;
    await until(() => provider.received.length === 2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const delay = provider.received.find((received) => received.envelope.to[0] === 'scan@printers.local')!;
    const message = provider.received.find((received) => received !== delay)!;
    expect(delay.raw.toString()).toContain('Action: delayed');
    expect(delay.raw.toString()).toMatch(/Status: 4\.\d+\.\d+/);
    expect(delay.raw.toString()).toContain('Will-Retry-Until: ');
    expect(message.envelope.to).toEqual(['alice@example.com']);
    expect(provider.received).toHaveLength(2);
  });

  it('passes RET, ENVID and a common NOTIFY to an upstream that offers DSN', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { top: QUEUE });
    await send(relay.port, '<scan@printers.local> RET=HDRS ENVID=job-18', ['<a@example.com> NOTIFY=NEVER', '<b@example.com> NOTIFY=NEVER'], 'passed on');
    await until(() => provider.received.length === 1);
    expect(provider.received[0].dsn).toEqual({ ret: 'HDRS', envid: 'job-18', notify: [['NEVER'], ['NEVER']] });
  });
});
