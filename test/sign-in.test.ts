import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { MAILBOX, accountFor, message, metric, sendRaw, startProvider, startRelay, type TestRelay, until, stopStarted } from './helpers.js';
import { parseConfig, type ResolvedAccount } from '../src/config/index.js';
import { deviceCodeSignIn } from '../src/oauth/sign-in.js';
import { TokenStore, TokenStoreError } from '../src/oauth/token-store.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const CLI = path.resolve('dist/src/cli/main.js');
const scan = { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', 'Subject: after sign-in'], 'x') };

function resolvedAccount(provider: FakeProvider): ResolvedAccount {
  const { refreshToken: _none, ...account } = accountFor(provider);
  const yaml = stringify({ accounts: { office: { ...account, authorizeUrl: provider.authorizeUrl, deviceCodeUrl: provider.deviceCodeUrl } }, users: [{ username: 'u', password: 'p', account: 'office' }] });
  return parseConfig(yaml, '/tmp/config.yaml', {}).accounts.get('office')!;
}


describe('signing an account in', () => {
  let provider: FakeProvider;
  let relay: TestRelay | undefined;

  afterEach(stopStarted);

  it('device code: waits while pending, slows down when told, and returns the refresh token', async () => {
    provider = await startProvider();
    provider.devicePollScript.push('authorization_pending', 'slow_down');
    const waits: number[] = [];
    let shown = '';
    const token = await deviceCodeSignIn(
      resolvedAccount(provider),
      (prompt) => {
        shown = prompt.userCode;
        expect(prompt.verificationUri).toMatch(/devicelogin$/);
      },
      async (ms) => {
        waits.push(ms);
        if (waits.length === 3) provider.decideDeviceCode(shown, 'approved');
      },
    );
    expect(token).toMatch(/^rt-/);
    expect(waits).toEqual([1000, 1000, 6000]); // interval 1 s; slow_down adds 5 s (RFC 8628 §3.5)
    expect(provider.devicePolls).toBe(3);
  });

  it('device code: an expired or declined code ends with a clear message', async () => {
    provider = await startProvider();
    provider.devicePollScript.push('expired_token');
    await expect(deviceCodeSignIn(resolvedAccount(provider), () => undefined, async () => undefined)).rejects.toMatchObject({ message: 'the code expired before it was entered' });
    let code = '';
    const declined = deviceCodeSignIn(resolvedAccount(provider), (prompt) => (code = prompt.userCode), async () => provider.decideDeviceCode(code, 'denied'));
    await expect(declined).rejects.toMatchObject({ message: 'the sign-in was declined', hint: expect.stringContaining('accept the permissions') });
  });

  it('login (device code) stores the token, and a running relay holding mail for the account delivers it', async () => {
    provider = await startProvider();
    const { refreshToken: _none, ...account } = accountFor(provider);
    relay = await startRelay(provider, {
      account: { ...account, deviceCodeUrl: provider.deviceCodeUrl },
      top: { delivery: 'queue', oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 60 } },
    });
    await sendRaw(relay.port, scan);
    await until(async () => (await metric(relay!.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);

    const configFile = path.join(relay.dataDir, 'login.yaml');
    await writeFile(configFile, stringify({ dataDir: relay.dataDir, accounts: { office: { ...account, deviceCodeUrl: provider.deviceCodeUrl } }, users: [{ username: 'u', password: 'p', account: 'office' }] }));
    const child = spawn(process.execPath, [CLI, 'login', 'office', '--config', configFile], { env: { PATH: process.env.PATH } });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    await until(() => /Enter the code (\w+)/.test(stdout));
    provider.decideDeviceCode(/Enter the code (\w+)/.exec(stdout)![1], 'approved');
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    expect(stdout).toContain('Signed in.');
    // The relay notices the new token itself (no restart, long before its 60 s recheck).
    await until(() => provider.received.length === 1);
    expect(provider.received[0].envelope.from).toBe(MAILBOX);
  });

  it('login --browser: PKCE through a loopback redirect', async () => {
    provider = await startProvider();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-login-'));
    const { refreshToken: _none, ...account } = accountFor(provider);
    const configFile = path.join(dataDir, 'config.yaml');
    await writeFile(configFile, stringify({ dataDir, accounts: { office: { ...account, authorizeUrl: provider.authorizeUrl } }, users: [{ username: 'u', password: 'p', account: 'office' }] }));
    const child = spawn(process.execPath, [CLI, 'login', 'office', '--browser', '--config', configFile], { env: { PATH: process.env.PATH } });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    await until(() => /^\s+(http\S+)$/m.test(stdout));
    const authorizeUrl = new URL(/^\s+(http\S+)$/m.exec(stdout)![1]);
    expect(authorizeUrl.searchParams.get('code_challenge_method')).toBe('S256');
    // The person's browser: the provider's page, Accept, then back to the loopback redirect.
    const accepted = await fetch(authorizeUrl, { method: 'POST', body: new URLSearchParams([...authorizeUrl.searchParams, ['decision', 'accept']]), redirect: 'manual' });
    const callback = await fetch(accepted.headers.get('location')!);
    expect(await callback.text()).toContain('Signed in');
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    const stored = JSON.parse(await readFile(path.join(dataDir, 'tokens', 'office.json'), 'utf8')) as { refreshToken: string };
    expect(stored.refreshToken).toMatch(/^rt-/);
  });

  it('Google Workspace service account: a signed JWT instead of a user sign-in', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    provider = await startProvider({ serviceAccountPublicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    const keyFile = path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-sa-')), 'key.json');
    await writeFile(keyFile, JSON.stringify({ client_email: 'relay@project.iam.gserviceaccount.com', private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }) }));
    const { refreshToken: _none, clientSecret: _secret, ...account } = accountFor(provider);
    relay = await startRelay(provider, { account: { ...account, provider: 'custom', flow: 'service_account', serviceAccountKeyFile: keyFile } });
    await sendRaw(relay.port, scan);
    expect(provider.received).toHaveLength(1);
  });
});

describe('the token store', () => {
  const record = { refreshToken: 'rt-secret-value', seed: '', updatedAt: '2026-11-22T00:00:00.000Z' };

  async function storeDir() {
    return path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-store-')), 'tokens');
  }

  it('encrypts with tokenKey (mode 0600, no token in the file) and reads back', async () => {
    const dir = await storeDir();
    const store = new TokenStore(dir, 'a long random token key for tests');
    await store.write('office', record);
    const text = await readFile(store.fileFor('office'), 'utf8');
    expect(text).not.toContain('rt-secret-value');
    expect(JSON.parse(text)).toMatchObject({ cipher: 'aes-256-gcm' });
    expect((await stat(store.fileFor('office'))).mode & 0o777).toBe(0o600);
    expect(await store.read('office')).toEqual(record);
  });

  it('says clearly when the key is wrong or missing or the file was altered, and never overwrites it', async () => {
    const dir = await storeDir();
    await new TokenStore(dir, 'the right key, long enough').write('office', record);
    await expect(new TokenStore(dir, 'a wrong key, long enough').read('office')).rejects.toThrow(/cannot be decrypted: wrong tokenKey, or the file was altered/);
    await expect(new TokenStore(dir).read('office')).rejects.toThrow(/is encrypted but no tokenKey is configured/);
    const file = path.join(dir, 'office.json');
    const sealed = JSON.parse(await readFile(file, 'utf8')) as { data: string };
    const altered = Buffer.from(sealed.data, 'base64');
    altered[0] ^= 1;
    await writeFile(file, JSON.stringify({ ...sealed, data: altered.toString('base64') }));
    await expect(new TokenStore(dir, 'the right key, long enough').read('office')).rejects.toBeInstanceOf(TokenStoreError);
    // A write through a store that cannot read the file keeps the old file aside.
    await new TokenStore(dir, 'a wrong key, long enough').write('office', { ...record, refreshToken: 'rt-new' });
    expect((await readdir(dir)).filter((name) => name.startsWith('office.json.unreadable-'))).toHaveLength(1);
  });

  it('tokens encrypt turns a plain store into an encrypted one', async () => {
    const dataDir = path.dirname(await storeDir());
    await new TokenStore(path.join(dataDir, 'tokens')).write('office', record);
    const configFile = path.join(dataDir, 'config.yaml');
    await writeFile(
      configFile,
      stringify({ dataDir, tokenKey: '${KEY}', accounts: { office: { provider: 'google', mailbox: 'a@b.c', clientId: 'x', refreshToken: 'r' } }, users: [{ username: 'u', password: 'p', account: 'office' }] }),
    );
    const child = spawn(process.execPath, [CLI, 'tokens', 'encrypt', '--config', configFile], { env: { PATH: process.env.PATH, KEY: 'k'.repeat(32) } });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    expect(stdout).toContain('1 token file(s) now encrypted');
    expect(await new TokenStore(path.join(dataDir, 'tokens'), 'k'.repeat(32)).read('office')).toEqual(record);
  });
});
