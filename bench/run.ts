/**
 * `npm run bench`: the relay's speed and memory, each figure taken beside a baseline measured in
 * the same run, on loopback only. Prints a table and writes bench/results.json.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import nodemailer, { type SMTPPoolOptions } from 'nodemailer';
import { DEVICE, MAILBOX, startProvider, writeRelayConfig } from './harness.js';
import { RelayProcess } from './relay-process.js';
import { FAKE_TLS, type FakeProvider } from '../src/demo/fake-provider.js';
import { packageRoot } from '../src/util/package-root.js';

interface Row {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
  target?: string;
  met?: boolean;
}

const rows: Row[] = [];
const MB = 2 ** 20;
const message10k = buildMessage(10 * 1024);

function buildMessage(bodyBytes: number): Buffer {
  const line = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n'; // 80-byte base64 lines, like an attachment
  const head = 'From: Scanner <mfp@printers.local>\r\nTo: alice@example.com\r\nSubject: scan\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const body = Buffer.alloc(Math.ceil(bodyBytes / line.length) * line.length, line);
  return Buffer.concat([Buffer.from(head), body]);
}

type Sender = (raw: Buffer) => Promise<void>;

/** One connection per message (printer-style) or one long session, over the given SMTP options. */
function sender(options: SMTPPoolOptions, envelope: { from: string; to: string[] }, longSession: boolean): { send: Sender; close(): void } {
  if (longSession) {
    const pooled = nodemailer.createTransport({ ...options, pool: true, maxConnections: 1, maxMessages: Infinity });
    return { send: async (raw) => void (await pooled.sendMail({ envelope, raw })), close: () => pooled.close() };
  }
  return {
    send: async (raw) => {
      const transport = nodemailer.createTransport({ ...options, pool: false } as SMTPPoolOptions);
      try {
        await transport.sendMail({ envelope, raw });
      } finally {
        transport.close();
      }
    },
    close: () => undefined,
  };
}

/** A device sending to the relay. */
function deviceSender(port: number, longSession: boolean) {
  const options = { host: '127.0.0.1', port, secure: false, ignoreTLS: true, auth: { user: DEVICE.username, pass: DEVICE.password } };
  return sender(options, { from: 'mfp@printers.local', to: ['alice@example.com'] }, longSession);
}

/** The baseline: the same load sent straight to the stand-in upstream (STARTTLS + XOAUTH2). */
function upstreamSender(provider: FakeProvider, accessToken: string, longSession: boolean) {
  const options = {
    host: '127.0.0.1',
    port: provider.smtpPort,
    secure: false,
    requireTLS: true,
    tls: { ca: readFileSync(FAKE_TLS.ca()) },
    auth: { type: 'OAuth2' as const, user: MAILBOX, accessToken },
  };
  return sender(options, { from: MAILBOX, to: ['alice@example.com'] }, longSession);
}

