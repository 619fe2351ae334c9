/** What the benchmark sections share: the messages, the senders and a timed load of them. */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import nodemailer, { type SMTPPoolOptions } from 'nodemailer';
import { DEVICE, MAILBOX, writeRelayConfig } from './harness.js';
import { RelayProcess } from './relay-process.js';
import { FAKE_TLS, type FakeProvider } from '../src/demo/fake-provider.js';

export const message10k = buildMessage(10 * 1024);

export function buildMessage(bodyBytes: number): Buffer {
  const line = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n'; // 80-byte base64 lines, like an attachment
  const head = 'From: Scanner <mfp@printers.local>\r\nTo: alice@example.com\r\nSubject: scan\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const body = Buffer.alloc(Math.ceil(bodyBytes / line.length) * line.length, line);
  return Buffer.concat([Buffer.from(head), body]);
}

export type Sender = (raw: Buffer) => Promise<void>;

/** One connection per message (printer-style) or one long session, over the given SMTP options. */
export function sender(options: SMTPPoolOptions, envelope: { from: string; to: string[] }, longSession: boolean): { send: Sender; close(): void } {
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
export function deviceSender(port: number, longSession: boolean) {
  const options = { host: '127.0.0.1', port, secure: false, ignoreTLS: true, auth: { user: DEVICE.username, pass: DEVICE.password } };
  return sender(options, { from: 'mfp@printers.local', to: ['alice@example.com'] }, longSession);
}

/** The baseline: the same load sent straight to the stand-in upstream (STARTTLS + XOAUTH2). */
export function upstreamSender(provider: FakeProvider, accessToken: string, longSession: boolean) {
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
export async function load(makeSender: () => { send: Sender; close(): void }, count: number, concurrency: number, raw = message10k) {
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

export async function accessTokenFor(provider: FakeProvider): Promise<string> {
  const response = await fetch(provider.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', client_id: provider.clientId, client_secret: provider.clientSecret, refresh_token: provider.issueRefreshToken() }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

export async function startRelay(provider: FakeProvider, extra: Record<string, unknown>): Promise<RelayProcess> {
  // Logging stays at the default level (info: one line per message), as in production.
  const { configFile } = await writeRelayConfig(provider, extra);
  const relay = new RelayProcess(configFile);
  await relay.start();
  return relay;
}

