import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { RelayProcess } from '../bench/relay-process.js';
import { stringify } from 'yaml';
import { DEVICE, accountFor, execFileAsync, message, sendRaw, startProvider, startRelay, stopStarted, until, writeRelayConfig, type TestRelay } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';

const CLI = path.resolve('dist/src/cli/main.js');
import { parseConfig } from '../src/config/index.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

describe('reloading the config (SIGHUP)', () => {
  let provider: FakeProvider;
  let relay: TestRelay;

  beforeAll(async () => {
    provider = await startProvider();
    relay = await startRelay(provider);
  });
  afterAll(async () => {
    await relay.stop();
    await provider.stop();
  });

  it('applies new device passwords and credentials, and names what needs a restart', async () => {
    const mail = { from: 'a@printers.local', to: ['b@example.com'], raw: message(['Subject: reload'], 'x') };
    await sendRaw(relay.port, mail);
    const next = parseConfig(
      stringify({
        delivery: 'direct',
        smtp: { host: '127.0.0.1', port: 2525, maxUnauthenticatedPerIp: 500, maxClients: 500 },
        http: { host: '127.0.0.1', port: 0 },
        dataDir: relay.dataDir,
        oauth: { retries: 1, retryDelay: 0.05 },
        accounts: { office: accountFor(provider) },
        users: [{ username: DEVICE.username, password: 'new password', account: 'office' }],
      }),
      path.join(relay.dataDir, 'config.yaml'),
      {},
    );
    expect(relay.app.reload(next)).toEqual(['smtp.port', 'smtp.hostname']);
    await expect(sendRaw(relay.port, mail)).rejects.toMatchObject({ responseCode: 535 });
    await sendRaw(relay.port, mail, { ...DEVICE, password: 'new password' });
    expect(provider.received).toHaveLength(2);
  });
});

describe('SIGHUP to the running daemon', () => {
  afterAll(stopStarted);

  it('reloads users from the edited config file, and keeps running on a broken one', async () => {
    const provider = await startProvider();
    const { configFile } = await writeRelayConfig(provider, { delivery: 'direct' });
    const relay = new RelayProcess(configFile);
    await relay.start();
    try {
      const mail = { from: 'a@printers.local', to: ['b@example.com'], raw: message(['Subject: hup'], 'x') };
      const newcomer = { username: 'scanner-3f', password: 'added later' };
      await expect(sendRaw(relay.port, mail, newcomer)).rejects.toMatchObject({ responseCode: 535 });

      await writeFile(configFile, 'accounts: [this is not valid'); // a half-saved edit
      relay.child!.kill('SIGHUP');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await sendRaw(relay.port, mail); // still serving with the old config

      const good = await writeRelayConfig(provider, { delivery: 'direct', users: [{ ...DEVICE, account: 'office' }, { ...newcomer, account: 'office' }] });
      await writeFile(configFile, (await readFile(good.configFile, 'utf8')).replace(/dataDir: .*/, `dataDir: ${path.dirname(configFile)}`));
      relay.child!.kill('SIGHUP');
      await until(async () => sendRaw(relay.port, mail, newcomer).then(() => true, () => false));
      expect(provider.received.length).toBeGreaterThanOrEqual(2);
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });
});

describe('SIGHUP says what it did', () => {
  afterAll(stopStarted);

  it('applies the network policy live, applies nothing when a certificate is unreadable, and names what needs a restart in `check`', async () => {
    const provider = await startProvider();
    const unauthenticated = { networks: ['127.0.0.0/8'], account: 'office' };
    const { configFile, dataDir } = await writeRelayConfig(provider, { delivery: 'direct', unauthenticated });
    const rewrite = async (extra: Record<string, unknown>) => {
      const next = await writeRelayConfig(provider, { delivery: 'direct', ...extra });
      await writeFile(configFile, (await readFile(next.configFile, 'utf8')).replace(/dataDir: .*/, `dataDir: ${dataDir}`));
    };
    const relay = new RelayProcess(configFile);
    await relay.start();
    const withoutAuth = async () => {
      const { client } = await RawSmtp.connect(relay.port);
      await client.command('EHLO printer');
      const reply = await client.command('MAIL FROM:<alarm@printers.local>');
      client.close();
      return reply;
    };
    try {
      expect(await withoutAuth()).toMatch(/^250 /);
      // After an abuse the admin removes password-less relaying: it must stop at once.
      await rewrite({});
      relay.child!.kill('SIGHUP');
      await until(async () => /^530 /.test(await withoutAuth()));

      // A certificate that cannot be read: nothing of that config applies, not even its users.
      const newcomer = { username: 'scanner-9f', password: 'only with the certificate' };
      await rewrite({ users: [{ ...DEVICE, account: 'office' }, { ...newcomer, account: 'office' }], smtp: { tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' } } });
      relay.child!.kill('SIGHUP');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const mail = { from: 'a@printers.local', to: ['b@example.com'], raw: message(['Subject: hup'], 'x') };
      await expect(sendRaw(relay.port, mail, newcomer)).rejects.toMatchObject({ responseCode: 535 });

      await rewrite({ smtp: { maxClients: 7 }, queue: { retry: { maxAge: '2d' } } });
      relay.child!.kill('SIGHUP');
      await until(async () => (await execFileAsync(process.execPath, [CLI, 'check', '--config', configFile])).stdout.includes('smtp.maxClients'));
      const { stdout } = await execFileAsync(process.execPath, [CLI, 'check', '--config', configFile]);
      expect(stdout).toMatch(/Running relay: running; these changed keys need a restart to take effect: queue\.retry\.maxAge, smtp\.maxClients$/m);
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });
});
