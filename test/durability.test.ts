import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, truncate, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, message, metric, sendRaw, startProvider, startRelay, stopStarted, until, writeRelayConfig } from './helpers.js';
import { RelayProcess } from '../bench/relay-process.js';
import { Spool, newQueueRecord } from '../src/spool/index.js';
import { queueFileTrailer } from '../src/spool/queue-file.js';
import { queueCommand } from '../src/cli/queue.js';

const run = promisify(execFile);
const CLI = path.resolve('dist/src/cli/main.js');
const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 0.5, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05 } };
const scan = (n: number, to = ['alice@example.com']) => ({ from: 'mfp@printers.local', to, raw: message(['From: mfp@printers.local', `Subject: scan ${n}`], `page ${n}`) });

async function cli(configFile: string, ...args: string[]): Promise<{ code: number; output: string }> {
  return run(process.execPath, [CLI, ...args, '--config', configFile]).then(
    ({ stdout }) => ({ code: 0, output: stdout }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, output: error.stdout + error.stderr }),
  );
}

const crashedContent = () => Buffer.from(message(['From: scanner@contoso.test', 'Reply-To: mfp@printers.local', 'To: nobody@example.com', 'Subject: crashed', 'X-Device-Secret: internal'], 'body'));
const crashedRecord = (content: Buffer, fields: Record<string, unknown>) =>
  newQueueRecord({ id: `CRASH${Math.random().toString(36).slice(2, 8).toUpperCase()}`, account: 'office', envelope: { from: MAILBOX, to: ['nobody@example.com'] }, size: content.length, user: DEVICE.username, ...fields });

/** Puts a committed message into a spool the way a crashed relay would have left it. */
async function leaveInSpool(dataDir: string, fields: Record<string, unknown>, area = 'queue'): Promise<string> {
  const dir = path.join(dataDir, 'spool', area);
  await mkdir(dir, { recursive: true });
  const content = crashedContent();
  const record = crashedRecord(content, fields);
  await writeFile(path.join(dir, `${record.id}.msg`), Buffer.concat([content, queueFileTrailer(record, content.length)]));
  return record.id;
}

/** The same, in the two-file layout of versions before the single queue file (<id>.eml + <id>.json). */
async function leaveInLegacySpool(dataDir: string, fields: Record<string, unknown>, area = 'queue'): Promise<string> {
  const dir = path.join(dataDir, 'spool', area);
  await mkdir(dir, { recursive: true });
  const content = crashedContent();
  const record = crashedRecord(content, fields);
  await writeFile(path.join(dir, `${record.id}.eml`), content);
  await writeFile(path.join(dir, `${record.id}.json`), JSON.stringify(record));
  return record.id;
}

