import { afterEach, describe, expect, it } from 'vitest';
import { message, metric, readyz, sendRaw, sendRawExpectingError, startProvider, startRelay, stopStarted, until } from './helpers.js';
import type { FakeProvider, ScriptedReply } from '../src/demo/fake-provider.js';

/*
 * The provider replies admins meet in 2026, each from the stand-in at the stage the provider gives
 * it: what the device is told (direct and queue mode), what happens to the account, the metric
 * reason and the hint an administrator sees in /readyz and the log.
 */

type Stage = 'auth' | 'mailFrom' | 'rcpt' | 'data';
interface Case {
  name: string;
  stage: Stage;
  reply: ScriptedReply;
  reason: string;
  hint: RegExp;
  /** What a device in direct mode is told. */
  direct: RegExp;
  /** What happens in queue mode. */
  queue: 'held' | 'failed' | 'deferred';
}

const CASES: Case[] = [
  { name: 'SMTP AUTH disabled for the tenant', stage: 'auth', reply: { code: 535, message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant' }, reason: 'account_misconfigured', hint: /Set-TransportConfig -SmtpClientAuthenticationDisabled \$false/, direct: /^451 4\.7\.0 /, queue: 'held' },
  { name: 'SMTP AUTH disabled for the mailbox', stage: 'auth', reply: { code: 535, message: '5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully' }, reason: 'account_misconfigured', hint: /Set-CASMailbox/, direct: /^451 4\.7\.0 /, queue: 'held' },
  { name: 'security defaults', stage: 'auth', reply: { code: 535, message: "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy" }, reason: 'account_misconfigured', hint: /security defaults/, direct: /^451 4\.7\.0 /, queue: 'held' },
  { name: 'service principal without mailbox permission', stage: 'data', reply: { code: 430, message: '4.2.0 STOREDRV; mailbox logon failure; MapiExceptionLogonFailed' }, reason: 'account_misconfigured', hint: /New-ServicePrincipal/, direct: /^451 4\.2\.0 /, queue: 'held' },
  { name: 'client not authenticated', stage: 'mailFrom', reply: { code: 530, message: '5.7.57 Client not authenticated to send mail' }, reason: 'account_misconfigured', hint: /XOAUTH2/, direct: /^451 4\.7\.0 /, queue: 'held' },
  { name: 'Gmail daily quota', stage: 'mailFrom', reply: { code: 550, message: '5.4.5 Daily user sending limit exceeded' }, reason: 'quota_exhausted', hint: /quota/, direct: /^451 4\.7\.0 /, queue: 'held' },
  { name: 'SendAsDenied', stage: 'data', reply: { code: 554, message: '5.2.252 SendAsDenied; scanner@contoso.test not allowed to send as boss@contoso.test' }, reason: 'send_as_denied', hint: /Send As/, direct: /^554 5\.2\.252 /, queue: 'failed' },
  { name: 'HVE external recipient', stage: 'rcpt', reply: { code: 550, message: '5.5.105 External recipients are not allowed for this sender' }, reason: 'external_recipient', hint: /inside your organization/, direct: /^550 5\.5\.105 /, queue: 'failed' },
  { name: 'legacy TLS on the upstream', stage: 'mailFrom', reply: { code: 421, message: '4.7.66 TLS 1.0 and 1.1 are not supported' }, reason: 'upstream_deferred', hint: /TLS-intercepting proxy/, direct: /^451 4\.7\.66 /, queue: 'deferred' },
  { name: 'Gmail login throttling', stage: 'auth', reply: { code: 454, message: '4.7.0 Too many login attempts, please try again later' }, reason: 'upstream_auth', hint: /throttling logins/, direct: /^451 4\.7\.0 /, queue: 'deferred' },
];

const SCAN = { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', 'Subject: scan'], 'x') };

function script(provider: FakeProvider, stage: Stage, reply: ScriptedReply, times: number): void {
  for (let i = 0; i < times; i++) {
    if (stage === 'auth') provider.authScript.push(reply);
    if (stage === 'mailFrom') provider.mailFromScript.push(reply);
    if (stage === 'data') provider.dataScript.push(reply);
  }
  if (stage === 'rcpt') provider.recipientReplies.set('alice@example.com', reply);
}

describe('every provider error explained', () => {
  afterEach(stopStarted);

  for (const known of CASES) {
    it(`${known.name}: direct mode tells the device ${known.direct.source.slice(1, 4)}, with the reason and the hint`, async () => {
      const provider = await startProvider();
      const relay = await startRelay(provider, { top: { oauth: { retries: 0, retryDelay: 0.05 } } });
      script(provider, known.stage, known.reply, known.stage === 'auth' ? 2 : 1); // a refused login is retried once with a new token
      expect(await sendRawExpectingError(relay.port, SCAN)).toMatch(known.direct);
      expect(await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: known.reason })).toBe(1);
      expect(relay.logs.join('\n')).toMatch(known.hint);
    });

    it(`${known.name}: queue mode ${known.queue === 'held' ? 'holds the account and resumes by itself' : known.queue === 'failed' ? 'fails the message for good' : 'defers and retries'}`, async () => {
      const provider = await startProvider();
      const relay = await startRelay(provider, {
        top: { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 0.6, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.3 } },
      });
      script(provider, known.stage, known.reply, known.stage === 'auth' ? 2 : 1);
      await sendRaw(relay.port, SCAN);
      if (known.queue === 'failed') {
        await until(async () => (await metric(relay.httpPort, 'smtp_relay_messages_failed_total', { account: 'office', reason: known.reason })) === 1);
        expect(provider.received.filter((received) => received.envelope.to.includes('alice@example.com'))).toHaveLength(0);
        expect(relay.logs.join('\n')).toMatch(known.hint);
        return;
      }
      await until(async () => (await metric(relay.httpPort, 'smtp_relay_deferrals_total', { account: 'office', reason: known.reason })) >= 1);
      if (known.queue === 'held') {
        const health = (await readyz(relay.httpPort)).body.accounts.office as { lastProblem?: { hint?: string; reason?: string } };
        expect(health.lastProblem?.reason).toBe(known.reason);
        expect(health.lastProblem?.hint).toMatch(known.hint);
      }
      provider.recipientReplies.clear();
      await until(() => provider.received.length === 1, 10_000); // fixed at the provider: it goes out without anyone touching the relay
      expect(await metric(relay.httpPort, 'smtp_relay_account_held', { account: 'office' })).toBe(0);
    });
  }
});

