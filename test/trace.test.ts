import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, open, readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEVICE, cli, execFileAsync, message, sendRaw, sendRawExpectingError, startProvider, startRelay, stopStarted, until, type TestRelay } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import type { TraceSearchResult } from '../src/trace/index.js';

const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 1, maxAge: 3600 } }, bounces: { postmaster: 'it@contoso.test' } };
const scan = (subject: string, to = ['alice@example.com']) => ({ from: 'mfp@printers.local', to, raw: message(['From: Scanner <mfp@printers.local>', `Subject: ${subject}`], 'page') });

async function trace(relay: TestRelay, ...args: string[]) {
  return cli(['trace', '--data-dir', relay.dataDir, ...args]);
}

async function traceJson(relay: TestRelay, ...args: string[]): Promise<TraceSearchResult> {
  const { code, stdout, stderr } = await trace(relay, '--json', ...args);
  expect(stderr).toBe('');
  expect(code).toBe(0);
  return JSON.parse(stdout) as TraceSearchResult;
}

describe('the console\'s counts', () => {
  afterEach(stopStarted);

  it('count one failure for one failed device message, though both of its failure reports failed too', async () => {
    const provider = await startProvider();
    for (const address of ['nobody@example.com', 'it@contoso.test', 'mfp@printers.local']) provider.unknownRecipients.add(address);
    const relay = await startRelay(provider, { top: QUEUE });
    await sendRaw(relay.port, scan('Contract', ['nobody@example.com']));
    await until(async () => (await traceJson(relay, '--status', 'failed')).messages.length === 3); // the message and its two reports
    const overview = await (await fetch(`http://127.0.0.1:${relay.httpPort}/`)).text();
    expect(overview).toMatch(/Today: <strong>1<\/strong> message\(s\), <strong class="bad">1<\/strong> failure\(s\)/);
  });
});

describe('trace on a terminal', () => {
  it('shows control characters a device or provider wrote (C0, ESC, C1, DEL) as U+FFFD, also in --json', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-trace-tty-'));
    await mkdir(path.join(dataDir, 'trace'), { recursive: true });
    const at = new Date().toISOString();
    const base = { at, id: 'TTYTEST00001', account: 'office' };
    const hostile = 'x\u001b]0;owned\u0007\u009b31m\u0085y\u007f';
    const events = [
      { ...base, event: 'received', mode: 'queue', user: 'printer-2f', clientIp: '10.0.0.9', size: 10, from: `a${hostile}@b.test`, sentAs: 'scanner@contoso.test', to: ['t@x.test'], subject: hostile },
      { ...base, event: 'attempt', result: 'failed', reply: `550 5.7.1 ${hostile}`, recipients: [{ address: 't@x.test', reply: `550 5.7.1 ${hostile}` }], durationMs: 3 },
      { ...base, event: 'final', status: 'failed' },
    ];
    await writeFile(path.join(dataDir, 'trace', `${at.slice(0, 10)}.jsonl`), events.map((event) => JSON.stringify(event)).join('\n') + '\n');
    for (const args of [[], ['--json']]) {
      const { stdout, code } = await cli(['trace', '--data-dir', dataDir, ...args]);
      expect(code).toBe(0);
      expect(stdout).toContain('TTYTEST00001');
      expect(stdout, args.join(' ')).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    }
  });
});

