import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAILBOX, accountFor, headerValues, message, sendRaw, splitMessage, startProvider, startRelay, type TestRelay } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

// What the upstream sees of the headers devices really send.
describe('sender rewrite', () => {
  let provider: FakeProvider;
  let relay: TestRelay;

  beforeAll(async () => {
    provider = await startProvider();
    relay = await startRelay(provider, { account: { ...accountFor(provider), sendAs: ['Shared-Scans@contoso.test'] } });
  });
  afterAll(async () => {
    await relay.stop();
    await provider.stop();
  });

  async function relayed(raw: string | Buffer, from = 'device@printers.local') {
    const before = provider.received.length;
    await sendRaw(relay.port, { from, to: ['alice@example.com'], raw });
    const received = provider.received[before];
    return { ...splitMessage(received.raw), envelope: received.envelope };
  }

  it('keeps a folded display name and puts the original address in Reply-To', async () => {
    const { header } = await relayed(message(['From: "Finance, Floor 2"', ' <mfp@printers.local>', 'Subject: folded'], 'x'));
    expect(headerValues(header, 'From')).toEqual([`"Finance, Floor 2" <${MAILBOX}>`]);
    expect(headerValues(header, 'Reply-To')).toEqual(['"Finance, Floor 2" <mfp@printers.local>']);
  });

  it('decodes an RFC 2047 display name and writes it back encoded', async () => {
    const { header } = await relayed(message(['From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@printers.local>', 'Subject: encoded'], 'x'));
    const [from] = headerValues(header, 'From');
    expect(from).toMatch(/^=\?UTF-8\?Q\?.+\?= <scanner@contoso\.test>$/);
    expect(from).toContain('J=C3=B6rg');
    expect(header).not.toMatch(/[^\x00-\x7f]/);
  });

  it('handles raw 8-bit UTF-8 and Latin-1 display names', async () => {
    const utf8 = await relayed(Buffer.from(message(['From: Jörg Müller <joerg@printers.local>', 'Subject: utf8'], 'x'), 'utf8'));
    expect(headerValues(utf8.header, 'From')[0]).toContain('J=C3=B6rg');
    const latin1 = await relayed(Buffer.from(message(['From: Jörg <joerg@printers.local>', 'Subject: latin1'], 'x'), 'latin1'));
    expect(headerValues(latin1.header, 'From')[0]).toBe(`=?UTF-8?Q?J=C3=B6rg?= <${MAILBOX}>`);
  });

  it('replaces several From headers with one', async () => {
    const { header } = await relayed(message(['From: First <first@printers.local>', 'From: Second <second@printers.local>', 'Subject: two'], 'x'));
    expect(headerValues(header, 'From')).toEqual([`First <${MAILBOX}>`]);
    expect(headerValues(header, 'Reply-To')).toEqual(['First <first@printers.local>']);
  });

  it('adds From, Date and Message-ID to a message without them, Reply-To from MAIL FROM', async () => {
    const { header, envelope } = await relayed(message(['Subject: bare'], 'body'), 'nas@printers.local');
    expect(envelope.from).toBe(MAILBOX);
    expect(headerValues(header, 'From')).toEqual([MAILBOX]);
    expect(headerValues(header, 'Reply-To')).toEqual(['nas@printers.local']);
    expect(headerValues(header, 'Date')[0]).toMatch(/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/);
    expect(headerValues(header, 'Message-ID')[0]).toMatch(/^<[^@\s]+@contoso\.test>$/);
  });

  it('keeps an existing Reply-To, Date and Message-ID, and drops Sender', async () => {
    const { header } = await relayed(
      message(['From: mfp@printers.local', 'Sender: mfp@printers.local', 'Reply-To: helpdesk@contoso.test', 'Date: Mon, 2 Nov 2026 10:00:00 +0100', 'Message-ID: <abc@mfp>'], 'x'),
    );
    expect(headerValues(header, 'Reply-To')).toEqual(['helpdesk@contoso.test']);
    expect(headerValues(header, 'Sender')).toEqual([]);
    expect(headerValues(header, 'Date')).toEqual(['Mon, 2 Nov 2026 10:00:00 +0100']);
    expect(headerValues(header, 'Message-ID')).toEqual(['<abc@mfp>']);
  });

  it('adds no Reply-To when the From already is the mailbox (any case)', async () => {
    const { header } = await relayed(message(['From: Scanner <SCANNER@contoso.test>'], 'x'));
    expect(headerValues(header, 'Reply-To')).toEqual([]);
    expect(headerValues(header, 'From')).toEqual([`Scanner <${MAILBOX}>`]);
  });

  it('keeps a sendAs address as it is, on the envelope too', async () => {
    const { header, envelope } = await relayed(message(['From: Scans <shared-scans@contoso.test>', 'Subject: shared'], 'x'), 'shared-scans@contoso.test');
    expect(headerValues(header, 'From')).toEqual(['Scans <shared-scans@contoso.test>']);
    expect(headerValues(header, 'Reply-To')).toEqual([]);
    expect(envelope.from).toBe('shared-scans@contoso.test');
  });

  it('passes the body through byte for byte, including a large one split across many chunks', async () => {
    const body = Buffer.from(Array.from({ length: 40_000 }, (_, i) => `line ${i} ${'x'.repeat(i % 70)}`).join('\r\n') + '\r\n');
    const raw = Buffer.concat([Buffer.from('From: mfp@printers.local\r\nSubject: big\r\n\r\n'), body]);
    const received = await relayed(raw);
    expect(received.body.equals(body)).toBe(true);
  });

  it('accepts a header-only message and one with bare LF line endings', async () => {
    const headerOnly = await relayed('From: mfp@printers.local\r\nSubject: no body\r\n');
    expect(headerValues(headerOnly.header, 'Subject')).toEqual(['no body']);
    const bareLf = await relayed('From: Old NAS <nas@printers.local>\nSubject: lf\n\nbody line\n');
    expect(headerValues(bareLf.header, 'From')).toEqual([`Old NAS <${MAILBOX}>`]);
    expect(bareLf.body.toString()).toBe('body line\r\n');
  });
});
