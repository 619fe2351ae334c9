import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { MAILBOX, accountFor, readyz, startProvider, startRelay, until, type TestRelay } from './helpers.js';
import { hashPassword } from '../src/listener/index.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve('test-artifacts');

describe('the admin page in a real browser', () => {
  let provider: FakeProvider;
  let relay: TestRelay;
  let browser: Browser;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
    provider = await startProvider();
    const { refreshToken: _none, ...account } = accountFor(provider);
    relay = await startRelay(provider, { keepAlive: true, account: { ...account, authorizeUrl: provider.authorizeUrl } });
    await until(async () => (await readyz(relay.httpPort)).body.accounts.office.state === 'needs_reauth');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    await mkdir(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.stop();
    await provider?.stop();
  });

  it('signs an account in with one button, lands on "(Authenticated)", and sends a test message', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
    await page.goto(`http://127.0.0.1:${relay.httpPort}/`);
    const card = page.locator('#account-office');
    await expect(card.textContent()).resolves.toContain('Needs authorisation');

    await card.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Accept' }).click(); // the provider's sign-in page
    await page.waitForURL(/signed-in=office/);
    await expect(card.textContent()).resolves.toContain('(Authenticated)');

    await page.getByRole('combobox', { name: 'Account' }).selectOption('office');
    await page.getByRole('textbox', { name: 'To' }).fill('alice@example.com');
    await page.getByRole('button', { name: 'Send test message' }).click();
    await expect(page.getByRole('status').textContent()).resolves.toMatch(/Test message sent from scanner@contoso\.test to alice@example\.com: 250/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'admin-page.png'), fullPage: true });
    expect(provider.received).toHaveLength(1);
    expect(provider.received[0].envelope).toEqual({ from: MAILBOX, to: ['alice@example.com'] });
    await page.close();
  });

  it('refuses a form posted without the page token (CSRF) and an OAuth callback it did not start', async () => {
    const forged = await fetch(`http://127.0.0.1:${relay.httpPort}/test-message`, {
      method: 'POST',
      headers: { origin: 'http://evil.example' },
      body: new URLSearchParams({ account: 'office', to: 'victim@example.com' }),
    });
    expect(forged.status).toBe(403);
    const callback = await fetch(`http://127.0.0.1:${relay.httpPort}/oauth/callback?code=stolen&state=unknown`);
    expect(await callback.text()).toContain('This sign-in was not started here');
  });
});

describe('the admin password', () => {
  it('is asked for when set, and the page opens with it', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, { keepAlive: true, top: { http: { host: '127.0.0.1', port: 0, adminPasswordHash: await hashPassword('admin secret') } } });
    try {
      await until(async () => (await readyz(relay.httpPort)).body.accounts.office.state === 'ready');
      const page = `http://127.0.0.1:${relay.httpPort}/`;
      expect((await fetch(page)).status).toBe(401);
      const authorization = `Basic ${Buffer.from('admin:admin secret').toString('base64')}`;
      const allowed = await fetch(page, { headers: { authorization } });
      expect(allowed.status).toBe(200);
      expect(await allowed.text()).toContain('(Authenticated)');
      expect((await fetch(`http://127.0.0.1:${relay.httpPort}/metrics`)).status).toBe(200); // scraping needs no password
    } finally {
      await relay.stop();
      await provider.stop();
    }
  });
});
