import { afterEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { DEVICE, accountFor, message, webhookReceiver, metric, sendRaw, startProvider, startRelay, stopStarted, until } from './helpers.js';
import { TokenStore } from '../src/oauth/index.js';
import { fingerprint } from '../src/oauth/token-store.js';

const QUEUE = { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 1, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.2 } };
const scan = (to: string) => ({ from: 'mfp@printers.local', to: [to], raw: message(['From: mfp@printers.local', 'Subject: scan'], 'page') });

describe('notify: for admins without Prometheus', () => {
  afterEach(stopStarted);

  it('posts a webhook when an account needs a sign-in and again when it is resolved, with a text field chat hooks show', async () => {
    const hook = await webhookReceiver();
    const provider = await startProvider();
    const dead = 'rt-dead';
    const relay = await startRelay(provider, { account: accountFor(provider, dead), top: { ...QUEUE, notify: { webhook: hook.url, checkInterval: 0.2 } } });
    try {
      await sendRaw(relay.port, scan('alice@example.com'));
      await until(() => hook.received.some((notification) => notification.status === 'firing'));
      const firing = hook.received.find((notification) => notification.key === 'account:office')!;
      expect(firing).toMatchObject({ status: 'firing', severity: 'critical', account: 'office', title: 'Account office needs a sign-in' });
      expect(firing.text).toMatch(/^\[smtp-oauth-relay \S+\] CRITICAL: Account office needs a sign-in\. The provider said: .*invalid_grant.*What to do: .*sign in/i);
      // Still a problem a few checks later: told once.
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect(hook.received.filter((notification) => notification.key === 'account:office')).toHaveLength(1);

      await new TokenStore(path.join(relay.dataDir, 'tokens')).write('office', { refreshToken: provider.issueRefreshToken(), seed: fingerprint(dead), updatedAt: new Date().toISOString() });
      await until(() => hook.received.some((notification) => notification.key === 'account:office' && notification.status === 'resolved'));
      // The account is resolved once it is signed in; its held message goes out a moment later.
      await until(() => provider.received.length === 1);
      expect(relay.logs.join('')).not.toContain('secret-part'); // the hook's URL is a secret
      expect(await metric(relay.httpPort, 'smtp_relay_notifications_total', { channel: 'webhook', result: 'sent' })).toBe(2);
    } finally {
      await hook.close();
    }
  });

  it('tells of permanent failures once per minInterval, however many; e-mails the postmaster through the account', async () => {
    const hook = await webhookReceiver();
    const provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    const relay = await startRelay(provider, { top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test', notifySender: false }, notify: { webhook: hook.url, email: true, checkInterval: 0.2, minInterval: '1h' } } });
    try {
      for (let n = 0; n < 3; n++) await sendRaw(relay.port, scan('nobody@example.com'));
      await until(() => hook.received.length >= 1);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const failures = hook.received.filter((notification) => notification.key === 'failed:office');
      expect(failures).toHaveLength(1);
      expect(failures[0]).toMatchObject({ status: 'event', title: 'A message for office failed for good (failed)' });
      expect(failures[0].details).toMatch(/smtp-oauth-relay trace --id \w+/);
      // The e-mail: to the postmaster, from the account's mailbox, through the provider.
      await until(() => provider.received.some((received) => /Subject: \[smtp-oauth-relay\] Event: A message for office failed/.test(received.raw.toString())));
      const mail = provider.received.find((received) => /Subject: \[smtp-oauth-relay\] Event/.test(received.raw.toString()))!;
      expect(mail.envelope).toEqual({ from: 'scanner@contoso.test', to: ['it@contoso.test'] });
      expect(mail.raw.toString()).toMatch(/Auto-Submitted: auto-generated/);
    } finally {
      await hook.close();
    }
  });

  it('does not tell of a failed report or notification e-mail (which would go round in circles)', async () => {
    const hook = await webhookReceiver();
    const provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    provider.unknownRecipients.add('it@contoso.test'); // the postmaster's address is wrong too
    const relay = await startRelay(provider, { top: { ...QUEUE, bounces: { postmaster: 'it@contoso.test', notifySender: false }, notify: { webhook: hook.url, email: true, checkInterval: 0.2, minInterval: 0.01 } } });
    try {
      await sendRaw(relay.port, scan('nobody@example.com'));
      await until(() => hook.received.some((notification) => notification.key === 'failed:office'));
      await until(async () => (await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: 'upstream_rejected' })) >= 3); // the scan, its report, the notification
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(hook.received.filter((notification) => notification.key === 'failed:office')).toHaveLength(1);
    } finally {
      await hook.close();
    }
  });

  it('sends a webhook URL\'s user:password as HTTP Basic, and logs neither them nor the URL, also when the hook is down', async () => {
    const hook = await webhookReceiver();
    const withCredentials = hook.url.replace('http://', 'http://hook-user:hook%40password@');
    const provider = await startProvider();
    const relay = await startRelay(provider, { account: accountFor(provider, 'rt-dead'), top: { ...QUEUE, notify: { webhook: withCredentials, checkInterval: 0.2 } } });
    try {
      await sendRaw(relay.port, scan('alice@example.com'));
      await until(() => hook.received.length > 0);
      expect(hook.authorizations[0]).toBe(`Basic ${Buffer.from('hook-user:hook@password').toString('base64')}`);
    } finally {
      await hook.close();
    }
    // Signed in again: the "resolved" notification finds the hook gone, and that failure is logged.
    await new TokenStore(path.join(relay.dataDir, 'tokens')).write('office', { refreshToken: provider.issueRefreshToken(), seed: fingerprint('rt-dead'), updatedAt: new Date().toISOString() });
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_notifications_total', { channel: 'webhook', result: 'failed' })) >= 1);
    const logs = relay.logs.join('');
    expect(logs).toContain('webhook at 127.0.0.1');
    for (const secret of ['hook-user', 'hook%40password', 'hook@password', 'secret-part']) expect(logs).not.toContain(secret);
  });

  it('keeps to notify.maxPerHour (counting what it holds back), and survives a webhook that fails', async () => {
    const hook = await webhookReceiver(500);
    const provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    const relay = await startRelay(provider, {
      account: { ...accountFor(provider), credentialExpiresAt: new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10) },
      top: { ...QUEUE, notify: { webhook: hook.url, checkInterval: 0.2, maxPerHour: 1 } },
    });
    await until(() => hook.received.length === 1);
    expect(hook.received[0].title).toMatch(/^The client secret of account office stops working on \d{4}-\d{2}-\d{2}$/);
    await sendRaw(relay.port, scan('nobody@example.com'));
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_notifications_total', { channel: 'all', result: 'suppressed' })) === 1);
    expect(hook.received).toHaveLength(1);
    expect(await metric(relay.httpPort, 'smtp_relay_notifications_total', { channel: 'webhook', result: 'failed' })).toBe(1);
    expect(relay.logs.join('')).toMatch(/webhook at 127\.0\.0\.1:\d+ answered HTTP 500.*notification not sent/);
    await hook.close();
  });

  it('tells of a lockout after wrong passwords, and of its end', async () => {
    const hook = await webhookReceiver();
    const provider = await startProvider();
    const kiosk = { username: 'kiosk', password: 'right' };
    const relay = await startRelay(provider, {
      users: [{ ...DEVICE, account: 'office' }, { ...kiosk, account: 'office' }],
      top: { smtp: { host: '127.0.0.1', port: 0, authFailures: { maxPerIp: 100, maxPerUser: 2, lockout: 1 } }, notify: { webhook: hook.url, checkInterval: 0.2 } },
    });
    try {
      for (let n = 0; n < 2; n++) await sendRaw(relay.port, scan('alice@example.com'), { ...kiosk, password: 'wrong' }).catch(() => undefined);
      await until(() => hook.received.some((notification) => notification.key === 'lockout:user:kiosk'));
      expect(hook.received[0]).toMatchObject({ status: 'firing', title: 'Logins from device user kiosk are locked out after wrong passwords' });
      await until(() => hook.received.some((notification) => notification.key === 'lockout:user:kiosk' && notification.status === 'resolved'));
    } finally {
      await hook.close();
    }
  });

  it('refuses notify.email without bounces.postmaster, naming the key and the fix', async () => {
    const provider = await startProvider();
    await expect(startRelay(provider, { top: { notify: { email: true } } })).rejects.toThrow(/notify\.email.*bounces\.postmaster/);
  });
});