/** Sends `count` messages from `concurrency` devices; messages per second and per-message latencies. */
async function load(makeSender: () => { send: Sender; close(): void }, count: number, concurrency: number, raw = message10k) {
  const senders = Array.from({ length: concurrency }, makeSender);
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    senders.map(async (sender) => {
      while (next < count) {
        next++;
        const t0 = performance.now();
        await sender.send(raw);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  senders.forEach((sender) => sender.close());
  latencies.sort((a, b) => a - b);
  return { rate: count / seconds, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function accessTokenFor(provider: FakeProvider): Promise<string> {
  const response = await fetch(provider.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', client_id: provider.clientId, client_secret: provider.clientSecret, refresh_token: provider.issueRefreshToken() }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

async function startRelay(provider: FakeProvider, extra: Record<string, unknown>): Promise<RelayProcess> {
  // Logging stays at the default level (info: one line per message), as in production.
  const { configFile } = await writeRelayConfig(provider, extra);
  const relay = new RelayProcess(configFile);
  await relay.start();
  return relay;
}

/** Peak and current resident memory of a process (what `/usr/bin/time -v` calls maximum RSS). */
function memoryOf(pid: number): { peak: number; current: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { peak: kb('VmHWM'), current: kb('VmRSS') };
}

function record(row: Row): void {
  rows.push(row);
  const figure = `${row.value.toFixed(row.unit === 'msg/s' ? 1 : 2)} ${row.unit}`;
  const base = row.baseline !== undefined ? `  baseline ${row.baseline.toFixed(row.unit === 'msg/s' ? 1 : 2)}` : '';
  const ratio = row.ratio !== undefined ? `  ratio ${row.ratio.toFixed(2)}` : '';
  const target = row.target ? `  target ${row.target}: ${row.met ? 'met' : 'MISSED'}` : '';
  process.stdout.write(`${row.name.padEnd(48)} ${figure.padStart(14)}${base}${ratio}${target}\n`);
}

async function throughput(provider: FakeProvider, token: string): Promise<void> {
  const workloads = [
    { concurrency: 1, count: 150 },
    { concurrency: 10, count: 400 },
    { concurrency: 50, count: 800 },
  ];
  for (const mode of ['direct', 'queue'] as const) {
    const relay = await startRelay(provider, { delivery: mode, smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } });
    for (const longSession of [false, true]) {
      for (const { concurrency, count } of workloads) {
        const baseline = await load(() => upstreamSender(provider, token, longSession), count, concurrency);
        const measured = await load(() => deviceSender(relay.port, longSession), count, concurrency);
        const style = longSession ? 'long session' : 'printer-style';
        const ratio = measured.rate / baseline.rate;
        const goal = mode === 'direct' && longSession ? 0.8 : 0.5;
        const targeted = longSession ? mode === 'direct' : true;
        record({
          name: `throughput ${mode} ${style} c=${concurrency}`,
          value: measured.rate,
          unit: 'msg/s',
          baseline: baseline.rate,
          ratio,
          target: targeted ? `≥ ${goal} × baseline` : undefined,
          met: targeted ? ratio >= goal : undefined,
        });
        if (mode === 'direct' && concurrency === 1) {
          // Printer-style: the baseline also pays for TLS and XOAUTH2 on every connection, which
          // the relay's pooled upstream leg does not; the long session shows the relay's own cost.
          const added50 = measured.p50 - baseline.p50;
          record({ name: `added latency p50 (direct, ${style}, c=1)`, value: added50, unit: 'ms', baseline: baseline.p50, target: '< 3 ms', met: added50 < 3 });
          record({ name: `added latency p99 (direct, ${style}, c=1)`, value: measured.p99 - baseline.p99, unit: 'ms', baseline: baseline.p99 });
        }
      }
    }
    await relay.stop('SIGTERM');
  }
}

async function memory(): Promise<void> {
  // A provider that takes 50 MB messages (Exchange admins can raise the limit to 150 MB).
  const provider = await startProvider({ maxSize: 100 * MB });
  const peaks: Record<number, number> = {};
  for (const size of [1, 10, 50]) {
    const relay = await startRelay(provider, { delivery: 'direct', smtp: { maxMessageSize: '100MB' } });
    const idle = memoryOf(relay.child!.pid!).peak;
    await load(() => deviceSender(relay.port, false), 1, 1, buildMessage(size * MB));
    peaks[size] = memoryOf(relay.child!.pid!).peak;
    await relay.stop('SIGTERM');
    record({ name: `peak RSS relaying one ${size} MB message`, value: peaks[size] / MB, unit: 'MB', baseline: idle / MB });
  }
  await provider.stop();
  const growth = (peaks[50] - peaks[1]) / MB;
  record({ name: 'peak RSS growth 50 MB vs 1 MB message', value: growth, unit: 'MB', target: '< 32 MB', met: growth < 32 });
}

async function tokenRefresh(provider: FakeProvider): Promise<void> {
  provider.tokenLifetime = 4; // refreshed at half-life: 2 s
  const relay = await startRelay(provider, { delivery: 'direct', smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } });
  await load(() => deviceSender(relay.port, false), 1, 1);
  await new Promise((resolve) => setTimeout(resolve, 2200));
  provider.dropConnections(); // new upstream logins are needed for the burst
  const before = provider.tokenRequests;
  await load(() => deviceSender(relay.port, false), 200, 200);
  const requests = provider.tokenRequests - before;
  await relay.stop('SIGTERM');
  provider.tokenLifetime = 3600;
  record({ name: 'token requests for 200 concurrent sends across an expiry', value: requests, unit: 'requests', target: '= 1', met: requests === 1 });
}

async function idleConnections(provider: FakeProvider): Promise<void> {
  const relay = await startRelay(provider, { smtp: { maxConnectionsPerIp: 2000, maxClients: 2000 } });
  const idle = memoryOf(relay.child!.pid!).current;
  const sockets: net.Socket[] = [];
  await Promise.all(
    Array.from({ length: 1000 }, () => {
      return new Promise<void>((resolve, reject) => {
        const socket = net.connect(relay.port, '127.0.0.1');
        sockets.push(socket);
        socket.once('data', () => {
          socket.write('EHLO idle-device\r\n');
          resolve();
        });
        socket.once('error', reject);
      });
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const rss = memoryOf(relay.child!.pid!).current;
  sockets.forEach((socket) => socket.destroy());
  await relay.stop('SIGTERM');
  record({ name: 'RSS with 1,000 idle device connections', value: rss / MB, unit: 'MB', baseline: idle / MB, target: '< 150 MB', met: rss < 150 * MB });
}

async function main(): Promise<void> {
  const started = performance.now();
  process.stdout.write(`smtp-oauth-relay benchmark on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}\n\n`);
  const provider = await startProvider();
  const token = await accessTokenFor(provider);
  // BENCH_ONLY=memory,connections runs a part (while profiling one figure).
  const only = process.env.BENCH_ONLY?.split(',');
  const sections: [string, () => Promise<void>][] = [
    ['throughput', () => throughput(provider, token)],
    ['memory', memory],
    ['token', () => tokenRefresh(provider)],
    ['connections', () => idleConnections(provider)],
  ];
  for (const [name, run] of sections) if (!only || only.includes(name)) await run();
  await provider.stop();
  const seconds = (performance.now() - started) / 1000;
  const file = path.join(packageRoot(), 'bench', 'results.json');
  writeFileSync(
    file,
    JSON.stringify({ date: new Date().toISOString(), machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryGB: Math.round(os.totalmem() / 2 ** 30), node: process.version }, seconds, rows }, null, 2) + '\n',
  );
  const missed = rows.filter((row) => row.met === false);
  process.stdout.write(`\n${rows.filter((row) => row.met !== undefined).length - missed.length} targets met, ${missed.length} missed; ${seconds.toFixed(0)} s; written to ${file}\n`);
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
