import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import nodemailer from 'nodemailer';
import { stringify } from 'yaml';
import { FakeProvider, FAKE_TLS, type FakeProviderOptions } from '../src/demo/fake-provider.js';

/** What tests and benchmarks share: a stand-in provider, a relay config for it, a device client. */

export const MAILBOX = 'scanner@contoso.test';
export const DEVICE = { username: 'printer-2f', password: 'correct horse battery staple' };

export async function startProvider(options: Partial<FakeProviderOptions> = {}): Promise<FakeProvider> {
  return new FakeProvider({ mailboxes: [MAILBOX], ...options }).start();
}

/** The account block pointing at a stand-in provider, as an administrator would write it. */
export function accountFor(provider: FakeProvider, refreshToken = provider.issueRefreshToken()): Record<string, unknown> {
  return {
    provider: 'custom',
    mailbox: MAILBOX,
    clientId: provider.clientId,
    clientSecret: provider.clientSecret,
    refreshToken,
    tokenUrl: provider.tokenUrl,
    upstream: { host: '127.0.0.1', port: provider.smtpPort, ca: FAKE_TLS.ca(), timeout: 10 },
  };
}

/**
 * The account block an administrator writes for the real provider the stand-in plays (the
 * microsoft or google preset, with its pace, session and recipient limits), pointed at the stand-in.
 */
export function presetAccountFor(provider: FakeProvider, refreshToken = provider.issueRefreshToken()): Record<string, unknown> {
  const preset = provider.profile.name === 'google' ? { provider: 'google' } : { provider: 'microsoft', tenant: 'contoso.test' };
  return { ...accountFor(provider, refreshToken), ...preset };
}

/** A config file for a relay run as its own process (queue mode, ports chosen by the system). */
export async function writeRelayConfig(provider: FakeProvider, extra: Record<string, unknown> = {}): Promise<{ configFile: string; dataDir: string }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-process-'));
  const configFile = path.join(dataDir, 'config.yaml');
  const { smtp, ...rest } = extra as { smtp?: Record<string, unknown> };
  const config = {
    delivery: 'queue',
    // Every client here comes from 127.0.0.1, as a whole office behind one NAT would.
    smtp: { host: '127.0.0.1', port: 0, maxClients: 200, maxUnauthenticatedPerIp: 1000, ...smtp },
    http: { host: '127.0.0.1', port: 0 },
    dataDir,
    log: { level: 'info' },
    accounts: { office: accountFor(provider) },
    users: [{ ...DEVICE, account: 'office' }],
    ...rest,
  };
  await writeFile(configFile, stringify(config), { mode: 0o600 });
  return { configFile, dataDir };
}

/** A device that speaks SMTP with AUTH (nodemailer as the client, one connection per message). */
export async function sendRaw(port: number, message: { from: string; to: string[]; raw: string | Buffer }, auth = DEVICE) {
  const device = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, auth: { user: auth.username, pass: auth.password } });
  try {
    return await device.sendMail({ envelope: { from: message.from, to: message.to }, raw: message.raw });
  } finally {
    device.close();
  }
}


/** A loopback port free right now, for servers that must be told their port (Postfix, redis-server). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