describe('the queue changes only through the daemon', () => {
  afterEach(stopStarted);

  it('never sends a recipient the message twice while `queue retry --all` races deliveries', async () => {
    const provider = await startProvider();
    provider.dataDelayMs = 3;
    for (let i = 0; i < 60; i++) provider.deferredRecipients.set(`r${i}@example.com`, 1); // half the recipients need a second attempt
    const { configFile } = await writeRelayConfig(provider, QUEUE);
    const relay = new RelayProcess(configFile);
    await relay.start();
    try {
      let next = 0;
      const device = async () => {
        for (let i = next++; i < 60; i = next++) await sendRaw(relay.port, scan(i, [`r${i}@example.com`, `s${i}@example.com`]));
      };
      const sending = Promise.all(Array.from({ length: 6 }, device));
      let retries = 0;
      while (provider.received.length < 120 && retries < 40) {
        const result = await cli(configFile, 'queue', 'retry', '--all');
        expect(result.code).toBe(0);
        retries++;
      }
      await sending;
      await until(() => provider.received.length >= 120, 30_000);
      await new Promise((resolve) => setTimeout(resolve, 500)); // anything sent twice would arrive now
      const deliveries = provider.received.flatMap((received) => received.envelope.to);
      expect(deliveries).toHaveLength(120);
      expect(new Set(deliveries).size).toBe(120);
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });

  it('deletes through the daemon, refuses while the message is in delivery, and acts alone without a daemon', async () => {
    const provider = await startProvider();
    provider.refuseConnections = true;
    const { configFile, dataDir } = await writeRelayConfig(provider, { ...QUEUE, queue: { retry: { initialDelay: 60 } } });
    const relay = new RelayProcess(configFile);
    await relay.start();
    const queued = async () => (await readdir(path.join(dataDir, 'spool', 'queue'))).filter((name) => !name.startsWith('.'));
    try {
      const id = /queued as ([0-9A-Z]+)/.exec((await sendRaw(relay.port, scan(1))).response)![1];
      await until(async () => (await metric(relay.httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'deferred' })) === 1);
      const deleted = await cli(configFile, 'queue', 'delete', id);
      expect(deleted).toEqual({ code: 0, output: `${id} deleted\n` });
      expect(await queued()).toEqual([]);
      provider.refuseConnections = false;
      expect(await cli(configFile, 'queue', 'retry', '--all')).toEqual({ code: 0, output: '0 message(s) scheduled for delivery now\n' });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(provider.received).toHaveLength(0); // the daemon forgot it too
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
    const id = await leaveInSpool(dataDir, {});
    expect(await cli(configFile, 'queue', 'delete', id)).toEqual({ code: 0, output: `${id} deleted from queue\n` });
    expect(await queued()).toEqual([]);
  });
});

describe('a committed message stays committed across crashes', () => {
  afterEach(stopStarted);

  it('finishes a failure cut short by a crash with exactly one report', async () => {
    const provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-crash-'));
    const report = { to: ['it@contoso.test'], explanation: 'The upstream refused the message permanently.' };
    const failedAt = new Date().toISOString();
    const failedRecipients = [{ address: 'nobody@example.com', reply: '550 5.1.1 unknown' }];
    // Crashed after saving the decision, before the report was queued:
    const first = await leaveInSpool(dataDir, { failedAt, failedRecipients, attempts: 1 });
    const firstRecord = await new Spool(dataDir).read(first);
    await writeFile(path.join(dataDir, 'spool', 'queue', `${first}.state`), JSON.stringify({ ...firstRecord, report: { id: `${first}R`, ...report } }));
    // Crashed after queuing the report, before the move to failed/:
    const second = await leaveInSpool(dataDir, { failedAt, failedRecipients, attempts: 1, report: { id: 'SECONDR', ...report } });
    await leaveInSpool(dataDir, { id: 'SECONDR1', isReport: true, envelope: { from: MAILBOX, to: report.to } });
    const relay = await startRelay(provider, { dataDir, top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test' } } });
    await until(() => provider.received.length >= 2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(provider.received.map((received) => received.envelope.to)).toEqual([['it@contoso.test'], ['it@contoso.test']]);
    expect((await readdir(path.join(dataDir, 'spool', 'failed'))).sort()).toEqual([`${first}.msg`, `${first}.state`, `${second}.msg`, `${second}.state`].sort());
    expect(await metric(relay.httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'failed' })).toBe(2);
  });

  it('sets a damaged queue file or record aside instead of dropping it, and removes what a removal left', async () => {
    const provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-crash-'));
    const queue = path.join(dataDir, 'spool', 'queue');
    const truncated = await leaveInSpool(dataDir, {});
    await truncate(path.join(queue, `${truncated}.msg`), 200); // the footer and the record are cut off
    const damagedState = await leaveInSpool(dataDir, {});
    await writeFile(path.join(queue, `${damagedState}.state`), '{"id": "trunc');
    const legacyOrphan = await leaveInLegacySpool(dataDir, {});
    await unlink(path.join(queue, `${legacyOrphan}.eml`));
    await writeFile(path.join(queue, 'DELIVERED.state'), '{}'); // a crash between the two unlinks of a delivered message
    const relay = await startRelay(provider, { dataDir, top: QUEUE });
    expect((await readdir(path.join(dataDir, 'spool', 'corrupt'))).sort()).toEqual([`${truncated}.msg`, `${damagedState}.msg`, `${damagedState}.state`, `${legacyOrphan}.json`].sort());
    expect(await readdir(queue)).toEqual([]);
    expect(relay.logs.join('\n')).toMatch(/set aside in spool\/corrupt: it cannot be read: no queue-file footer/);
    expect(relay.logs.join('\n')).toMatch(/set aside in spool\/corrupt: its message file is missing/);
    expect(provider.received).toHaveLength(0);
  });

  it('takes over a spool written by an earlier version (<id>.eml + <id>.json): delivers queued ones once, keeps failed ones', async () => {
    const provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-legacy-'));
    await leaveInLegacySpool(dataDir, { envelope: { from: MAILBOX, to: ['alice@example.com', 'bob@example.com'] }, delivered: ['alice@example.com'], attempts: 1 });
    const failed = await leaveInLegacySpool(dataDir, { failedAt: new Date().toISOString() }, 'failed');
    await writeFile(path.join(dataDir, 'spool', 'queue', 'NEVERCOMMITTED.eml'), 'From: x\r\n\r\nno record: the device got no 250');
    const relay = await startRelay(provider, { dataDir, top: QUEUE });
    await until(() => provider.received.length >= 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(provider.received.map((received) => received.envelope.to)).toEqual([['bob@example.com']]);
    expect(provider.received[0].raw.toString()).toContain('Subject: crashed');
    await until(async () => (await readdir(path.join(dataDir, 'spool', 'queue'))).length === 0);
    expect(await readdir(path.join(dataDir, 'spool', 'failed'))).toEqual([`${failed}.msg`]);
    expect(await metric(relay.httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'failed' })).toBe(1);
    const shown = await queueCommand(dataDir, ['show', failed], false);
    expect(shown.output).toContain('Subject: crashed');
  });

  it('prunes failed messages past queue.failedRetention', async () => {
    const provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-crash-'));
    const old = await leaveInSpool(dataDir, { failedAt: new Date(Date.now() - 40 * 86_400_000).toISOString() }, 'failed');
    const recent = await leaveInSpool(dataDir, { failedAt: new Date().toISOString() }, 'failed');
    const relay = await startRelay(provider, { dataDir, top: QUEUE });
    await until(async () => !(await readdir(path.join(dataDir, 'spool', 'failed'))).includes(`${old}.msg`));
    expect((await readdir(path.join(dataDir, 'spool', 'failed'))).sort()).toEqual([`${recent}.msg`]);
    expect(await metric(relay.httpPort, 'smtp_relay_queue_messages', { account: 'office', state: 'failed' })).toBe(1);
  });
});

describe('failure reports cannot be turned against the policy', () => {
  afterEach(stopStarted);

  it('reports to the sender only where the device may send, quotes only the needed headers, and keeps to a rate', async () => {
    const provider = await startProvider();
    provider.unknownRecipients.add('nobody@contoso.test');
    const relay = await startRelay(provider, {
      users: [{ ...DEVICE, account: 'office', allowRecipients: ['contoso.test'] }],
      top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test', notifySender: true, maxPerHour: 2 } },
    });
    const forged = (n: number, from: string) => ({
      from: 'mfp@printers.local',
      to: ['nobody@contoso.test'],
      raw: message([`From: ${from}`, `Subject: invoice ${n}`, 'X-Payload: click here http://evil.example'], 'body'),
    });
    await sendRaw(relay.port, forged(1, 'target@outside.example'));
    await until(() => provider.received.length === 1);
    expect(provider.received[0].envelope.to).toEqual(['it@contoso.test']); // never to the outside address
    await sendRaw(relay.port, forged(2, 'colleague@contoso.test'));
    await until(() => provider.received.length === 3);
    // One report per recipient, each with only its own To.
    expect(provider.received.slice(1).map((received) => received.envelope.to[0]).sort()).toEqual(['colleague@contoso.test', 'it@contoso.test']);
    for (const received of provider.received) expect(received.raw.toString()).toContain(`To: ${received.envelope.to[0]}\r\n`);
    const quoted = provider.received[0].raw.toString().split('Content-Type: text/rfc822-headers')[1];
    expect(quoted).toContain('Subject: invoice');
    expect(quoted).not.toContain('X-Payload');
    // A third failure from the same device within the hour: no report, counted.
    await sendRaw(relay.port, forged(3, 'colleague@contoso.test'));
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_failure_reports_suppressed_total')) === 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(provider.received).toHaveLength(3);
  });
});