describe('the delivery log (message trace)', () => {
  let provider: FakeProvider;
  afterEach(stopStarted);

  it('answers "where did my scan go?": each message with its timeline, the provider’s words and the outcome', async () => {
    provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    provider.deferredRecipients.set('busy@example.com', 1);
    const relay = await startRelay(provider, { top: QUEUE });
    await sendRaw(relay.port, scan('=?UTF-8?Q?Rechnung_f=C3=BCr_M=C3=A4rz?='));
    await sendRaw(relay.port, scan('Contract', ['nobody@example.com']));
    await sendRaw(relay.port, scan('Later', ['busy@example.com']));
    // Delivered: two scans and the failure reports the relay wrote (to the postmaster and the sender).
    await until(async () => (await traceJson(relay, '--status', 'delivered')).messages.length === 4 && (await traceJson(relay, '--status', 'failed')).messages.length === 1);
    const report = (await traceJson(relay, '--to', 'it@contoso.test')).messages[0];
    expect(report.received).toMatchObject({ about: expect.any(String), sentAs: 'scanner@contoso.test' });

    const failed = (await traceJson(relay, '--status', 'failed')).messages[0];
    expect(failed.received).toMatchObject({ user: DEVICE.username, clientIp: '127.0.0.1', from: 'mfp@printers.local', sentAs: 'scanner@contoso.test', to: ['nobody@example.com'], subject: 'Contract', mode: 'queue' });
    expect(failed.events.map((event) => event.event)).toEqual(['received', 'attempt', 'final', 'report', 'report']);
    const attempt = failed.events.find((event) => event.event === 'attempt');
    expect(attempt).toMatchObject({ recipients: [{ address: 'nobody@example.com', reply: expect.stringMatching(/^550 5\.1\.1/) }] });
    expect(failed.events.filter((event) => event.event === 'report').map((event) => 'to' in event && event.to)).toEqual(['it@contoso.test', 'mfp@printers.local']);

    // The deferred one: an attempt that was put off, then delivered.
    const later = (await traceJson(relay, '--to', 'busy@')).messages[0];
    expect(later.events.filter((event) => event.event === 'attempt').map((event) => 'result' in event && event.result)).toEqual(['deferred', 'delivered']);

    // The text a person reads: the subject decoded, the rewrite, the reply.
    const { stdout } = await trace(relay, '--from', 'mfp@printers');
    expect(stdout).toContain('Rechnung für März');
    expect(stdout).toMatch(/mfp@printers\.local → sent as scanner@contoso\.test/);
    expect(stdout).toMatch(/FAILED[\s\S]*attempt to nobody@example\.com: failed in \d+ ms — 550 5\.1\.1/);
    expect(stdout).toContain('failure report');
    expect(stdout).toMatch(/3 message\(s\)/);

    // Filters: by id, by user, by time; a bad filter is a usage error naming the fix.
    expect((await traceJson(relay, '--id', failed.id)).messages.map((found) => found.id)).toEqual([failed.id]);
    expect((await traceJson(relay, '--user', DEVICE.username.toUpperCase())).messages).toHaveLength(3);
    expect((await traceJson(relay, '--user', 'someone-else')).messages).toHaveLength(0);
    expect((await traceJson(relay, '--since', '1h')).messages.length).toBeGreaterThanOrEqual(3);
    expect((await traceJson(relay, '--since', new Date(Date.now() + 60_000).toISOString())).messages).toHaveLength(0);
    const bad = await trace(relay, '--since', 'yesterday-ish');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--since "yesterday-ish": give a duration/);
    expect((await trace(relay, '--status', 'lost')).stderr).toMatch(/one of delivered, failed/);

    // No body, no password in the log.
    const files = await readdir(path.join(relay.dataDir, 'trace'));
    const text = (await Promise.all(files.map((file) => readFile(path.join(relay.dataDir, 'trace', file), 'utf8')))).join('');
    expect(text).not.toContain('page');
    expect(text).not.toContain(DEVICE.password);
  });

  it('keeps refused messages with what the device was told, and leaves Subjects out when trace.subjects is false', async () => {
    provider = await startProvider();
    const relay = await startRelay(provider, { top: { trace: { subjects: false }, smtp: { host: '127.0.0.1', port: 0, maxMessageSize: 2000 } } });
    await sendRaw(relay.port, scan('Payroll'));
    const reply = await sendRawExpectingError(relay.port, { ...scan('Big'), raw: message(['From: mfp@printers.local', 'Subject: Big'], 'x'.repeat(5000)) });
    expect(reply).toMatch(/^552/);
    const result = await traceJson(relay);
    expect(result.messages.map((found) => found.status).sort()).toEqual(['delivered', 'refused']);
    const refused = result.messages.find((found) => found.status === 'refused')!;
    expect(refused.events.at(-1)).toMatchObject({ event: 'refused', reply: expect.stringMatching(/^552 5\.3\.4 Message exceeds/) });
    expect(JSON.stringify(result)).not.toContain('Payroll');
    expect(result.messages.every((found) => found.received?.subject === undefined)).toBe(true);
  });

  it('in direct mode, records the upstream attempt in the provider’s words before what the device was told', async () => {
    provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    const relay = await startRelay(provider); // direct mode
    const reply = await sendRawExpectingError(relay.port, scan('Direct', ['nobody@example.com']));
    expect(reply).toMatch(/^550/);
    const [message] = (await traceJson(relay)).messages;
    expect(message.status).toBe('refused');
    expect(message.events.map((event) => event.event)).toEqual(['received', 'attempt', 'refused']);
    expect(message.events[1]).toMatchObject({ result: 'failed', recipients: [{ address: 'nobody@example.com', reply: expect.stringMatching(/^550 5\.1\.10 RESOLVER\.ADR\.RecipientNotFound/) }] });
  });

  it('deletes days past trace.retention at start, and reads its files when no relay runs', async () => {
    provider = await startProvider();
    const dataDir = path.join(os.tmpdir(), `relay-trace-${process.pid}-${Date.now()}`);
    await mkdir(path.join(dataDir, 'trace'), { recursive: true });
    const old = { at: '2020-01-01T10:00:00.000Z', event: 'final', id: 'OLD0000001', account: 'office', status: 'delivered' };
    await writeFile(path.join(dataDir, 'trace', '2020-01-01.jsonl'), `${JSON.stringify(old)}\n`);
    const recent = new Date(Date.now() - 2 * 86_400_000).toISOString();
    await writeFile(path.join(dataDir, 'trace', `${recent.slice(0, 10)}.jsonl`), `${JSON.stringify({ ...old, at: recent, id: 'RECENT0001' })}\n{"cut short\n`);
    const relay = await startRelay(provider, { dataDir, top: { trace: { retention: '7d' } } });
    expect(await readdir(path.join(dataDir, 'trace'))).toEqual([`${recent.slice(0, 10)}.jsonl`]);
    await sendRaw(relay.port, scan('now'));
    await relay.stop();
    const offline = await trace(relay);
    expect(offline.stdout).toContain('RECENT0001');
    expect(offline.stdout).toMatch(/2 message\(s\)/);
  });
});