describe('a token the provider says expires soon', () => {
  afterEach(stopStarted);

  it('501 5.5.127: refreshed and the send retried at once, the device never notices', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider);
    await sendRaw(relay.port, SCAN);
    const before = provider.tokenRequests;
    provider.authScript.push({ code: 501, message: '5.5.127 Authentication unsuccessful, Token will expire soon' });
    provider.dropConnections(); // a new session logs in again
    await sendRaw(relay.port, SCAN);
    expect(provider.received).toHaveLength(2);
    expect(provider.tokenRequests).toBe(before + 1);
  });
});

describe('a verdict older than the account\'s return', () => {
  afterEach(stopStarted);

  it('does not hold the account again: an attempt that began before the queue came back from a hold is retried', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider, {
      top: { delivery: 'queue', queue: { retry: { initialDelay: 0.2, maxDelay: 60, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05, reauthCheckInterval: 0.3 } },
    });
    const [mailboxLogonFailure, tenantAuthOff] = [CASES[3].reply, CASES[0].reply];
    // Message 1 is sent; the provider's answer (a mailbox logon failure, which holds the account) is slow in coming.
    const answer = provider.holdNextDataAnswer(mailboxLogonFailure);
    await sendRaw(relay.port, { ...SCAN, to: ['first@example.com'] });
    await until(() => provider.dataAnswersHeld === 1);
    // Meanwhile message 2 finds SMTP AUTH off: the account is held, comes back at its recheck, and message 2 goes.
    provider.authScript.push(tenantAuthOff, tenantAuthOff);
    await sendRaw(relay.port, { ...SCAN, to: ['second@example.com'] });
    await until(() => provider.received.length === 1, 10_000);
    // Only then message 1's answer: it predates the return, so message 1 is retried and the account not held again.
    answer();
    await until(() => provider.received.length === 2, 10_000);
    expect(relay.logs.filter((line) => line.includes('holding the account queue')).length).toBe(1);
    expect(await metric(relay.httpPort, 'smtp_relay_account_held', { account: 'office' })).toBe(0);
  }, 30_000);
});
