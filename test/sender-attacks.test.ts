import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, accountFor, startProvider, startRelay, type TestRelay } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { SenderRewriter } from '../src/rewrite/index.js';
import { SHARED, downstreamView, randomHeaderMessage, seeded, senderProblems } from './header-shapes.js';


/** Sends exactly these DATA bytes (dot-stuffed here, nothing else changed). */
export async function sendBytes(port: number, data: Buffer | string, from = 'mfp@printers.local'): Promise<string> {
  const { client } = await RawSmtp.connect(port);
  try {
    await client.command('EHLO device.local');
    await client.login(DEVICE.username, DEVICE.password);
    await client.command(`MAIL FROM:<${from}>`);
    await client.command('RCPT TO:<alice@example.com>');
    await client.command('DATA');
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
    const stuffed = Buffer.from(bytes.toString('latin1').replace(/(^|\r\n)\./g, '$1..'), 'latin1');
    const tail = stuffed.subarray(-2).equals(Buffer.from('\r\n')) ? '.\r\n' : '\r\n.\r\n';
    return await client.write(Buffer.concat([stuffed, Buffer.from(tail)]));
  } finally {
    client.close();
  }
}

describe('the sender rewrite cannot be dodged', () => {
  let provider: FakeProvider;
  let relay: TestRelay;

  beforeAll(async () => {
    provider = await startProvider();
    relay = await startRelay(provider, { account: { ...accountFor(provider), sendAs: [SHARED] } });
  });
  afterAll(async () => {
    RawSmtp.closeAll();
    await relay.stop();
    await provider.stop();
  });

  async function relayed(data: Buffer | string) {
    const before = provider.received.length;
    expect(await sendBytes(relay.port, data)).toMatch(/^250 /);
    expect(provider.received).toHaveLength(before + 1);
    const received = provider.received[before];
    return { ...downstreamView(received.raw), raw: received.raw, envelope: received.envelope };
  }

  function froms(view: { fields: { name: string; value: string }[] }): string[] {
    return view.fields.filter((field) => field.name === 'from').map((field) => field.value.trim());
  }

  const forged = [
    ['white space before the colon', 'From : CEO <ceo@contoso.test>\r\nSubject: x\r\n\r\nbody\r\n'],
    ['a tab before the colon', 'From\t: ceo@contoso.test\r\nSubject: x\r\n\r\nbody\r\n'],
    ['lower case', 'from: ceo@contoso.test\r\nSubject: x\r\n\r\nbody\r\n'],
    ['an mbox separator first', 'From ceo@contoso.test Mon Jan  1 00:00:00 2024\r\nFrom: ceo@contoso.test\r\nSubject: x\r\n\r\nbody\r\n'],
    ['an HTTP request line first', 'POST / HTTP/1.1\r\nFrom: ceo@contoso.test\r\n\r\nbody\r\n'],
    ['a folded From', 'From:\r\n ceo@contoso.test\r\nSubject: x\r\n\r\nbody\r\n'],
    ['a continuation line first', ' From: ceo@contoso.test\r\nFrom: ceo@contoso.test\r\n\r\nbody\r\n'],
    ['two From fields, the allowed one last', `From: ceo@contoso.test\r\nFrom: ${SHARED}\r\n\r\nbody\r\n`],
    ['the allowed one first, then another', `From: ${SHARED}\r\nFrom : ceo@contoso.test\r\n\r\nbody\r\n`],
    ['an allowed address followed by another', `From: ${SHARED}, ceo@contoso.test\r\n\r\nbody\r\n`],
    ['an allowed address as display name', `From: ${SHARED} <ceo@contoso.test>\r\n\r\nbody\r\n`],
    ['an allowed address in a comment', `From: ceo@contoso.test (${SHARED})\r\n\r\nbody\r\n`],
    ['a group', `From: Staff: ${SHARED}, ceo@contoso.test;\r\n\r\nbody\r\n`],
    ['an encoded word hiding an address', `From: =?utf-8?q?ceo@contoso.test?= <${SHARED}>x\r\n\r\nbody\r\n`],
    ['a From after a non-field line', `Subject: x\r\nnot a header line\r\nFrom: ceo@contoso.test\r\n\r\nbody\r\n`],
  ];

  // Outlook shows the display name: an address in it that is not the one sent as is spoofing.
  const spoofedNames = [
    ['an address after the angle brackets', `From: <${SHARED}> ceo@bank.example\r\n\r\nbody\r\n`],
    ['a quoted address as the name', 'From: "ceo@bank.example" <mfp@printers.local>\r\n\r\nbody\r\n'],
    ['a fullwidth at sign', 'From: "ceo\uFF20bank.example" <mfp@printers.local>\r\n\r\nbody\r\n'],
    ['an encoded address', 'From: =?utf-8?q?ceo=40bank=2Eexample?= <mfp@printers.local>\r\n\r\nbody\r\n'],
  ];
  for (const [name, data] of spoofedNames) {
    it(`keeps no display name that names another address: ${name}`, async () => {
      const view = await relayed(Buffer.from(data, 'utf8'));
      const [from] = froms(view);
      expect(froms(view)).toHaveLength(1);
      expect(from).toBe(MAILBOX);
    });
  }

  it('passes a kept sendAs From in one canonical form (a folded quoted name, a name with a colon)', async () => {
    const view = await relayed(`From: "Shared\r\n Scanner : Floor 2" <${SHARED}>\r\nSubject: x\r\n\r\nbody\r\n`);
    expect(froms(view)).toEqual([`"Shared Scanner : Floor 2" <${SHARED}>`]);
    expect(view.raw.toString('latin1')).toContain(`\r\nFrom: "Shared Scanner : Floor 2" <${SHARED}>\r\n`); // unfolded, as the relay decided it
    expect(view.envelope.from).toBe(SHARED);
  });

  for (const [name, data] of forged) {
    it(`leaves exactly one From, and an allowed one, with ${name}`, async () => {
      const view = await relayed(data);
      const [from] = froms(view);
      expect(froms(view)).toHaveLength(1);
      expect(from.endsWith(`<${MAILBOX}>`) || from === MAILBOX).toBe(true);
      expect(view.stray).toEqual([]);
      expect(view.envelope.from).toBe(MAILBOX);
    });
  }

  it('keeps a From that is exactly one allowed mailbox, whatever its case', async () => {
    const view = await relayed(`From: Shared Scans <Shared-Scans@Contoso.test>\r\nSubject: kept\r\n\r\nbody\r\n`);
    expect(froms(view)).toEqual(['Shared Scans <Shared-Scans@Contoso.test>']);
    expect(view.envelope.from.toLowerCase()).toBe(SHARED);
  });

  it('never passes on several Sender or Reply-To fields', async () => {
    const view = await relayed('From: a@printers.local\r\nSender : ceo@contoso.test\r\nReply-To: x@evil.example\r\nReply-To : y@evil.example\r\n\r\nbody\r\n');
    expect(view.fields.filter((field) => field.name === 'sender')).toEqual([]);
    expect(view.fields.filter((field) => field.name === 'reply-to').map((field) => field.value.trim())).toEqual(['a@printers.local']);
  });

  it('does not put an invalid From address in Reply-To: the envelope sender stands in', async () => {
    const view = await relayed('From: Scanner <scan@>\r\nSubject: x\r\n\r\nbody\r\n');
    expect(view.fields.filter((field) => field.name === 'reply-to').map((field) => field.value.trim())).toEqual(['mfp@printers.local']);
  });

  it('keeps a message without a header block byte for byte, fields added above it', async () => {
    const body = 'just text, no header\r\nsecond line\r\n';
    const view = await relayed(body);
    expect(view.body.toString('latin1')).toBe(body);
    expect(froms(view)).toEqual([MAILBOX]);
    const blankFirst = await relayed(`\r\n${body}`);
    expect(blankFirst.body.toString('latin1')).toBe(body);
  });

  it('puts added fields into the header, never after body lines, when the blank line is missing', async () => {
    const view = await relayed('Subject: no blank line\r\nthis is body text\r\n');
    expect(view.stray).toEqual([]);
    expect(view.fields.map((field) => field.name)).toEqual(['received', 'from', 'reply-to', 'subject', 'date', 'message-id']);
    expect(view.body.toString('latin1')).toBe('this is body text\r\n');
  });

  it('gives an all-header message an empty line and its Date and Message-ID in the header', async () => {
    const view = await relayed('Subject: only a header\r\n');
    expect(view.fields.map((field) => field.name)).toEqual(['received', 'from', 'reply-to', 'subject', 'date', 'message-id']);
    expect(view.body.toString('latin1')).toBe('');
  });

  it('reads a large header sent in tiny writes in linear time', async () => {
    const header = Array.from({ length: 2300 }, (_, i) => `X-Filler-${i}: ${'v'.repeat(80)}\r\n`).join('') + 'Subject: big\r\n\r\nbody\r\n';
    const rewriter = new SenderRewriter({ mailbox: MAILBOX, sendAs: [], envelopeFrom: 'mfp@printers.local' }, { maxHeaderBytes: 256 * 1024, maxHeaderLines: 5000 });
    const data = Buffer.from(header);
    const out: Buffer[] = [];
    rewriter.on('data', (chunk: Buffer) => out.push(chunk));
    const started = performance.now();
    for (let at = 0; at < data.length; at += 16) rewriter.write(data.subarray(at, at + 16));
    rewriter.end();
    await new Promise((resolve) => rewriter.on('end', resolve));
    // Re-joining the buffer on every chunk made this quadratic: seconds of CPU for 220 KB in 16-byte writes.
    expect(performance.now() - started).toBeLessThan(1000);
    expect(Buffer.concat(out).toString()).toContain('X-Filler-2299');
  });
});

describe('header-shape fuzzing', () => {
  it('lets exactly one allowed From leave, whatever the shape of 3000 random headers', async () => {
    const random = seeded(20261123);
    for (let round = 0; round < 3000; round++) {
      const input = randomHeaderMessage(random);
      const rewriter = new SenderRewriter({ mailbox: MAILBOX, sendAs: [SHARED], envelopeFrom: 'mfp@printers.local' }, { maxHeaderBytes: 65536, maxHeaderLines: 100 });
      const out: Buffer[] = [];
      rewriter.on('data', (chunk: Buffer) => out.push(chunk));
      const done = new Promise((resolve, reject) => rewriter.on('end', resolve).on('error', reject));
      rewriter.end(input);
      await done;
      expect(senderProblems(Buffer.concat(out), [MAILBOX, SHARED]), JSON.stringify(input.toString('latin1'))).toEqual([]);
    }
  });
});
