/** What the benchmark sections share: the messages, the senders and a timed load of them. */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import nodemailer, { type SMTPPoolOptions } from 'nodemailer';
import http from 'node:http';
import { DEVICE, MAILBOX, accountFor, writeRelayConfig } from './harness.js';
import type { TransportName } from '../src/config/index.js';
import { RelayProcess } from './relay-process.js';
import { FAKE_TLS, type FakeProvider } from '../src/demo/fake-provider.js';

export const message10k = buildMessage(10 * 1024);

/** BENCH_TRANSPORT=graph|gmail sends through the stand-in's Microsoft Graph or Gmail API instead of SMTP. */
export const BENCH_TRANSPORT = (process.env.BENCH_TRANSPORT ?? 'smtp') as TransportName;
if (!['smtp', 'graph', 'gmail'].includes(BENCH_TRANSPORT)) throw new Error(`BENCH_TRANSPORT=${BENCH_TRANSPORT}: use smtp, graph or gmail`);

/** The API's scope for BENCH_TRANSPORT (SMTP's stand-in asks for none). */
const API_SCOPES = { smtp: '', graph: 'https://graph.microsoft.com/Mail.Send offline_access', gmail: 'https://www.googleapis.com/auth/gmail.send' };

/**
 * The account for BENCH_TRANSPORT, as for SMTP (no pace limits: the bench measures the relay, not
 * the provider's ceilings) with the API transport and its scope; nothing to change for SMTP.
 */
function transportAccount(provider: FakeProvider): Record<string, unknown> {
  if (BENCH_TRANSPORT === 'smtp') return {};
  const account = accountFor(provider) as { upstream: Record<string, unknown> };
  // Graph's sent copies are kept: deleting them would add requests of their own to the figures.
  const upstream = { ...account.upstream, transport: BENCH_TRANSPORT, apiUrl: provider.apiUrl, ...(BENCH_TRANSPORT === 'graph' ? { saveToSentItems: true } : {}) };
  return { accounts: { office: { ...account, scopes: API_SCOPES[BENCH_TRANSPORT], upstream } } };
}

/** A scan as a multifunction printer sends it: a line of text and the PDF attached (base64). */
export function buildMessage(bodyBytes: number): Buffer {
  const line = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n'; // 80-byte base64 lines, like an attachment
  const head =
    'From: Scanner <mfp@printers.local>\r\nTo: alice@example.com\r\nSubject: scan\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="scan"\r\n\r\n' +
    '--scan\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nScanned document attached.\r\n' +
    '--scan\r\nContent-Type: application/pdf; name="scan.pdf"\r\nContent-Disposition: attachment; filename="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const body = Buffer.alloc(Math.ceil(bodyBytes / line.length) * line.length, line);
  return Buffer.concat([Buffer.from(head), body, Buffer.from('--scan--\r\n')]);
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
  if (BENCH_TRANSPORT !== 'smtp') return apiSender(provider, accessToken, longSession);
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

/**
 * The baseline of an API transport: the same message straight to the stand-in's Graph sendMail
 * (base64 MIME) or Gmail messages.send (message/rfc822), a new connection per message
 * (printer-style) or kept alive (long session).
 */
function apiSender(provider: FakeProvider, accessToken: string, longSession: boolean): { send: Sender; close(): void } {
  const agent = new http.Agent({ keepAlive: longSession, maxSockets: 1 });
  const graph = BENCH_TRANSPORT === 'graph';
  const path = graph ? `/v1.0/users/${encodeURIComponent(MAILBOX)}/sendMail` : `/upload/gmail/v1/users/${encodeURIComponent(MAILBOX)}/messages/send?uploadType=media`;
  const send: Sender = (raw) =>
    new Promise((resolve, reject) => {
      const body = graph ? Buffer.from(raw.toString('base64')) : raw;
      const request = http.request(`${provider.apiUrl}${path}`, { method: 'POST', agent, headers: { Authorization: `Bearer ${accessToken}`, 'Content-Type': graph ? 'text/plain' : 'message/rfc822', 'Content-Length': body.length } }, (response) => {
        response.resume();
        response.on('end', () => (response.statusCode! < 300 ? resolve() : reject(new Error(`API answered ${response.statusCode}`))));
      });
      request.on('error', reject);
      request.end(body);
    });
  return { send, close: () => agent.destroy() };
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
  // The API transports' tokens are for their API (Graph's audience, Gmail's gmail.send scope).
  const scope = API_SCOPES[BENCH_TRANSPORT];
  const response = await fetch(provider.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', client_id: provider.clientId, client_secret: provider.clientSecret, refresh_token: provider.issueRefreshToken(), ...(scope ? { scope } : {}) }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

export async function startRelay(provider: FakeProvider, extra: Record<string, unknown>): Promise<RelayProcess> {
  // Logging stays at the default level (info: one line per message), as in production.
  const { configFile } = await writeRelayConfig(provider, { ...transportAccount(provider), ...extra });
  const relay = new RelayProcess(configFile);
  await relay.start();
  return relay;
}

