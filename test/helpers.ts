import { execFile, spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Notification } from '../src/notify/index.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/index.js';
import { startApp, type RunningApp } from '../src/app.js';
import { createLogger } from '../src/log.js';
import { hashPassword } from '../src/listener/index.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { DEVICE, accountFor, sendRaw, startProvider as startHarnessProvider } from '../bench/harness.js';
import type { FakeProviderOptions } from '../src/demo/fake-provider.js';

export const execFileAsync = promisify(execFile);

const CLI = path.resolve('dist/src/cli/main.js');

/** Runs the built command line as a user would, with only PATH (and what the test adds) in its environment. */
export async function cli(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...options.env }, cwd: options.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}
export { MAILBOX, DEVICE, accountFor, freePort, writeRelayConfig, sendRaw } from '../bench/harness.js';

/** The console's admin login in tests (actions that change mail need it). */
export const ADMIN = { username: 'admin', password: 'admin password of the tests' };
export const ADMIN_AUTHORIZATION = `Basic ${Buffer.from(`${ADMIN.username}:${ADMIN.password}`).toString('base64')}`;
let adminHash: Promise<string> | undefined;

/** Prometheus' own promtool, with `input` on its standard input. */
export function promtool(args: string[], input = ''): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
    child.stdin.end(input);
  });
}

/** A console action as an administrator takes it: the page's CSRF token and cookie, then the form. */
export async function consolePost(httpPort: number, path: string, fields: Record<string, string>): Promise<string> {
  const page = await fetch(`http://127.0.0.1:${httpPort}/`, { headers: { authorization: ADMIN_AUTHORIZATION } });
  const cookie = String(page.headers.get('set-cookie')).split(';')[0];
  const csrf = /name="csrf" value="([^"]+)"/.exec(await page.text())![1];
  const response = await fetch(`http://127.0.0.1:${httpPort}${path}`, { method: 'POST', headers: { cookie, authorization: ADMIN_AUTHORIZATION, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, ...fields }) });
  return response.text();
}
/** `http:` for a test relay whose console takes actions (loopback, port 0, the admin password). */
export async function adminHttp(): Promise<Record<string, unknown>> {
  adminHash ??= hashPassword(ADMIN.password);
  return { host: '127.0.0.1', port: 0, adminPasswordHash: await adminHash };
}

/** Everything a test started, so one afterEach(stopStarted) tears it down (newest first). */
const started: (() => Promise<void>)[] = [];

function once(stop: () => Promise<void>): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => (stopping ??= stop());
}

export async function stopStarted(): Promise<void> {
  while (started.length) await started.pop()!();
}

export async function startProvider(options: Partial<FakeProviderOptions> = {}): Promise<FakeProvider> {
  const provider = await startHarnessProvider(options);
  const stop = once(provider.stop.bind(provider));
  provider.stop = stop;
  started.push(stop);
  return provider;
}

export interface TestRelay {
  app: RunningApp;
  port: number;
  httpPort: number;
  dataDir: string;
  logs: string[];
  stop(): Promise<void>;
}

export interface RelayOptions {
  account?: Record<string, unknown>;
  users?: Record<string, unknown>[];
  top?: Record<string, unknown>;
  dataDir?: string;
  keepAlive?: boolean;
  env?: NodeJS.ProcessEnv;
}

export async function startRelay(provider: FakeProvider, options: RelayOptions = {}): Promise<TestRelay> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'relay-test-')));
  // Every test client comes from 127.0.0.1, as a whole office would from behind one NAT: under
  // whatever smtp a test gives, the front door's per-address limits are the test's to set.
  const { smtp = { host: '127.0.0.1', port: 0, hostname: 'relay.test', maxConnectionsPerIp: 500 }, ...top } = (options.top ?? {}) as { smtp?: Record<string, unknown> };
  const yaml = stringify({
    delivery: 'direct', // the pass-through contract; queue tests ask for queue
    http: { host: '127.0.0.1', port: 0 },
    dataDir,
    oauth: { retries: 1, retryDelay: 0.05 },
    accounts: { office: options.account ?? accountFor(provider) },
    users: options.users ?? [{ ...DEVICE, account: 'office' }],
    ...top,
    smtp: { maxUnauthenticatedPerIp: 500, maxClients: 500, ...smtp },
  });
  const loaded = parseConfig(yaml, path.join(dataDir, 'config.yaml'), options.env ?? {});
  const logs: string[] = [];
  const logger = createLogger('trace', { write: (line: string) => void logs.push(line) });
  const app = await startApp(loaded, { logger, keepAlive: options.keepAlive ?? false });
  const stop = once(async () => {
    await app.stop();
    if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
  });
  started.push(stop);
  return { app, port: app.smtpPort, httpPort: app.httpPort, dataDir, logs, stop };
}

/** The device's reply when the relay refuses (e.g. "451 4.7.0 ..."). */
export async function sendRawExpectingError(port: number, message: { from: string; to: string[]; raw: string | Buffer }): Promise<string> {
  try {
    await sendRaw(port, message);
  } catch (error) {
    return (error as { response?: string }).response ?? String(error);
  }
  throw new Error('the relay accepted a message it should have refused');
}

export async function metric(httpPort: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const wanted = Object.entries(labels);
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (wanted.every(([key, value]) => have[key] === value)) return Number(match[3]);
  }
  return NaN;
}

interface ReadyzBody {
  status: string;
  accounts: Record<string, Record<string, unknown>>;
}

/** /readyz/accounts: whether every account can send, and each account's state. */
export async function readyz(httpPort: number): Promise<{ status: number; body: ReadyzBody }> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/readyz/accounts`);
  return { status: response.status, body: (await response.json()) as ReadyzBody };
}

/** Splits a received message at the blank line that ends its header. */
export function splitMessage(raw: Buffer): { header: string; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  return { header: raw.subarray(0, end + 2).toString('utf8'), body: raw.subarray(end + 4) };
}

export function headerValues(header: string, name: string): string[] {
  const unfolded = header.replace(/\r\n[ \t]+/g, ' ');
  return unfolded
    .split('\r\n')
    .filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((line) => line.slice(name.length + 1).trim());
}

export const message = (headers: string[], body: string) => [...headers, '', body].join('\r\n');

/** A scan as a multifunction printer sends it: a short text part and, if given, one base64 attachment. */
export function mime(subject: string, attachment?: { name: string; type: string; bytes: number }): string {
  const parts = [`From: Scanner <mfp@printers.local>`, `Subject: ${subject}`, 'MIME-Version: 1.0'];
  if (!attachment) return message(parts, 'page');
  return [
    ...parts,
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain',
    '',
    'Scanned document attached.',
    '--b1',
    `Content-Type: ${attachment.type}; name="${attachment.name}"`,
    `Content-Disposition: attachment; filename="${attachment.name}"`,
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.alloc(attachment.bytes, 7).toString('base64').replace(/.{76}/g, '$&\r\n'),
    '--b1--',
    '',
  ].join('\r\n');
}

/** An incoming-webhook stand-in (Slack, Teams): collects what is POSTed; answers as told. */
export async function webhookReceiver(status = 200): Promise<{ url: string; received: Notification[]; authorizations: (string | undefined)[]; close(): Promise<void> }> {
  const received: Notification[] = [];
  const authorizations: (string | undefined)[] = [];
  const server = http.createServer((request, response) => {
    authorizations.push(request.headers.authorization);
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      received.push(JSON.parse(body) as Notification);
      response.writeHead(status).end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T000/B000/secret-part`, received, authorizations, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Polls until the condition holds (for what happens asynchronously: deliveries, state changes). */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
