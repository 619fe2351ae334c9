import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { presetAccountFor } from '../bench/harness.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { PROFILES, type ProviderProfile } from '../src/demo/provider-profiles.js';
import { MAILBOX, cli, execFileAsync, message, metric, readyz, sendRaw, sendRawExpectingError, splitMessage, startProvider, startRelay, stopStarted, until } from './helpers.js';

/**
 * The relay against stand-ins that speak Exchange Online's and Gmail's real wire: their EHLO lists
 * basic mechanisms before XOAUTH2, their tokens have the real shape, their refusals the real texts.
 * Every case checks what the stand-in saw: XOAUTH2 with the mailbox and a token, never a password.
 */

const CLI = path.resolve('dist/src/cli/main.js');
const KB10 = message(['From: mfp@printers.local', 'Subject: 10 KB scan'], 'x'.repeat(76).concat('\r\n').repeat(133));

/** The tokens of every login the relay made, after checking each AUTH line's exact shape. */
function xoauth2Logins(provider: FakeProvider): string[] {
  expect(provider.authAttempts.length).toBeGreaterThan(0);
  expect(provider.authAttempts.every((attempt) => attempt.mechanism === 'XOAUTH2')).toBe(true);
  const tokens: string[] = [];
  for (const line of provider.authLines) {
    if (line === '') continue; // the answer to Gmail's failure challenge
    const initial = /^AUTH XOAUTH2 ([A-Za-z0-9+/]+={0,2})$/.exec(line);
    expect(initial, `AUTH line ${line.slice(0, 40)}…`).not.toBeNull();
    const decoded = /^user=([^\x01]+)\x01auth=Bearer ([^\x01\s]+)\x01\x01$/.exec(Buffer.from(initial![1], 'base64').toString());
    expect(decoded).not.toBeNull();
    expect(decoded![1]).toBe(MAILBOX);
    tokens.push(decoded![2]);
  }
  return tokens;
}

/** Microsoft's tokens are RS256 JWTs of about 1.5–2.5 KB; Google's are opaque ya29. strings. */
function expectProviderToken(profile: ProviderProfile, token: string): void {
  if (profile.name === 'google') return void expect(token).toMatch(/^ya29\.[\w-]{100,}$/);
  const [header, claims, signature] = token.split('.');
  expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toMatchObject({ alg: 'RS256', typ: 'JWT' });
  expect(JSON.parse(Buffer.from(claims, 'base64url').toString())).toMatchObject({ aud: 'https://outlook.office.com' });
  expect(signature.length).toBeGreaterThan(300);
  expect(token.length).toBeGreaterThanOrEqual(1500);
  expect(token.length).toBeLessThanOrEqual(2600);
}

/** An app-only account for the stand-in, as an administrator writes it for the preset. */
function appAccount(provider: FakeProvider, credential: Record<string, unknown>): Record<string, unknown> {
  const { refreshToken: _none, clientSecret: _secret, ...account } = presetAccountFor(provider);
  return { ...account, ...credential };
}

