import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { execFileAsync, startProvider, stopStarted, until, writeRelayConfig } from './helpers.js';
import { RelayProcess } from '../bench/relay-process.js';
import { parseConfig } from '../src/config/index.js';
import { TokenStore } from '../src/oauth/token-store.js';
import { postForm } from '../src/oauth/token-endpoint.js';

const CLI = path.resolve('dist/src/cli/main.js');
const record = { refreshToken: 'rt-secret-value', seed: '', updatedAt: '2026-11-22T00:00:00.000Z' };
const KEY = 'a long random token key for tests';

async function tokensDir(): Promise<string> {
  return path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-store-')), 'tokens');
}

async function serve(handler: http.RequestListener): Promise<{ url: string; close(): void; hits: string[] }> {
  const hits: string[] = [];
  const server = http.createServer((request, response) => {
    hits.push(`${request.method} ${request.url}`);
    handler(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close(), hits };
}

describe('the token store', () => {
  it('refuses a GCM tag shorter than 16 bytes', async () => {
    const dir = await tokensDir();
    const store = new TokenStore(dir, KEY);
    await store.write('office', record);
    const file = store.fileFor('office');
    const sealed = JSON.parse(await readFile(file, 'utf8')) as { tag: string };
    await writeFile(file, JSON.stringify({ ...sealed, tag: Buffer.from(sealed.tag, 'base64').subarray(0, 4).toString('base64') }));
    await expect(new TokenStore(dir, KEY).read('office')).rejects.toThrow(/cannot be decrypted/);
  });

  it('refuses a plain token file while tokenKey is set, and points to tokens encrypt', async () => {
    const dir = await tokensDir();
    await new TokenStore(dir).write('office', record);
    await expect(new TokenStore(dir, KEY).read('office')).rejects.toMatchObject({ hint: expect.stringContaining('tokens encrypt') });
  });
});

describe('the token endpoint client', () => {
  it('does not follow a redirect with the client secret, and says where it pointed', async () => {
    const elsewhere = await serve((_request, response) => response.end('{}'));
    const redirecting = await serve((_request, response) => response.writeHead(307, { location: `${elsewhere.url}/steal` }).end());
    try {
      const reply = await postForm(`${redirecting.url}/token`, new URLSearchParams({ client_secret: 'secret' }));
      expect(reply.body).toMatchObject({ error: 'redirected' });
      expect(String(reply.body.error_description)).toContain('/steal');
      expect(elsewhere.hits).toEqual([]);
    } finally {
      redirecting.close();
      elsewhere.close();
    }
  });

  it('reads at most a bounded answer', async () => {
    const flood = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(`{"access_token":"${'x'.repeat(2_000_000)}"}`);
    });
    try {
      expect((await postForm(`${flood.url}/token`, new URLSearchParams())).body).toMatchObject({ error: 'response_too_large' });
    } finally {
      flood.close();
    }
  });
});

describe('config warnings', () => {
  it('warns when the config or a *File secret is readable by the group or by everyone', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-config-'));
    const secret = path.join(dir, 'client-secret');
    await writeFile(secret, 'secret\n');
    await chmod(secret, 0o640);
    const file = path.join(dir, 'config.yaml');
    await writeFile(file, stringify({ accounts: { office: { provider: 'google', mailbox: 'a@b.c', clientId: 'x', clientSecretFile: secret, refreshToken: 'r' } }, users: [{ username: 'u', password: 'p', account: 'office' }] }));
    await chmod(file, 0o644);
    const { warnings } = parseConfig(await readFile(file, 'utf8'), file, {});
    expect(warnings).toContainEqual(expect.stringMatching(/config\.yaml is readable by its group and every user/));
    expect(warnings).toContainEqual(expect.stringMatching(/clientSecretFile: .*client-secret is readable by its group; chmod 600/));
  });
});

describe('commands beside a running daemon', () => {
  afterEach(stopStarted);

  it('tokens encrypt goes through the daemon, which keeps using the new key', async () => {
    const provider = await startProvider();
    const { configFile, dataDir } = await writeRelayConfig(provider, {});
    const relay = new RelayProcess(configFile);
    await relay.start();
    try {
      const store = new TokenStore(path.join(dataDir, 'tokens'), KEY);
      await until(async () => (await store.accounts()).length === 1); // the first refresh saves the rotated token
      await writeFile(configFile, (await readFile(configFile, 'utf8')) + `tokenKey: "${KEY}"\n`);
      const { stdout } = await execFileAsync(process.execPath, [CLI, 'tokens', 'encrypt', '--config', configFile]);
      expect(stdout).toMatch(/token file\(s\) now encrypted with the configured tokenKey \(by the running relay\)/);
      await expect(store.read('office')).resolves.toHaveProperty('refreshToken');
      expect(await readFile(store.fileFor('office'), 'utf8')).toContain('aes-256-gcm');
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });

  it('health follows the configured http.port', async () => {
    const provider = await startProvider();
    const probe = await serve((_request, response) => response.end());
    const port = Number(new URL(probe.url).port);
    probe.close(); // a free port, as if 9464 were taken and the admin moved to another
    const { configFile } = await writeRelayConfig(provider, { http: { host: '0.0.0.0', port } });
    await expect(execFileAsync(process.execPath, [CLI, 'health', '--config', configFile])).rejects.toMatchObject({ code: 1 });
    const relay = new RelayProcess(configFile);
    await relay.start();
    try {
      await expect(execFileAsync(process.execPath, [CLI, 'health', '--config', configFile])).resolves.toBeDefined();
    } finally {
      await relay.stop('SIGTERM');
    }
  });
});
