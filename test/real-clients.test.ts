import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEVICE, MAILBOX, execFileAsync, headerValues, metric, splitMessage, startProvider, startRelay, until, type TestRelay } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

// Clients no one here wrote: swaks, curl and Python's smtplib, as devices would use the relay.
const BODY = ['Scan of 3 pages attached.', '.a line that starts with a dot', '', 'Ünïcödé stays as it is', '-- ', 'MFP-2F'].join('\r\n') + '\r\n';
const ORIGINAL = ['From: "Scanner 2F" <mfp-2f@printers.local>', 'To: alice@example.com', 'Subject: Scan 0042', 'MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 8bit', '', ''].join('\r\n') + BODY;

describe('devices using real SMTP clients', () => {
  let provider: FakeProvider;
  let relay: TestRelay;
  let messageFile: string;
  /** swaks ends DATA with CRLF.CRLF of its own, adding a line break even after one the file has. */
  let swaksFile: string;

  beforeAll(async () => {
    provider = await startProvider();
    relay = await startRelay(provider);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-msg-'));
    messageFile = path.join(dir, 'scan.eml');
    await writeFile(messageFile, ORIGINAL);
    swaksFile = path.join(dir, 'scan-for-swaks.eml');
    await writeFile(swaksFile, ORIGINAL.replace(/\r\n$/, ''));
  });
  afterAll(async () => {
    await relay.stop();
    await provider.stop();
  });

  function expectRelayedScan(index: number, recipients: string[]) {
    const received = provider.received[index];
    expect(received.envelope).toEqual({ from: MAILBOX, to: recipients });
    const { header, body } = splitMessage(received.raw);
    expect(headerValues(header, 'From')).toEqual([`Scanner 2F <${MAILBOX}>`]);
    expect(headerValues(header, 'Reply-To')).toEqual(['Scanner 2F <mfp-2f@printers.local>']);
    expect(headerValues(header, 'Subject')).toEqual(['Scan 0042']);
    expect(headerValues(header, 'Date')).toHaveLength(1);
    expect(headerValues(header, 'Message-ID')[0]).toMatch(/^<.+@contoso\.test>$/);
    expect(body.equals(Buffer.from(BODY))).toBe(true);
  }

  for (const mechanism of ['PLAIN', 'LOGIN']) {
    it(`relays swaks AUTH ${mechanism} mail as the mailbox, original sender in Reply-To`, async () => {
      const before = provider.received.length;
      const { stdout } = await execFileAsync('swaks', [
        '--server', `127.0.0.1:${relay.port}`, '--auth', mechanism, '--auth-user', DEVICE.username, '--auth-password', DEVICE.password,
        '--from', 'mfp-2f@printers.local', '--to', 'alice@example.com', '--data', swaksFile,
      ]);
      expect(stdout).toMatch(/<- {2}250 2\.6\.0 Ok: relayed as [0-9A-Z]+/);
      expectRelayedScan(before, ['alice@example.com']);
    });
  }

  it('relays curl smtp:// uploads to several recipients', async () => {
    const before = provider.received.length;
    await execFileAsync('curl', [
      '--silent', '--show-error', '--fail', `smtp://127.0.0.1:${relay.port}`, '--user', `${DEVICE.username}:${DEVICE.password}`, '--login-options', 'AUTH=PLAIN',
      '--mail-from', 'mfp-2f@printers.local', '--mail-rcpt', 'alice@example.com', '--mail-rcpt', 'bob@example.com', '--upload-file', messageFile,
    ]);
    expectRelayedScan(before, ['alice@example.com', 'bob@example.com']);
  });

  it('relays Python smtplib mail sent with login() and sendmail()', async () => {
    const before = provider.received.length;
    const script = [
      'import smtplib, sys',
      's = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)',
      's.login(sys.argv[2], sys.argv[3])',
      's.sendmail("mfp-2f@printers.local", ["alice@example.com"], open(sys.argv[4], "rb").read())',
      's.quit()',
    ].join('\n');
    await execFileAsync('python3', ['-c', script, String(relay.port), DEVICE.username, DEVICE.password, messageFile]);
    expectRelayedScan(before, ['alice@example.com']);
  });

  it('counts every message and no failure in /metrics', async () => {
    const relayed = provider.received.length;
    expect(await metric(relay.httpPort, 'smtp_relay_messages_received_total', { account: 'office' })).toBe(relayed);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_relayed_total', { account: 'office' })).toBe(relayed);
    expect(await metric(relay.httpPort, 'smtp_relay_message_size_bytes_count', { account: 'office' })).toBe(relayed);
    expect(await metric(relay.httpPort, 'smtp_relay_upstream_send_duration_seconds_count', { account: 'office' })).toBe(relayed);
    expect(await metric(relay.httpPort, 'smtp_relay_token_refreshes_total', { account: 'office', result: 'success' })).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('refuses a wrong password with 535 5.7.8 and counts it', async () => {
    const failures = await metric(relay.httpPort, 'smtp_relay_smtp_auth_failures_total');
    const result = await execFileAsync('swaks', [
      '--server', `127.0.0.1:${relay.port}`, '--auth', 'PLAIN', '--auth-user', DEVICE.username, '--auth-password', 'wrong',
      '--from', 'a@b.c', '--to', 'alice@example.com', '--silent', '2',
    ]).catch((error: { stdout: string; stderr: string }) => error);
    expect(`${result.stdout}${result.stderr}`).toContain('535 5.7.8');
    expect(await metric(relay.httpPort, 'smtp_relay_smtp_auth_failures_total')).toBe(failures + 1);
  });

  it('answers MAIL before AUTH with 530 5.7.0', async () => {
    const result = await execFileAsync('swaks', ['--server', `127.0.0.1:${relay.port}`, '--from', 'a@b.c', '--to', 'alice@example.com', '--silent', '2']).catch(
      (error: { stdout: string; stderr: string }) => error,
    );
    expect(`${result.stdout}${result.stderr}`).toContain('530 5.7.0');
  });

  it('carries what a Python smtplib device declared upstream: SMTPUTF8 and BODY=8BITMIME, and its UTF-8 address intact in Reply-To (direct and queue)', async () => {
    const queued = await startRelay(provider, { top: { delivery: 'queue' } });
    const script = [
      'import smtplib, sys',
      's = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)',
      `s.login("${DEVICE.username}", "${DEVICE.password}")`,
      'msg = "From: Jörg Müller <jörg@exämple.com>\\r\\nTo: alice@example.com\\r\\nSubject: Grüße aus dem Büro\\r\\n\\r\\nSchöne Grüße\\r\\n".encode()',
      's.sendmail("jörg@exämple.com", ["alice@example.com"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])',
      'ascii = b"From: mfp@printers.local\\r\\nTo: alice@example.com\\r\\nSubject: 8bit\\r\\nContent-Type: text/plain; charset=utf-8\\r\\nContent-Transfer-Encoding: 8bit\\r\\n\\r\\n\\xc3\\x9cbersicht\\r\\n"',
      's.sendmail("mfp@printers.local", ["alice@example.com"], ascii, mail_options=["BODY=8BITMIME"])',
      's.quit()',
    ].join('\n');
    for (const target of [relay, queued]) {
      const before = provider.received.length;
      await execFileAsync('python3', ['-c', script, String(target.port)]);
      await until(() => provider.received.length === before + 2);
      const [utf8, eightBit] = provider.received.slice(before);
      const header = utf8.raw.subarray(0, utf8.raw.indexOf('\r\n\r\n')).toString('utf8');
      expect(header).toContain('Reply-To: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jörg@exämple.com>');
      expect(header).toContain('Subject: Grüße aus dem Büro');
      expect(utf8.declared).toEqual({ body: '8bitmime', smtpUtf8: true });
      expect(eightBit.declared).toEqual({ body: '8bitmime', smtpUtf8: false });
      expect(splitMessage(eightBit.raw).body.toString('utf8')).toBe('Übersicht\r\n');
    }
  });
});
