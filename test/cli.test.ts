import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { DEVICE, accountFor, cli, execFileAsync, message, sendRaw, startProvider, startRelay } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

describe('command line', () => {
  let provider: FakeProvider;
  let dir: string;

  beforeAll(async () => {
    provider = await startProvider();
    dir = await mkdtemp(path.join(os.tmpdir(), 'relay-cli-'));
  });
  afterAll(async () => provider.stop());

  async function writeConfig(name: string, config: Record<string, unknown>) {
    const file = path.join(dir, name);
    await writeFile(file, stringify(config), { mode: 0o600 });
    return file;
  }

  it('check lists every problem with its key path and the fix, and exits 1', async () => {
    const file = await writeConfig('broken.yaml', {
      smtp: { port: 2525, maxMessageSize: 'lots' },
      accounts: { office: { provider: 'microsoft', mailbox: 'scanner@contoso.com', clientId: 'x', clientSecret: '${OFFICE_SECRET}', refreshToken: 'rt' } },
      users: [{ username: 'printer', password: 'p', account: 'ofice' }],
      smpt: {},
    });
    const result = await cli(['check', '--config', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('accounts.office.clientSecret: environment variable OFFICE_SECRET is not set');
    expect(result.stderr).toContain('accounts.office.tenant: required for provider microsoft');
    expect(result.stderr).toContain('smtp.maxMessageSize: "lots" is not a size');
    expect(result.stderr).toContain('users[0].account: no account named "ofice"; accounts are: office');
    expect(result.stderr).toContain('unknown key(s) smpt');
  });

  it('check prints listeners, accounts, users and token state for a good config', async () => {
    const file = await writeConfig('good.yaml', {
      accounts: { office: { provider: 'microsoft', tenant: 'contoso.onmicrosoft.com', mailbox: 'scanner@contoso.com', clientId: 'x', refreshToken: '${RT:-none}' } },
      users: [{ username: 'printer', passwordHash: 'scrypt$32768$8$1$c2FsdA==$aGFzaA==', account: 'office', expectEvery: '1d' }],
      notify: { webhook: 'https://hooks.example.com/services/T0/B0/secret-part' },
    });
    const result = await cli(['check', '--config', file]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Log {4}delivery log in \S+trace, kept 30 days, at most 1024MB/);
    expect(result.stdout).toContain('Notify webhook at hooks.example.com; the same problem at most every 60 min, 20 an hour');
    expect(result.stdout).not.toContain('secret-part');
    expect(result.stdout).toContain('flagged when silent over 24 h');
    expect(result.stdout).toContain('SMTP   0.0.0.0:2525');
    expect(result.stdout).toContain('office: scanner@contoso.com (microsoft, refresh_token)');
    expect(result.stdout).toContain('https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token');
    expect(result.stdout).toContain('smtp.office365.com:587');
    expect(result.stdout).toContain('printer → office');
  });

  it('hash-password prints a hash that the relay accepts, and reads *File secrets', async () => {
    const hashed = await cli(['hash-password'], { input: `${DEVICE.password}\n` });
    expect(hashed.code).toBe(0);
    const hash = hashed.stdout.trim();
    expect(hash).toMatch(/^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(hash).not.toContain(DEVICE.password);

    const secretFile = path.join(dir, 'client-secret');
    await writeFile(secretFile, `${provider.clientSecret}\n`);
    const { clientSecret: _unused, ...account } = accountFor(provider);
    const relay = await startRelay(provider, { account: { ...account, clientSecretFile: secretFile }, users: [{ username: DEVICE.username, passwordHash: hash, account: 'office' }] });
    try {
      await sendRaw(relay.port, { from: 'a@printers.local', to: ['b@example.com'], raw: message(['Subject: hashed'], 'x') });
      await expect(sendRaw(relay.port, { from: 'a@printers.local', to: ['b@example.com'], raw: 'x' }, { ...DEVICE, password: 'wrong' })).rejects.toMatchObject({ responseCode: 535 });
    } finally {
      await relay.stop();
    }
  });

  it('demo runs the whole path in one command and tells the user nothing leaves the machine', async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'relay-demo-'));
    const child = spawn(process.execPath, [path.resolve('dist/src/cli/main.js'), 'demo', '--port', '0', '--http-port', '0'], { cwd, env: { PATH: process.env.PATH } });
    try {
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      const deadline = Date.now() + 15_000;
      while (!/Press Ctrl\+C/.test(stdout) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(stdout).toContain('nothing leaves this machine');
      expect(stdout).toMatch(/Username\s+demo/);
      expect(stdout).toMatch(/Password\s+demo-password/);
      const port = /swaks --server 127\.0\.0\.1:(\d+)/.exec(stdout)![1];
      // Its password is published: it listens on 127.0.0.1 only, and says how to open it up.
      expect(stdout).toContain('smtp-oauth-relay demo --host 0.0.0.0');
      const net = await import('node:net');
      const elsewhere = await new Promise<string>((resolve) => net.connect(Number(port), '127.0.0.2').once('connect', () => resolve('connected')).once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error')));
      expect(elsewhere).toBe('ECONNREFUSED');
      const swaks = await execFileAsync('swaks', ['--server', `127.0.0.1:${port}`, '--auth', 'LOGIN', '--auth-user', 'demo', '--auth-password', 'demo-password', '--from', 'printer@example.com', '--to', 'you@example.com']);
      expect(swaks.stdout).toContain('250 2.6.0 Ok: queued as');
      const outbox = path.join(cwd, 'data', 'demo-outbox');
      const until = Date.now() + 10_000;
      while ((await readdir(outbox).catch(() => [])).length === 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await readdir(outbox)).toHaveLength(1);
      // Its console changes mail behind a password of its own, printed with the rest.
      const [, httpPort, adminPassword] = /Console http:\/\/127\.0\.0\.1:(\d+)\/\s+user admin, password (\S+)/.exec(stdout)!;
      expect((await fetch(`http://127.0.0.1:${httpPort}/`)).status).toBe(401);
      const console = await fetch(`http://127.0.0.1:${httpPort}/`, { headers: { authorization: `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}` } });
      expect(console.status).toBe(200);
      expect(await console.text()).toContain('Send test message');
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('close', resolve));
    }
  });
});

describe('config.example.yaml', () => {
  it('is a valid config once its secrets are in the environment', async () => {
    const result = await cli(['check', '--config', 'config.example.yaml'], {
      env: { OFFICE_CLIENT_SECRET: 's', OFFICE_REFRESH_TOKEN: 'r', PRINTER_2F_PASSWORD: 'p' },
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('printer-2f → office');
  });
});
