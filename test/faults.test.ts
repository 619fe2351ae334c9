import { readdir, readlink, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, metric, startProvider, startRelay, stopStarted, until, type RelayOptions } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';

/** A device that got as far as DATA. */
async function inData(port: number): Promise<RawSmtp> {
  const { client } = await RawSmtp.connect(port);
  await client.command('EHLO device.local');
  expect(await client.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
  expect(await client.command('MAIL FROM:<mfp@printers.local>')).toMatch(/^250/);
  expect(await client.command('RCPT TO:<alice@example.com>')).toMatch(/^250/);
  expect(await client.command('DATA')).toMatch(/^354/);
  return client;
}

const line = `${'x'.repeat(998)}\r\n`;
const body = (bytes: number) => `Subject: scan\r\n\r\n${line.repeat(Math.ceil(bytes / line.length))}`;

async function openFiles(dir: string): Promise<number> {
  const fds = await readdir('/proc/self/fd');
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target.startsWith(dir)).length;
}

describe('a device that hangs up, a full spool, a failing disk', () => {
  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  async function setUp(options: RelayOptions = {}) {
    const provider = await startProvider();
    const relay = await startRelay(provider, { ...options, top: { delivery: 'queue', ...options.top } });
    return { provider, relay };
  }

  it('leaves no file, no descriptor and no counted bytes behind when devices hang up mid-DATA', async () => {
    const { provider, relay } = await setUp();
    const incoming = path.join(relay.dataDir, 'spool', 'incoming');
    for (let round = 0; round < 3; round++) {
      const clients = await Promise.all(Array.from({ length: 20 }, () => inData(relay.port)));
      await Promise.all(clients.map((client) => client.send(body(1_500_000))));
      await until(async () => (await metric(relay.httpPort, 'smtp_relay_spool_bytes')) > 20 * 1_000_000);
      for (const client of clients) client.close();
    }
    await until(async () => (await readdir(incoming)).length === 0 && (await metric(relay.httpPort, 'smtp_relay_spool_bytes')) === 0);
    await until(async () => (await openFiles(incoming)) === 0);
    expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'disconnected' })).toBe(60);
    expect(provider.received).toHaveLength(0);
  });

  it('leaves nothing behind either when the hang-up comes as the message starts spilling to a file (400 times)', async () => {
    const { relay } = await setUp();
    const incoming = path.join(relay.dataDir, 'spool', 'incoming');
    for (let round = 0; round < 40; round++) {
      const clients = await Promise.all(Array.from({ length: 10 }, () => inData(relay.port)));
      // Just past the 256 KB kept in memory: the file is being opened when the device goes.
      await Promise.all(clients.map((client, i) => client.send(body(256 * 1024 + 1000 + i * 997)).then(() => client.close())));
    }
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'disconnected' })) === 400, 60_000);
    await until(async () => (await readdir(incoming)).length === 0 && (await metric(relay.httpPort, 'smtp_relay_spool_bytes')) === 0);
    await until(async () => (await openFiles(incoming)) === 0);
  }, 90_000);

  it('counts messages still being received against queue.maxSize, while DATA streams', async () => {
    const { provider, relay } = await setUp({ top: { delivery: 'queue', queue: { maxSize: '2MB' } } });
    const first = await inData(relay.port);
    await first.send(body(1_500_000));
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_spool_bytes')) > 1_400_000);
    const second = await inData(relay.port);
    expect(await second.write(`${body(1_000_000)}.\r\n`)).toMatch(/^452 4\.3\.1 /);
    expect(await first.write('.\r\n')).toMatch(/^250 /);
    await until(() => provider.received.length === 1);
    await until(async () => (await readdir(path.join(relay.dataDir, 'spool', 'incoming'))).length === 0);
  });

  it('answers a local fault with 4xx and no file path, never 5xx', async () => {
    const { relay } = await setUp();
    await rm(path.join(relay.dataDir, 'spool', 'queue'), { recursive: true });
    const { client } = await RawSmtp.connect(relay.port);
    await client.command('EHLO device.local');
    await client.login(DEVICE.username, DEVICE.password);
    const reply = await client.command('MAIL FROM:<mfp@printers.local> SIZE=1000');
    expect(reply).toMatch(/^451 4\.3\.0 /);
    expect(reply).not.toContain(relay.dataDir);
    expect(relay.logs.join('\n')).toContain('ENOENT');
  });
});