describe('a delivery log that would outgrow its disk', () => {
  afterEach(stopStarted);

  it('deletes its oldest days past trace.maxSize, before their retention, and says so', async () => {
    const provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-trace-size-'));
    await mkdir(path.join(dataDir, 'trace'));
    const days = [3, 2, 1].map((back) => new Date(Date.now() - back * 86_400_000).toISOString().slice(0, 10));
    for (const day of days) {
      const line = JSON.stringify({ at: `${day}T10:00:00.000Z`, event: 'final', id: `ID${day.replaceAll('-', '')}`, account: 'office', status: 'delivered' });
      await writeFile(path.join(dataDir, 'trace', `${day}.jsonl`), `${line}\n`.repeat(10)); // ~1 KB a day
    }
    const relay = await startRelay(provider, { dataDir, top: { trace: { maxSize: 2500 } } });
    expect((await readdir(path.join(dataDir, 'trace'))).sort()).toEqual([`${days[1]}.jsonl`, `${days[2]}.jsonl`]);
    expect(relay.logs.join('')).toContain('delivery log over trace.maxSize: its oldest part was deleted before trace.retention');
  });

  it('holds trace.maxSize within a day against a device flooding refused transactions with many recipients', async () => {
    const provider = await startProvider();
    provider.refuseConnections = true; // every transaction is refused (451), each one logged
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-trace-flood-'));
    const relay = await startRelay(provider, { dataDir, users: [{ ...DEVICE, account: 'office', maxRecipients: 400 }], top: { smtp: { host: '127.0.0.1', port: 0, maxRecipients: 400 }, trace: { maxSize: '300KB' } } });
    const to = Array.from({ length: 400 }, (_, i) => `flood-recipient-number-${i}@a-rather-long-domain-name.example.com`);
    for (let n = 0; n < 40; n++) expect(await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to, raw: message(['Subject: flood'], 'x') })).toMatch(/^451 /);
    const { stdout } = await cli(['trace', '--data-dir', dataDir, '--limit', '1']); // the running relay answers, its log flushed
    const sizes = async () => Promise.all((await readdir(path.join(dataDir, 'trace'))).map(async (name) => (await stat(path.join(dataDir, 'trace', name))).size));
    // The limit, plus what was written since the last pruning (a tenth of it) and the segment being written.
    await until(async () => (await sizes()).reduce((sum, size) => sum + size, 0) < 450 * 1024, 30_000);
    expect((await sizes()).length).toBeGreaterThan(1); // cut into segments within the day
    expect(relay.logs.join('')).toContain('delivery log over trace.maxSize');
    expect(stdout).toMatch(/and 300 more/); // one transaction lists 100 recipients and counts the rest
  });
});

