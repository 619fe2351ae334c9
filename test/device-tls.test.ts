import { afterEach, describe, expect, it } from 'vitest';
import { metric, startProvider, startRelay, stopStarted, until, type TestRelay } from './helpers.js';
import { FAKE_TLS } from '../src/demo/fake-provider.js';
import { sClient } from './openssl-client.js';

const negotiated = (output: string) => /Protocol\s*:\s*(TLSv[\d.]+)/.exec(output)?.[1] ?? /New, (TLSv[\d.]+), Cipher is (\S+)/.exec(output)?.[1];
const cipher = (output: string) => /Cipher is (\S+)/.exec(output)?.[1];
const OLD = ['-cipher', 'DEFAULT:@SECLEVEL=0'];

describe('TLS with devices', () => {
  afterEach(stopStarted);

  async function relayWith(tls: Record<string, unknown> = {}): Promise<TestRelay> {
    const provider = await startProvider();
    return startRelay(provider, { top: { smtp: { host: '127.0.0.1', port: 0, hostname: 'relay.test', tls: { cert: FAKE_TLS.cert(), key: FAKE_TLS.key(), implicitPort: 0, ...tls } } } });
  }

  it('refuses TLS 1.0/1.1, static-RSA and CBC suites and client renegotiation by default; logs and counts each failure once', async () => {
    const relay = await relayWith();
    const starttls = ['-starttls', 'smtp', '-connect', `127.0.0.1:${relay.port}`];
    for (const version of ['-tls1', '-tls1_1']) expect(cipher(await sClient([...starttls, version, ...OLD]))).toBe('(NONE)');
    expect(cipher(await sClient([...starttls, '-tls1_2', '-cipher', 'AES128-SHA:AES256-SHA256:ECDHE-RSA-AES128-SHA']))).toBe('(NONE)');
    expect(cipher(await sClient([...starttls, '-tls1_2']))).toMatch(/^ECDHE-RSA-(AES\d+-GCM|CHACHA20)/);
    expect(negotiated(await sClient([...starttls, '-tls1_3']))).toBe('TLSv1.3');
    const renegotiation = await sClient([...starttls, '-tls1_2'], ['R', 'QUIT']);
    expect(renegotiation).toContain('RENEGOTIATING');
    expect(renegotiation).toMatch(/no renegotiation|handshake failure|alert/i);

    expect(await metric(relay.httpPort, 'smtp_relay_tls_handshakes_total', { listener: 'starttls', version: 'TLSv1', result: 'old_protocol' })).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_tls_handshakes_total', { listener: 'starttls', version: 'TLSv1.1', result: 'old_protocol' })).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_tls_handshakes_total', { listener: 'starttls', version: 'TLSv1.2', result: 'no_shared_cipher' })).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_tls_handshakes_total', { listener: 'starttls', version: 'TLSv1.3', result: 'ok' })).toBeGreaterThanOrEqual(1);
    const failures = relay.logs.filter((line) => line.includes('TLS handshake with a device failed')).map((line) => JSON.parse(line) as Record<string, string>);
    expect(failures).toHaveLength(3); // once each, not twice
    expect(failures[0]).toMatchObject({ clientIp: '127.0.0.1', listener: 'starttls', offered: 'TLSv1', result: 'old_protocol' });
    expect(failures[0].hint).toContain('smtp.tls.legacyDevices');
  });

  it('lets listed old devices use TLS 1.0 on both listeners, and only them', async () => {
    const listed = await relayWith({ legacyDevices: ['127.0.0.0/8'] });
    expect(negotiated(await sClient(['-starttls', 'smtp', '-connect', `127.0.0.1:${listed.port}`, '-tls1', ...OLD]))).toBe('TLSv1');
    expect(negotiated(await sClient(['-connect', `127.0.0.1:${listed.app.smtpsPort}`, '-tls1_1', ...OLD]))).toBe('TLSv1.1');
    await until(async () => (await metric(listed.httpPort, 'smtp_relay_tls_handshakes_total', { listener: 'smtps', version: 'TLSv1.1', result: 'ok' })) === 1);
    await stopStarted();
    const elsewhere = await relayWith({ legacyDevices: ['192.0.2.0/24'] });
    expect(cipher(await sClient(['-starttls', 'smtp', '-connect', `127.0.0.1:${elsewhere.port}`, '-tls1', ...OLD]))).toBe('(NONE)');
  });

  it('makes the global opt-down work too: minVersion TLSv1 accepts TLS 1.0', async () => {
    const relay = await relayWith({ minVersion: 'TLSv1' });
    expect(negotiated(await sClient(['-starttls', 'smtp', '-connect', `127.0.0.1:${relay.port}`, '-tls1', ...OLD]))).toBe('TLSv1');
  });
});
