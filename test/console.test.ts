import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { ARTIFACTS, launchChromium } from './browser.js';
import { ADMIN, ADMIN_AUTHORIZATION, DEVICE, adminHttp, mime, sendRaw, startProvider, startRelay, stopStarted, until, type TestRelay } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

/*
 * The operator console in headless Chromium (Debian's), at phone and desktop width: every page
 * passes axe-core with no serious or critical violation, works from the keyboard, and every action
 * (retry, delete, retry all, unlock, search) goes through the running relay. Screenshots land in
 * test-artifacts/.
 */

const AXE = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const WIDTHS = [
  { name: 'phone', viewport: { width: 390, height: 844 } },
  { name: 'desktop', viewport: { width: 1280, height: 900 } },
];
const PAGES = ['/', '/messages', '/queue', '/devices', '/setup'];
const LOCKED = { username: 'printer-3f', password: 'the right one' };
const SILENT = { username: 'alarm-panel', password: 'another right one' };

async function seriousViolations(page: Page): Promise<string[]> {
  await page.evaluate(AXE); // DevTools evaluation: the page's own CSP (no scripts) stays in force
  const result = (await page.evaluate(() => (globalThis as unknown as { axe: { run(): Promise<unknown> } }).axe.run())) as { violations: { id: string; impact: string; nodes: { target: string[] }[] }[] };
  return result.violations.filter((violation) => violation.impact === 'serious' || violation.impact === 'critical').map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(' ')).join(', ')}`);
}

describe('the operator console in a real browser', () => {
  let provider: FakeProvider;
  let relay: TestRelay;
  let browser: Browser;
  let base: string;
  let waitingId: string;

  beforeAll(async () => {
    provider = await startProvider();
    provider.unknownRecipients.add('nobody@example.com');
    provider.deferredRecipients.set('busy@example.com', 1000);
    relay = await startRelay(provider, {
      users: [
        { ...DEVICE, account: 'office' },
        { ...LOCKED, account: 'office' },
        { ...SILENT, account: 'office', expectEvery: '1h' },
      ],
      top: { http: await adminHttp(), delivery: 'queue', queue: { retry: { initialDelay: 3600, maxDelay: 3600 } }, smtp: { host: '127.0.0.1', port: 0, authFailures: { maxPerIp: 100, maxPerUser: 2 } } },
    });
    base = `http://127.0.0.1:${relay.httpPort}`;
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: mime('Invoice 2026-117', { name: 'invoice.pdf', type: 'application/pdf', bytes: 30_000 }) });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['nobody@example.com'], raw: mime('Contract') });
    // A hostile device: markup in the Subject and the attachment's name.
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: mime('<img src=x onerror=alert(1)>', { name: '"><svg onload=alert(2)>.pdf', type: 'application/pdf', bytes: 10 }) });
    const waiting = await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['busy@example.com'], raw: mime('Site plan', { name: 'plan.tiff', type: 'image/tiff', bytes: 12_345 }) });
    waitingId = /queued as (\w+)/.exec(waiting.response)![1];
    for (let n = 0; n < 2; n++) await sendRaw(relay.port, { from: 'x@printers.local', to: ['alice@example.com'], raw: mime('x') }, { ...LOCKED, password: 'wrong' }).catch(() => undefined);
    await until(() => provider.received.length >= 3); // the invoice, the hostile one and the failure report to its sender
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await stopStarted();
  });

  for (const { name, viewport } of WIDTHS) {
    it(`renders every page at ${name} width with no serious accessibility violation, no script and the strict CSP`, async () => {
      const page = await browser.newPage({ viewport, httpCredentials: ADMIN });
      for (const route of [...PAGES, `/messages/${waitingId}`]) {
        const response = await page.goto(`${base}${route}`);
        expect(response!.status(), route).toBe(200);
        expect(response!.headers()['content-security-policy']).toMatch(/^default-src 'none'; style-src 'unsafe-inline'/);
        expect(await page.locator('script').count()).toBe(0);
        expect(await seriousViolations(page), route).toEqual([]);
        // Nothing wider than the screen but the tables, which scroll inside their own region.
        expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), `${route} fits ${viewport.width}px`).toBe(true);
        await page.screenshot({ path: path.join(ARTIFACTS, `console-${route === '/' ? 'overview' : route.split('/').filter(Boolean).join('-').replace(waitingId, 'message')}-${name}.png`), fullPage: true });
      }
      await page.close();
    }, 60_000);
  }

  it('is usable from the keyboard: a skip link first, then the navigation', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/`);
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Skip to content');
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Overview');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/messages$/);
    await page.close();
  });

  it('shows each account with its state, counts and 24-hour chart', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/`);
    const card = page.locator('#account-office');
    // 3 sent: the invoice, the hostile one and the failure report about the contract
    expect(await card.textContent()).toMatch(/Today: 4 message\(s\), 1 failure\(s\) · 1 in queue/);
    expect(await card.textContent()).toMatch(/\(Authenticated\) · access token until/);
    const chart = card.getByRole('img', { name: 'Messages per hour for office' });
    expect(await chart.getAttribute('aria-labelledby')).toBeTruthy();
    expect(await card.locator('desc').textContent()).toMatch(/^Last 24 hours: 3 sent, 1 deferred, 1 failed; busiest hour/);
    await page.close();
  });

  it('finds a message by recipient and status, and shows its timeline with the provider’s words', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/messages`);
    await page.getByRole('textbox', { name: 'To' }).fill('nobody@');
    await page.getByRole('combobox', { name: 'Status' }).selectOption('failed');
    await page.getByRole('button', { name: 'Search' }).click();
    const rows = page.locator('tbody tr');
    expect(await rows.count()).toBe(1);
    expect(await rows.first().textContent()).toContain('Contract');
    await rows.first().getByRole('link').click();
    expect(await page.locator('ol.timeline').textContent()).toMatch(/attempt to nobody@example\.com: failed in \d+ ms — 550 5\.1\.1[\s\S]*failure report/);
    await page.close();
  });

  it('shows what a waiting message is (subject, attachment name, type and size) and retries it on request', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/messages/${waitingId}`);
    const spool = page.getByRole('region', { name: 'Attachments' });
    expect(await spool.textContent()).toMatch(/plan\.tiff\s*image\/tiff\s*12\.1 KB/);
    expect(await page.locator('dl').first().textContent()).toContain('Site plan');
    const before = provider.connectionTimes.length;
    await page.getByRole('button', { name: 'Retry now' }).click();
    expect(await page.getByRole('status').textContent()).toBe(`${waitingId} scheduled for delivery now.`);
    await until(() => provider.connectionTimes.length > before); // tried at once, not in an hour
    await page.close();
  });

  it('retries all of an account and deletes a message only after a second, explicit press', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await until(async () => {
      await page.goto(`${base}/queue`); // the retry of the previous test has come back deferred
      return /deferred, next try in/.test((await page.locator('main').textContent()) ?? '');
    });
    await page.getByRole('button', { name: 'Retry all for office' }).click();
    expect(await page.getByRole('status').textContent()).toMatch(/^1 message\(s\) of office scheduled for delivery now\.$/);
    await until(async () => {
      await page.goto(`${base}/queue`); // back from the retry: deleted while waiting, not while being sent
      return /deferred, next try in/.test((await page.locator('main').textContent()) ?? '');
    });
    const deleteButton = page.locator('button', { hasText: `Delete ${waitingId} for good` });
    expect(await deleteButton.isVisible()).toBe(false); // behind "Delete…"
    await page.getByText('Delete…').first().click();
    await deleteButton.click();
    expect(await page.getByRole('status').textContent()).toBe(`${waitingId} deleted.`);
    expect((await readdir(path.join(relay.dataDir, 'spool', 'queue'))).filter((file) => file.startsWith(waitingId))).toEqual([]);
    await page.goto(`${base}/messages/${waitingId}`);
    expect(await page.locator('ol.timeline').textContent()).toMatch(/deleted$/);
    await page.close();
  });

  it('lists the devices with logins and addresses, flags the silent one, and unlocks a locked-out user', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/devices`);
    const row = (user: string) => page.locator('tbody tr', { hasText: user });
    expect(await row(DEVICE.username).textContent()).toMatch(/127\.0\.0\.1\s*4\s*1/); // addresses, messages, failures today
    expect(await row(SILENT.username).textContent()).toMatch(/Silent \(no message seen yet\)\s*expected every 60 min/);
    expect(await row(LOCKED.username).textContent()).toMatch(/Locked out until/);
    await expect(sendRaw(relay.port, { from: 'x@printers.local', to: ['alice@example.com'], raw: mime('y') }, LOCKED)).rejects.toThrow(/421|Too many failed logins/);
    await page.getByRole('button', { name: `Unlock ${LOCKED.username}` }).click();
    expect(await page.getByRole('status').textContent()).toBe(`${LOCKED.username} unlocked.`);
    await sendRaw(relay.port, { from: 'x@printers.local', to: ['alice@example.com'], raw: mime('after unlock') }, LOCKED);
    await page.close();
  });

  it('shows what a hostile device sent as text, never as markup', async () => {
    const page = await browser.newPage({ httpCredentials: ADMIN });
    await page.goto(`${base}/messages`);
    expect(await page.locator('main').textContent()).toContain('<img src=x onerror=alert(1)>');
    expect(await page.locator('main img, main svg[onload]').count()).toBe(0);
    await page.close();
  });

  it('refuses console actions without the page token, like every form', async () => {
    const forged = await fetch(`${base}/queue/${waitingId}/delete`, { method: 'POST', headers: { origin: 'http://evil.example', authorization: ADMIN_AUTHORIZATION }, body: new URLSearchParams({}) });
    expect(forged.status).toBe(403);
    const unknown = await fetch(`${base}/queue/..%2F..%2Fetc/delete`, { method: 'POST', headers: { authorization: ADMIN_AUTHORIZATION } });
    expect(unknown.status).toBe(405); // no console route: only the status endpoints' GETs
    // A malformed escape is not a server error, and names no account.
    const page = await fetch(`${base}/queue`, { headers: { authorization: ADMIN_AUTHORIZATION } });
    const cookie = String(page.headers.get('set-cookie')).split(';')[0];
    const csrf = /name="csrf" value="([^"]+)"/.exec(await page.text())![1];
    const malformed = await fetch(`${base}/accounts/%E0%A4%A/retry-all`, { method: 'POST', headers: { cookie, authorization: ADMIN_AUTHORIZATION, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf }) });
    expect(malformed.status).toBe(200);
    expect(await malformed.text()).toContain('No account &#34;%E0%A4%A&#34;.');
  });
});
