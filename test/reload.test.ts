import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { stringify } from 'yaml';
import { DEVICE, accountFor, message, sendRaw, startProvider, startRelay, type TestRelay } from './helpers.js';
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
        smtp: { host: '127.0.0.1', port: 2525 },
        http: { host: '127.0.0.1', port: 0 },
        dataDir: relay.dataDir,
        oauth: { retries: 1, retryDelay: 0.05 },
        accounts: { office: accountFor(provider) },
        users: [{ username: DEVICE.username, password: 'new password', account: 'office' }],
      }),
      path.join(relay.dataDir, 'config.yaml'),
      {},
    );
    expect(relay.app.reload(next)).toEqual(['smtp']);
    await expect(sendRaw(relay.port, mail)).rejects.toMatchObject({ responseCode: 535 });
    await sendRaw(relay.port, mail, { ...DEVICE, password: 'new password' });
    expect(provider.received).toHaveLength(2);
  });
});