describe('conformance with each provider\'s wire', () => {
  afterEach(stopStarted);

  for (const name of ['microsoft', 'google'] as const) {
    const profile = PROFILES[name];

    it(`${name}: signs in with a refresh token and delivers a 10 KB and a 30 MB message, over XOAUTH2 only`, async () => {
      const provider = await startProvider({ profile: name });
      const relay = await startRelay(provider, { account: presetAccountFor(provider) });
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
      const large = message(['From: mfp@printers.local', 'Subject: 30 MB scan', 'Content-Type: application/octet-stream', 'Content-Transfer-Encoding: base64'], 'QUJD'.repeat(19).concat('\r\n').repeat(404_000));
      expect(large.length).toBeGreaterThan(30 * 1024 * 1024);
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['bob@example.com'], raw: large });
      expect(provider.received.map((received) => splitMessage(received.raw).body.length)).toEqual([splitMessage(Buffer.from(KB10)).body.length, splitMessage(Buffer.from(large)).body.length]);
      const tokens = xoauth2Logins(provider);
      expect(tokens.length).toBeGreaterThanOrEqual(1);
      for (const token of tokens) expectProviderToken(profile, token);
      // The provider's own 250 after DATA, one enhanced code, in the delivery log's attempt.
      const { stdout } = await cli(['trace', '--data-dir', relay.dataDir, '--json']);
      const replies = (JSON.parse(stdout) as { messages: { events: { event: string; reply?: string }[] }[] }).messages.flatMap((message) => message.events.filter((event) => event.event === 'attempt').map((event) => event.reply));
      expect(replies[0]).toMatch(name === 'microsoft' ? /^250 2\.0\.0 OK <[^>]+@[^>]+\.outlook\.com> \[Hostname=/ : /^250 2\.0\.0 OK  \d+ \S+ - gsmtp$/);
    });

    it(`${name}: a token revoked at the provider is refreshed once and the send retried${profile.tokenChallenge ? ' (after answering the 334 challenge)' : ''}`, async () => {
      const provider = await startProvider({ profile: name });
      const relay = await startRelay(provider, { account: presetAccountFor(provider) });
      provider.failNextLogins = 1;
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
      expect(provider.received).toHaveLength(1);
      expect(provider.tokenRequests).toBe(2);
      const [refused, fresh] = xoauth2Logins(provider);
      expect(refused).not.toBe(fresh);
      expect(provider.authLines.map((line) => line.split(' ').slice(0, 2).join(' '))).toEqual(
        profile.tokenChallenge ? ['AUTH XOAUTH2', '', 'AUTH XOAUTH2'] : ['AUTH XOAUTH2', 'AUTH XOAUTH2'],
      );
      expect(relay.logs.join('\n')).not.toContain(fresh);
    });
  }

  it('microsoft: signs in as an app with a client secret, and with a certificate', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-conformance-'));
    const configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, stringify({ dataDir: dir, accounts: { office: { provider: 'microsoft', tenant: 'contoso.test', mailbox: MAILBOX, clientId: 'app', clientSecret: 'x' } }, users: [{ username: 'u', password: 'p', account: 'office' }] }), { mode: 0o600 });
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'credentials', 'create-certificate', 'office', '--config', configFile]);
    const certificate = { clientCertificateFile: /clientCertificateFile: (\S+)/.exec(stdout)![1], clientKeyFile: /clientKeyFile: (\S+)/.exec(stdout)![1] };
    const provider = await startProvider({ profile: 'microsoft', clientCertificate: await readFile(certificate.clientCertificateFile, 'utf8') });
    for (const credential of [{ clientSecret: provider.clientSecret }, certificate]) {
      const relay = await startRelay(provider, { account: appAccount(provider, { flow: 'client_credentials', ...credential }) });
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
      await relay.stop();
    }
    expect(provider.received).toHaveLength(2);
    const tokens = xoauth2Logins(provider);
    for (const token of tokens) {
      expectProviderToken(PROFILES.microsoft, token);
      expect(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString())).toMatchObject({ roles: ['SMTP.SendAsApp'], idtyp: 'app' });
    }
  });

  it('google: signs in as a Workspace service account with domain-wide delegation', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const provider = await startProvider({ profile: 'google', serviceAccountPublicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    const keyFile = path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-sa-')), 'key.json');
    await writeFile(keyFile, JSON.stringify({ client_email: 'relay@project.iam.gserviceaccount.com', private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }) }));
    const relay = await startRelay(provider, { account: appAccount(provider, { flow: 'service_account', serviceAccountKeyFile: keyFile }) });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
    expect(provider.received).toHaveLength(1);
    for (const token of xoauth2Logins(provider)) expectProviderToken(PROFILES.google, token);
  });

  it('microsoft: SMTP AUTH really disabled (5.7.139 to a correct XOAUTH2 login) holds the account with the tenant fix', async () => {
    const provider = await startProvider({ profile: 'microsoft' });
    provider.smtpAuthDisabled = true;
    const relay = await startRelay(provider, { account: presetAccountFor(provider), top: { delivery: 'queue', oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.3 } } });
    await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_account_held', { account: 'office' })) === 1);
    const health = (await readyz(relay.httpPort)).body.accounts.office as { lastProblem?: { hint?: string; reason?: string } };
    expect(health.lastProblem).toMatchObject({ reason: 'account_misconfigured', hint: expect.stringMatching(/Set-TransportConfig -SmtpClientAuthenticationDisabled \$false/) });
    xoauth2Logins(provider); // the 5.7.139 answered XOAUTH2, not a basic login
    provider.smtpAuthDisabled = false; // the administrator switches SMTP AUTH on
    await until(() => provider.received.length === 1);
  });
});

describe('an upstream that offers no XOAUTH2', () => {
  afterEach(stopStarted);

  /** The generic stand-in with another AUTH list after STARTTLS (or none). */
  function offering(auth: string | undefined): ProviderProfile {
    const generic = PROFILES.generic;
    return { ...generic, ehlo: (secure, client, size) => generic.ehlo(secure, client, size).flatMap((line) => (line.startsWith('AUTH ') ? (auth ? [auth] : []) : [line])) };
  }

  for (const [auth, named] of [['AUTH PLAIN LOGIN CRAM-MD5 GSSAPI', 'PLAIN LOGIN CRAM-MD5 GSSAPI'], [undefined, 'no AUTH at all']] as const) {
    it(`${auth ?? 'no AUTH line'}: no login is tried, the device gets 451 and the hint names what was offered`, async () => {
      const provider = await startProvider({ profile: offering(auth) });
      const relay = await startRelay(provider);
      const reply = await sendRawExpectingError(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: KB10 });
      expect(reply).toMatch(/^451 4\.7\.0 Relay account office cannot send now: the upstream offers no XOAUTH2 login/);
      expect(provider.authLines).toEqual([]);
      expect(provider.received).toHaveLength(0);
      const health = (await readyz(relay.httpPort)).body.accounts.office as { lastProblem?: { hint?: string; reason?: string } };
      expect(health.lastProblem).toMatchObject({ reason: 'account_misconfigured' });
      expect(health.lastProblem?.hint).toContain(`offers ${named}`);
    });
  }
});
