import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { ARTIFACTS, launchChromium } from './browser.js';
import { ADMIN, ADMIN_AUTHORIZATION, MAILBOX, accountFor, adminHttp, readyz, startProvider, startRelay, stopStarted, until, type TestRelay } from './helpers.js';
import { hashPassword } from '../src/listener/index.js';
import { parseConfig } from '../src/config/index.js';
import { stringify } from 'yaml';
import type { FakeProvider } from '../src/demo/fake-provider.js';


describe('the admin page in a real browser', () => {
  let provider: FakeProvider;
  let relay: TestRelay;
  let browser: Browser;

  beforeAll(async () => {
    provider = await startProvider();
    const { refreshToken: _none, ...account } = accountFor(provider);
    relay = await startRelay(provider, { keepAlive: true, account: { ...account, authorizeUrl: provider.authorizeUrl }, top: { http: await adminHttp() } });
    await until(async () => (await readyz(relay.httpPort)).body.accounts.office.state === 'needs_reauth');
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.stop();
    await provider?.stop();
  });

  it('signs an account in with one button, lands on "(Authenticated)", and sends a test message', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, httpCredentials: ADMIN }); // a phone
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
      headers: { origin: 'http://evil.example', authorization: ADMIN_AUTHORIZATION },
      body: new URLSearchParams({ account: 'office', to: 'victim@example.com' }),
    });
    expect(forged.status).toBe(403);
    const callback = await fetch(`http://127.0.0.1:${relay.httpPort}/oauth/callback?code=stolen&state=unknown`, { headers: { authorization: ADMIN_AUTHORIZATION } });
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

/** A request with headers browsers and fetch() will not let a page set (Host). */
function rawRequest(port: number, options: { method?: string; path?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path ?? '/', headers: options.headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, text }));
    });
    request.on('error', reject);
    request.end(options.body);
  });
}

describe('the admin page trusts only the right host, client and session', () => {
  let relay: TestRelay;

  beforeAll(async () => {
    const provider = await startProvider();
    relay = await startRelay(provider, { top: { http: { host: '127.0.0.1', port: 0, publicUrl: 'https://relay.contoso.test' } } });
  });
  afterAll(async () => stopStarted());

  it('refuses a foreign Host (DNS rebinding) before anything else, and builds redirect URIs only from publicUrl', async () => {
    expect((await rawRequest(relay.httpPort, { headers: { host: 'attacker.example' } })).status).toBe(421);
    expect((await rawRequest(relay.httpPort, { headers: { host: `localhost:${relay.httpPort}` } })).status).toBe(200);
    expect((await rawRequest(relay.httpPort, { headers: { host: 'relay.contoso.test' } })).status).toBe(200);
    expect((await rawRequest(relay.httpPort, { path: '/metrics', headers: { host: '10.1.2.3:9464' } })).status).toBe(200); // scrapers use pod addresses
  });

  it('does not take a proxied request for this machine unless http.trustProxy says so', async () => {
    const proxied = await rawRequest(relay.httpPort, { headers: { host: 'relay.contoso.test', 'x-forwarded-for': '203.0.113.7' } });
    expect(proxied.status).toBe(403);
    const forwarded = await rawRequest(relay.httpPort, { headers: { host: 'relay.contoso.test', forwarded: 'for=127.0.0.1' } });
    expect(forwarded.status).toBe(403);
  });

  it('believes X-Forwarded-For only from a proxy http.trustProxy lists', async () => {
    const provider = await startProvider();
    const elsewhere = await startRelay(provider, { top: { http: { host: '127.0.0.1', port: 0, trustProxy: ['10.9.9.9'] } } });
    expect((await rawRequest(elsewhere.httpPort, { headers: { host: 'localhost', 'x-forwarded-for': '127.0.0.1' } })).status).toBe(403); // not from the listed proxy
    expect(() => parseConfig(stringify({ http: { trustProxy: true }, accounts: { office: accountFor(provider) }, users: [{ username: 'u', password: 'p', account: 'office' }] }), 'config.yaml', {})).toThrow(/http\.trustProxy: true would believe X-Forwarded-For from anyone: list the proxy addresses/);
  });

  it('with http.trustProxy, believes the proxy about the client, and only then', async () => {
    const provider = await startProvider();
    const proxied = await startRelay(provider, { top: { http: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'] } } });
    const status = async (headers: Record<string, string>) => (await rawRequest(proxied.httpPort, { headers: { host: 'localhost', ...headers } })).status;
    expect(await status({ 'x-forwarded-for': '203.0.113.7, 127.0.0.1' })).toBe(200); // the proxy's last hop: this machine
    expect(await status({ 'x-forwarded-for': '127.0.0.1, 203.0.113.7' })).toBe(403); // a client cannot claim it
    expect(await status({ forwarded: 'for="[::1]"' })).toBe(200);
    expect(await status({ forwarded: 'for=198.51.100.4' })).toBe(403);
  });

  it('is read-only without http.adminPasswordHash: no form, every action refused with the fix', async () => {
    const page = await rawRequest(relay.httpPort, { headers: { host: 'localhost' } });
    expect(page.status).toBe(200);
    expect(page.text).toContain('This console is read-only');
    expect(page.text).not.toContain('<form method="post"');
    for (const path of ['/test-message', '/queue/ABCDEFGH1234/delete', '/accounts/office/retry-all', '/devices/unlock', '/accounts/office/sign-in']) {
      const refused = await rawRequest(relay.httpPort, { method: 'POST', path, headers: { host: 'localhost', 'content-type': 'application/x-www-form-urlencoded' }, body: 'account=office&to=x%40y.test' });
      expect(refused.status, path).toBe(403);
      expect(refused.text, path).toContain('http.adminPasswordHash');
    }
  });

  it('binds the CSRF token to the browser session', async () => {
    const provider = await startProvider();
    const withPassword = await startRelay(provider, { top: { http: await adminHttp() } });
    const open = async () => {
      const page = await rawRequest(withPassword.httpPort, { headers: { host: 'localhost', authorization: ADMIN_AUTHORIZATION } });
      const cookie = String(page.headers['set-cookie']).split(';')[0];
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1];
      return { cookie, csrf };
    };
    const first = await open();
    const second = await open();
    expect(first.csrf).not.toBe(second.csrf);
    const post = (cookie: string, csrf: string) =>
      rawRequest(withPassword.httpPort, {
        method: 'POST',
        path: '/test-message',
        headers: { host: 'localhost', cookie, authorization: ADMIN_AUTHORIZATION, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ csrf, account: 'office', to: '' }).toString(),
      });
    expect((await post(second.cookie, first.csrf)).status).toBe(403);
    expect((await post('', first.csrf)).status).toBe(403);
    const own = await post(first.cookie, first.csrf);
    expect(own.status).toBe(200);
    expect(own.text).toContain('Choose an account and give one recipient address.');
  });
});