describe('a delivery-log search that would not fit in memory', () => {
  it('keeps the newest whole days up to its cap and says it was cut', async () => {
    const { FileTraceLog } = await import('../src/trace/index.js');
    const { createLogger } = await import('../src/log.js');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-trace-cap-'));
    for (const day of ['2026-11-20', '2026-11-21', '2026-11-22']) {
      const lines = [1, 2].map((n) => JSON.stringify({ at: `${day}T10:00:0${n}.000Z`, event: 'final', id: `ID${day.replaceAll('-', '')}${n}`, account: 'office', status: 'delivered' }));
      await writeFile(path.join(dir, `${day}.jsonl`), `${lines.join('\n')}\n`);
    }
    const log = new FileTraceLog(dir, { retentionMs: Infinity, maxBytes: Infinity }, createLogger('silent'));
    const cut = await log.events({}, 3);
    expect(cut.truncated).toBe(true);
    expect(cut.events.map((event) => event.id)).toEqual(['ID202611221', 'ID202611222', 'ID202611212']); // the newest three
    expect((await log.events({}, 10)).truncated).toBe(false);
  });

  it('answers a search over a day of 80 MB in a 64 MB heap, cut with "narrow it"', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-trace-huge-'));
    await mkdir(path.join(dataDir, 'trace'));
    const day = new Date().toISOString().slice(0, 10);
    const file = await open(path.join(dataDir, 'trace', `${day}.jsonl`), 'w');
    const to = Array.from({ length: 5 }, (_, i) => `recipient-${i}@example.com`);
    for (let chunk = 0; chunk < 100; chunk++) {
      const lines = Array.from({ length: 2500 }, (_, i) => JSON.stringify({ at: `${day}T00:00:00.000Z`, event: 'received', id: `HUGE${chunk}X${i}`, account: 'office', mode: 'queue', user: 'printer-2f', size: 1, sentAs: 'scanner@contoso.test', to, subject: 'a scan of the day' }));
      await file.write(`${lines.join('\n')}\n`);
    }
    await file.close();
    const result = await execFileAsync(process.execPath, ['--max-old-space-size=64', path.resolve('dist/src/cli/main.js'), 'trace', '--data-dir', dataDir, '--limit', '2'], { maxBuffer: 16 * 1024 * 1024 });
    expect(result.stdout).toMatch(/size cap[\s\S]*narrow it/);
    expect(result.stdout).toContain('2 message(s)');
  }, 120_000);
});
