import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEVICE, execFileAsync, metric, startProvider, until, writeRelayConfig } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import { RelayProcess } from '../bench/relay-process.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { randomHeaderMessage, senderProblems } from './header-shapes.js';

const SESSIONS = Number(process.env.FUZZ_SESSIONS ?? 3000);
const CONCURRENCY = 50;

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)];
const junk = (length: number) => randomBytes(length).toString('latin1');

/** One hostile or broken session: what printers with bad firmware and scanners of the internet send. */
const SCRIPTS: ((client: RawSmtp) => Promise<unknown>)[] = [
  (c) => c.command(junk(40).replace(/[\r\n]/g, '')),
  (c) => c.command('AUTH PLAIN !!!not-base64!!!'),
  (c) => c.command(`AUTH PLAIN ${Buffer.from('\0\0\0\0').toString('base64')}`),
  (c) => c.command('AUTH LOGIN').then(() => c.command('%%%')),
  (c) => c.command(`AUTH PLAIN ${Buffer.from(`\0${DEVICE.username}\0wrong`).toString('base64')}`),
  (c) => c.command('MAIL FROM:<a@b>').then(() => c.command('RCPT TO:<c@d>')),
  (c) => c.command('RCPT TO:<before-mail@x>'),
  (c) => c.command('DATA'),
  (c) => c.command(`EHLO ${'x'.repeat(20_000)}`),
  (c) => c.write('GET / HTTP/1.1\r\nHost: relay\r\n\r\n'),
  (c) => c.write(`${junk(2000)}\r\n`),
  (c) => c.write('EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n'),
  async (c) => {
    await c.login(DEVICE.username, DEVICE.password);
    await c.command('MAIL FROM:<mfp@printers.local>');
    await c.command('RCPT TO:<alice@example.com>');
    await c.command('DATA');
    c.write(`Subject: truncated\r\n\r\n${junk(5000)}`); // and then the device dies mid-DATA
  },
  async (c) => {
    await c.login(DEVICE.username, DEVICE.password);
    await c.command(`MAIL FROM:<${junk(30).replace(/[\r\n>]/g, '')}@x>`);
    await c.command(`RCPT TO:<\0@\r>`);
  },
  // A complete message whose header has a random shape: whatever arrives must have one allowed From.
  async (c) => {
    await c.login(DEVICE.username, DEVICE.password);
    await c.command('MAIL FROM:<mfp@printers.local>');
    await c.command('RCPT TO:<shapes@example.com>');
    await c.command('DATA');
    const data = randomHeaderMessage(Math.random).toString('latin1').replace(/(^|\r\n)\./g, '$1..');
    await c.write(`${data}${data.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
  },
];

describe('fuzzing the listener', () => {
  let provider: FakeProvider;
  let relay: RelayProcess;

  let diagnostics: string;

  afterAll(async () => {
    if (relay?.child?.exitCode === null) await relay.stop('SIGTERM');
    await provider?.stop();
    if (diagnostics) await rm(diagnostics, { recursive: true, force: true });
  });

  /**
   * What the relay still holds after a full collection: JS heap plus memory outside it (buffers), and its
   * RSS at that moment. RSS
   * alone says little, since V8 grows its heap lazily and returns it late (Node 24 more than 20); a heap
   * snapshot forces the collection, and the relay answers /metrics only once the snapshot is written.
   */
  const liveMemory = async () => {
    const snapshots = (await readdir(diagnostics)).length;
    relay.child!.kill('SIGUSR2');
    await until(async () => (await readdir(diagnostics)).length > snapshots, 60_000);
    const heap = await metric(relay.httpPort, 'smtp_relay_nodejs_heap_size_used_bytes');
    const external = await metric(relay.httpPort, 'smtp_relay_nodejs_external_memory_bytes');
    const rss = await metric(relay.httpPort, 'smtp_relay_process_resident_memory_bytes');
    await Promise.all((await readdir(diagnostics)).map((name) => rm(path.join(diagnostics, name))));
    return { live: heap + external, rss };
  };

  it(`survives ${SESSIONS} malformed and abandoned sessions with bounded memory, then relays normally`, async () => {
    provider = await startProvider();
    const { configFile } = await writeRelayConfig(provider, {
      smtp: { maxConnectionsPerIp: 1000, maxClients: 500, socketTimeout: 5, authFailures: { maxPerIp: 1_000_000, maxPerUser: 1_000_000 } },
    });
    diagnostics = await mkdtemp(path.join(tmpdir(), 'fuzz-heap-'));
    relay = new RelayProcess(configFile, ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${diagnostics}`]);
    await relay.start();

    const runSessions = async (count: number) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < count) {
            next++;
            const { client } = await RawSmtp.connect(relay.port);
            if (Math.random() < 0.8) await client.command('EHLO fuzz').catch(() => undefined);
            await Promise.race([pick(SCRIPTS)(client).catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2000))]);
            client.close(); // abrupt: no QUIT
          }
        }),
      );
    };
    await runSessions(300);
    const before = await liveMemory();
    await runSessions(SESSIONS);
    const after = await liveMemory();
    const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
    console.log(`fuzz: ${SESSIONS} sessions, live ${mb(before.live)} → ${mb(after.live)}, RSS ${mb(before.rss)} → ${mb(after.rss)}`);
    // A leak of 3 KB per session would show in the live bytes; the RSS bound catches gross leaks outside V8.
    expect(after.live - before.live).toBeLessThan(8 * 2 ** 20);
    expect(after.rss - before.rss).toBeLessThan(128 * 2 ** 20);
    const shaped = provider.received.filter((m) => m.envelope.to[0] === 'shapes@example.com');
    expect(shaped.length).toBeGreaterThan(50);
    expect(shaped.flatMap((m) => senderProblems(m.raw))).toEqual([]);

    const swaks = await execFileAsync('swaks', ['--server', `127.0.0.1:${relay.port}`, '--auth', 'PLAIN', '--auth-user', DEVICE.username, '--auth-password', DEVICE.password, '--from', 'mfp@printers.local', '--to', 'alice@example.com']);
    expect(swaks.stdout).toContain('250 2.6.0 Ok: queued as');
    const deadline = Date.now() + 10_000;
    while (!provider.received.some((m) => m.envelope.to[0] === 'alice@example.com' && /swaks/.test(m.raw.toString())) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(provider.received.some((m) => /swaks/.test(m.raw.toString()))).toBe(true);
    expect(await relay.stop('SIGTERM')).toBe(0);
  }, 180_000);
});
