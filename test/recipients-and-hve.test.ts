import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { accountFor, message, sendRaw, startProvider, startRelay, stopStarted, until } from './helpers.js';
import { ConfigError, parseConfig } from '../src/config/index.js';
import { Pacer } from '../src/upstream/pacing.js';

const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 0.5, maxAge: 3600 } }, bounces: { postmaster: 'it@contoso.test' } };
const recipients = (count: number) => Array.from({ length: count }, (_, i) => `r${i}@example.com`);

describe('recipients per transaction (upstream.maxRecipientsPerMessage)', () => {
  afterEach(stopStarted);

  it('sends a message with more recipients in several transactions of the same content, each result per recipient', async () => {
    const provider = await startProvider();
    provider.unknownRecipients.add('r3@example.com');
    provider.deferredRecipients.set('r4@example.com', 1);
    const relay = await startRelay(provider, { account: { ...accountFor(provider), upstream: { ...(accountFor(provider).upstream as object), maxRecipientsPerMessage: 2 } }, top: QUEUE });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: recipients(5), raw: message(['From: mfp@printers.local', 'Subject: many'], 'same content') });
    await until(() => provider.received.some((received) => received.envelope.to.includes('r4@example.com')) && provider.received.some((received) => received.envelope.to.includes('it@contoso.test')));
    const scans = provider.received.filter((received) => received.envelope.to.every((address) => /^r\d@/.test(address)));
    expect(scans.map((received) => received.envelope.to)).toEqual([['r0@example.com', 'r1@example.com'], ['r2@example.com'], ['r4@example.com']]);
    expect(new Set(scans.map((received) => received.raw.toString().split('\r\n\r\n')[1])).size).toBe(1);
    const report = provider.received.find((received) => received.envelope.to.includes('it@contoso.test'))!.raw.toString();
    expect(report).toContain('Final-Recipient: rfc822; r3@example.com');
    expect(report).not.toContain('Final-Recipient: rfc822; r2@example.com');
  });

  it('counts each transaction against the messages-per-minute pace', () => {
    const pacer = new Pacer({ messagesPerMinute: 3 });
    expect(pacer.waitMs(150, 0, 3)).toBe(0);
    pacer.record(150, 0, 3);
    expect(pacer.waitMs(1, 1000)).toBe(59_000);
    // A message needing more transactions than a minute allows still goes, in a window of its own.
    expect(new Pacer({ messagesPerMinute: 3 }).waitMs(1000, 0, 20)).toBe(0);
  });
});

describe('Microsoft High Volume Email', () => {
  const hve = (account: Record<string, unknown>) =>
    parseConfig(stringify({ accounts: { hve: { provider: 'microsoft', tenant: 'contoso.onmicrosoft.com', mailbox: 'scanner@contoso.com', clientId: 'app', clientSecret: 's', service: 'hve', ...account } }, users: [{ username: 'u', password: 'p', account: 'hve' }] }), '/tmp/config.yaml', {});

  it('is a preset: its endpoint, the app flow and scope, 50 recipients per transaction', () => {
    const account = hve({}).accounts.get('hve')!;
    expect(account.upstream).toMatchObject({ host: 'smtp.hve.mx.microsoft', port: 587, maxRecipientsPerMessage: 50 });
    expect(account.flow).toBe('client_credentials');
    expect(account.scopes).toBe('https://outlook.office365.com/.default');
    expect(hve({ upstream: { host: 'smtp-hve.office365.com' } }).accounts.get('hve')!.upstream.host).toBe('smtp-hve.office365.com');
  });

  it('refuses what cannot work, naming the key', () => {
    expect(() => hve({ provider: 'google', tenant: undefined })).toThrow(ConfigError);
    try {
      hve({ flow: 'refresh_token' });
    } catch (error) {
      expect((error as ConfigError).problems).toContainEqual(expect.objectContaining({ path: 'accounts.hve.flow' }));
    }
  });
});
