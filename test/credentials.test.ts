import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { accountFor, execFileAsync, message, metric, readyz, sendRaw, startProvider, startRelay, stopStarted, until } from './helpers.js';

const CLI = path.resolve('dist/src/cli/main.js');

/** An app-only (client_credentials) account for the stand-in, with the given credential keys. */
function appAccount(provider: Awaited<ReturnType<typeof startProvider>>, credential: Record<string, unknown>) {
  const { refreshToken: _none, clientSecret: _secret, ...account } = accountFor(provider);
  return { ...account, flow: 'client_credentials', scopes: 'https://outlook.office365.com/.default', ...credential };
}

describe('credentials without stored secrets', () => {
  afterEach(stopStarted);

  it('makes a certificate with `credentials create-certificate`, and the relay signs in with it (PS256, x5t#S256)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-cert-'));
    const configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, stringify({ dataDir: dir, accounts: { office: { provider: 'microsoft', tenant: 'contoso.test', mailbox: 'a@contoso.test', clientId: 'app', clientSecret: 'x' } }, users: [{ username: 'u', password: 'p', account: 'office' }] }), { mode: 0o600 });
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'credentials', 'create-certificate', 'office', '--days', '20', '--config', configFile]);
    const certificateFile = /clientCertificateFile: (\S+)/.exec(stdout)![1];
    const keyFile = /clientKeyFile: (\S+)/.exec(stdout)![1];
    expect(stdout).toMatch(/Upload in Entra: .*\n\s+\S+\.cer\s+\(thumbprint [0-9A-F]{40}/);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);

    const provider = await startProvider({ clientCertificate: await readFile(certificateFile, 'utf8') });
    const relay = await startRelay(provider, { keepAlive: true, account: appAccount(provider, { clientCertificateFile: certificateFile, clientKeyFile: keyFile }) });
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: by certificate'], 'x') });
    expect(provider.received).toHaveLength(1);
    // It expires in 20 days: exposed, and warned about (30 days ahead).
    const expiry = await metric(relay.httpPort, 'smtp_relay_credential_expiry_timestamp_seconds', { account: 'office', credential: 'certificate' });
    expect(expiry * 1000 - Date.now()).toBeGreaterThan(19 * 86_400_000);
    expect(relay.logs.some((line) => line.includes('certificate expires in 20 day(s)'))).toBe(true);
  });

  it('refuses a certificate the app does not know, with the provider text and a hint', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-cert-'));
    const configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, stringify({ dataDir: dir, accounts: { office: { provider: 'microsoft', tenant: 't', mailbox: 'a@b.test', clientId: 'app', clientSecret: 'x' } }, users: [{ username: 'u', password: 'p', account: 'office' }] }), { mode: 0o600 });
    const first = await execFileAsync(process.execPath, [CLI, 'credentials', 'create-certificate', 'office', '--config', configFile]);
    const registered = path.join(dir, 'registered.pem');
    const other = await mkdtemp(path.join(os.tmpdir(), 'relay-cert-'));
    await writeFile(path.join(other, 'config.yaml'), (await readFile(configFile, 'utf8')).replace(dir, other), { mode: 0o600 });
    const second = await execFileAsync(process.execPath, [CLI, 'credentials', 'create-certificate', 'office', '--config', path.join(other, 'config.yaml')]);
    await writeFile(registered, await readFile(/clientCertificateFile: (\S+)/.exec(second.stdout)![1], 'utf8'));
    const provider = await startProvider({ clientCertificate: await readFile(registered, 'utf8') });
    const relay = await startRelay(provider, {
      keepAlive: true,
      account: appAccount(provider, { clientCertificateFile: /clientCertificateFile: (\S+)/.exec(first.stdout)![1], clientKeyFile: /clientKeyFile: (\S+)/.exec(first.stdout)![1] }),
    });
    await until(async () => (await readyz(relay.httpPort)).body.accounts.office.state === 'needs_reauth');
    expect(String((await readyz(relay.httpPort)).body.accounts.office.lastError)).toContain('AADSTS700027');
  });

  it('uses a federated token file (workload identity), re-read for every token request', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-wif-'));
    const tokenFile = path.join(dir, 'azure-identity-token');
    await writeFile(tokenFile, 'federated-token-1\n');
    const provider = await startProvider({ federatedAssertion: 'federated-token-1', tokenLifetime: 1 });
    const relay = await startRelay(provider, { account: appAccount(provider, { clientAssertionFile: tokenFile }) });
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: federated'], 'x') });
    expect(provider.received).toHaveLength(1);
    // The platform rotates the file; the next token request presents the new one.
    (provider as unknown as { options: { federatedAssertion: string } }).options.federatedAssertion = 'federated-token-2';
    await writeFile(tokenFile, 'federated-token-2\n');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: rotated'], 'x') });
    expect(provider.received).toHaveLength(2);
  });

  it('says loudly when a Google app in "Testing" hands out 7-day refresh tokens', async () => {
    const provider = await startProvider({ testingApp: true });
    const relay = await startRelay(provider, { keepAlive: true });
    await until(async () => (await readyz(relay.httpPort)).body.accounts.office.state === 'ready');
    const status = (await readyz(relay.httpPort)).body.accounts.office;
    expect(String(status.warning)).toContain('publish its consent screen');
    const expiry = await metric(relay.httpPort, 'smtp_relay_credential_expiry_timestamp_seconds', { account: 'office', credential: 'refresh_token' });
    expect(Math.round((expiry * 1000 - Date.now()) / 86_400_000)).toBe(7);
    expect(relay.logs.some((line) => line.includes('"level":"error"') && line.includes('Testing'))).toBe(true);
  });

  it('check shows each credential expiry and warns 30 days ahead', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-check-'));
    const configFile = path.join(dir, 'config.yaml');
    const soon = new Date(Date.now() + 10 * 86_400_000).toISOString().slice(0, 10);
    await writeFile(configFile, stringify({ dataDir: dir, accounts: { office: { provider: 'microsoft', tenant: 't', mailbox: 'a@b.test', clientId: 'app', clientSecret: 'x', flow: 'client_credentials', credentialExpiresAt: soon } }, users: [{ username: 'u', password: 'p', account: 'office' }] }), { mode: 0o600 });
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'check', '--config', configFile]);
    expect(stdout).toContain(`client secret  expires ${soon}`);
    expect(stdout).toMatch(/accounts\.office: the client secret expires in 1\d day\(s\)/);
  });
});
