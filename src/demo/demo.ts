import path from 'node:path';
import { stringify } from 'yaml';
import { parseConfig, type TransportName } from '../config/index.js';
import { startApp, type RunningApp } from '../app.js';
import { randomBytes } from 'node:crypto';
import { hashPassword } from '../listener/index.js';
import { FakeProvider, FAKE_TLS } from './fake-provider.js';

export const DEMO_USER = { username: 'demo', password: 'demo-password' };
const DEMO_MAILBOX = 'scanner@demo.invalid';

export interface DemoOptions {
  /** Whose wire the stand-in speaks, and which preset the demo account uses. */
  provider: 'microsoft' | 'google';
  /** How the demo account sends: SMTP (default), or the stand-in's Microsoft Graph or Gmail API. */
  transport?: TransportName;
  dataDir: string;
  smtpHost: string;
  smtpPort: number;
  httpHost: string;
  httpPort: number;
  logLevel: string;
}

export interface RunningDemo {
  app: RunningApp;
  /** The console's admin password, new for each run (printed in the banner). */
  adminPassword: string;
  provider: FakeProvider;
  outboxDir: string;
  banner: string;
  stop(): Promise<void>;
}

/** The relay wired to a local stand-in provider: the whole path, with nothing leaving the machine. */
export async function startDemo(options: DemoOptions): Promise<RunningDemo> {
  const outboxDir = path.resolve(options.dataDir, 'demo-outbox');
  const provider = await new FakeProvider({ profile: options.provider, mailboxes: [DEMO_MAILBOX], outboxDir, tokenLifetime: 3600 }).start();
  // The console changes mail only behind a password: the demo makes one and prints it.
  const adminPassword = randomBytes(12).toString('base64url');
  const configText = stringify({
    smtp: { host: options.smtpHost, port: options.smtpPort },
    http: { host: options.httpHost, port: options.httpPort, adminPasswordHash: await hashPassword(adminPassword) },
    dataDir: path.resolve(options.dataDir),
    log: { level: options.logLevel },
    // The console's timeline also shows what the stand-in's Exchange did with each message.
    ...(options.provider === 'microsoft' ? { trace: { providerLookup: true } } : {}),
    accounts: {
      // The provider's preset (its pace, sessions and recipient limits), pointed at the stand-in.
      demo: {
        provider: options.provider,
        ...(options.provider === 'microsoft' ? { tenant: 'demo.invalid' } : {}),
        mailbox: DEMO_MAILBOX,
        clientId: provider.clientId,
        clientSecret: provider.clientSecret,
        flow: 'refresh_token',
        refreshToken: provider.issueRefreshToken(),
        tokenUrl: provider.tokenUrl,
        upstream: { transport: options.transport ?? 'smtp', apiUrl: provider.apiUrl, host: '127.0.0.1', port: provider.smtpPort, ca: FAKE_TLS.ca() },
      },
    },
    users: [{ ...DEMO_USER, account: 'demo' }],
  });
  const loaded = parseConfig(configText, '(built-in demo)');
  loaded.warnings = [];
  const app = await startApp(loaded);
  return {
    app,
    adminPassword,
    provider,
    outboxDir,
    banner: demoBanner(options, app.smtpPort, app.httpPort, outboxDir, adminPassword),
    async stop() {
      await app.stop();
      await provider.stop();
    },
  };
}

const TRANSPORT_NAMES: Record<TransportName, string> = { smtp: 'SMTP with XOAUTH2', graph: 'Microsoft Graph sendMail', gmail: 'the Gmail API' };

function demoBanner(options: DemoOptions, smtpPort: number, httpPort: number, outboxDir: string, adminPassword: string): string {
  const host = options.smtpHost;
  const local = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return [
    '',
    '  smtp-oauth-relay DEMO: nothing leaves this machine.',
    `  The relay runs against a built-in stand-in for ${options.provider === 'google' ? 'Gmail' : 'Exchange Online'} (an OAuth token endpoint, a`,
    `  submission server and its HTTP mail API on 127.0.0.1, speaking its wire and replies), sending through ${TRANSPORT_NAMES[options.transport ?? 'smtp']}.`,
    '  What it "delivers" is written to',
    `  ${outboxDir}`,
    '',
    '  Point a device or mail client at:',
    `    SMTP server   ${host === '0.0.0.0' || host === '::' ? "this machine's address" : host}, port ${smtpPort} (no TLS)`,
    `    Username      ${DEMO_USER.username}`,
    `    Password      ${DEMO_USER.password}`,
    '    Auth          PLAIN or LOGIN',
    '',
    '  Try it:',
    `    swaks --server ${local}:${smtpPort} --auth PLAIN --auth-user ${DEMO_USER.username} --auth-password ${DEMO_USER.password} \\`,
    '          --from printer@example.com --to you@example.com',
    '',
    `  Console http://${local}:${httpPort}/   user admin, password ${adminPassword}`,
    "          (every message's timeline: Messages, or smtp-oauth-relay trace)",
    `  Metrics http://${local}:${httpPort}/metrics   Accounts http://${local}:${httpPort}/readyz/accounts`,
    ...(local === '127.0.0.1' || local === '::1' || local === 'localhost'
      ? ['  Only this machine can connect. To let a printer on the LAN try it: smtp-oauth-relay demo --host 0.0.0.0', '  (the demo password above is public: do not leave it open on a network you do not trust).']
      : ['  WARNING: the demo listens on the network with a published password; stop it when done.']),
    '  For real use, write a config.yaml (see config.example.yaml) and run: smtp-oauth-relay serve',
    '  Press Ctrl+C to stop.',
    '',
  ].join('\n');
}
