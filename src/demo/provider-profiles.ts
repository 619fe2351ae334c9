import { createSign, generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto';

/**
 * What each provider sends on the wire, for the stand-in provider (demo, tests, bench). A relay
 * that only ever met a kinder server (XOAUTH2 alone in the AUTH list, short opaque tokens) never
 * logged in to the real ones, so the stand-ins speak like these by default.
 *
 * Sources (read 2026-12):
 * - Microsoft Learn, "Authenticate an IMAP, POP or SMTP connection using OAuth": the XOAUTH2
 *   initial response and `235 2.7.0 Authentication successful`.
 * - Microsoft Learn, "Enable or disable SMTP AUTH in Exchange Online" (aka.ms/smtp_auth_disabled)
 *   and "Exchange Online limits" (30 messages a minute, 35 MB default message size, SIZE 150 MB).
 * - Session transcripts of smtp.office365.com:587 in public issue threads (simonrob/email-oauth2-proxy
 *   #95 and #193, aviks/SMTPClient.jl #44): greeting, EHLO before and after STARTTLS,
 *   `220 2.0.0 SMTP server ready`, the 5.7.139 and 5.7.3 texts.
 * - Google for Developers, "OAuth 2.0 Mechanism" (the SASL XOAUTH2 protocol): the failure is a 334
 *   challenge of base64 JSON answered by an empty line; Gmail then says 535-5.7.8 (transcripts in
 *   jstedfast/MailKit #27 and #1329). Gmail Help "Gmail sending limits in Google Workspace" and
 *   "Message size limits" (SIZE 35882577).
 * - shared/notes/providers.md, which collects the above.
 *
 * Replies are given as the provider sends them; a text with line breaks is a multi-line reply.
 */

export type ProviderProfileName = 'microsoft' | 'google' | 'generic';
export const PROVIDER_PROFILES: readonly ProviderProfileName[] = ['microsoft', 'google', 'generic'];

export interface ScriptedReply {
  code: number;
  message: string;
}

/** A provider's documented refusals, for tests and the demo to script. */
export interface ProfileReplies {
  /** A bearer token the provider does not accept (expired, revoked, wrong mailbox). */
  tokenRefused: ScriptedReply;
  /** An XOAUTH2 response that does not decode to user and bearer token. */
  undecodableLogin: ScriptedReply;
  /** A basic (PLAIN/LOGIN) login: both providers refuse passwords here. */
  basicRefused: ScriptedReply;
  /** SMTP AUTH switched off for the tenant: answered even to a correct XOAUTH2 login (Exchange only). */
  smtpAuthDisabled?: ScriptedReply;
  /** Too many concurrent sessions or messages for the mailbox. */
  throttled: ScriptedReply;
  /** The daily sending quota is used up. */
  quotaExceeded: ScriptedReply;
  /** The message is larger than the mailbox may send. */
  tooLarge: ScriptedReply;
  /** The From header is not the mailbox or one it may send as (Exchange; Gmail rewrites the From instead). */
  sendAsDenied?: ScriptedReply;
  /** The recipient does not exist. */
  unknownRecipient: ScriptedReply;
}

export interface ProviderProfile {
  name: ProviderProfileName;
  /** The 220 greeting text. */
  greeting(): string;
  /** The EHLO reply's lines: the hello line, then the extensions, before or after STARTTLS. */
  ehlo(secure: boolean, clientAddress: string, size: number): string[];
  /** The STARTTLS go-ahead. */
  startTlsReply: string;
  /** SIZE as advertised; a mailbox's own limit may be lower (Exchange: 35 MB by default). */
  advertisedSize?: number;
  /** What the mailbox may send, unless the test sets its own. */
  defaultMessageLimit: number;
  /** Gmail refuses a token with a 334 JSON challenge first, and the 535 after the client's empty line. */
  tokenChallenge?: Record<string, string>;
  authSucceeded: string;
  /** The 250 text after DATA, given the provider's message id. */
  accepted(id: string): string;
  replies: ProfileReplies;
  /** An access token shaped like the provider's (Microsoft: an RS256 JWT of ~2 KB). */
  accessToken(grant: { mailbox: string; clientId: string; lifetimeSeconds: number; scope?: string }): string;
}

/** Exchange Online front-end names look like this (a region, a role, a number). */
const MICROSOFT_HOST = 'SN4PR0501CA0123.outlook.office365.com';
const MICROSOFT_BACKEND = 'SN4PR0501MB3886.namprd05.prod.outlook.com';

/** "[SN4PR0501CA0123.namprd05.prod.outlook.com 2026-12-07T04:52:37.123Z 08DE1234ABCD5678]" */
function microsoftDiagnostics(): string {
  return `[${MICROSOFT_HOST.replace('.outlook.office365.com', '.namprd05.prod.outlook.com')} ${new Date().toISOString()} 08DE${randomBytes(6).toString('hex').toUpperCase()}]`;
}

function microsoftDate(now = new Date()): string {
  const [weekday, , month] = now.toUTCString().split(' ');
  return `${weekday} ${now.getUTCDate()} ${month} ${now.getUTCFullYear()} ${now.toISOString().slice(11, 19)} +0000`;
}

/** Google's per-session trace tag at the end of its replies ("a640c23a62f3a-abc12345.67 - gsmtp"). */
function gsmtp(): string {
  return `${randomBytes(7).toString('hex').slice(0, 13)}-${randomBytes(5).toString('hex')}sm${Math.floor(Math.random() * 9_000_000 + 1_000_000)}.${Math.floor(Math.random() * 90 + 10)} - gsmtp`;
}

let signingKey: KeyObject | undefined;

/** An RS256 JWT with the claims Entra ID puts in an Exchange Online token, about 2 KB long. */
function microsoftJwt(grant: { mailbox: string; clientId: string; lifetimeSeconds: number; scope?: string }): string {
  // A token is for one resource: Exchange's SMTP AUTH or Microsoft Graph, as the scope asked.
  const graph = (grant.scope ?? '').includes('https://graph.microsoft.com/');
  signingKey ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const now = Math.floor(Date.now() / 1000);
  const tenant = randomUUID();
  const appOnly = grant.mailbox === '*';
  const header = { typ: 'JWT', nonce: randomBytes(32).toString('base64url'), alg: 'RS256', x5t: randomBytes(20).toString('base64url'), kid: randomBytes(20).toString('base64url') };
  const claims = {
    aud: graph ? 'https://graph.microsoft.com' : 'https://outlook.office.com',
    iss: `https://sts.windows.net/${tenant}/`,
    iat: now,
    nbf: now,
    exp: now + grant.lifetimeSeconds,
    acct: 0,
    acr: '1',
    aio: randomBytes(90).toString('base64url'),
    app_displayname: 'smtp-oauth-relay',
    appid: grant.clientId,
    appidacr: '1',
    idtyp: appOnly ? 'app' : 'user',
    ipaddr: '203.0.113.5',
    oid: randomUUID(),
    puid: randomBytes(8).toString('hex').toUpperCase(),
    rh: `1.${randomBytes(40).toString('base64url')}.`,
    ...(appOnly ? { roles: [graph ? 'Mail.Send' : 'SMTP.SendAsApp'] } : { scp: graph ? 'Mail.Send' : 'SMTP.Send', name: 'Scanner', upn: grant.mailbox, unique_name: grant.mailbox, amr: ['pwd', 'mfa'], sid: randomUUID() }),
    sub: randomBytes(32).toString('base64url'),
    tid: tenant,
    uti: randomBytes(16).toString('base64url'),
    ver: '1.0',
    wids: ['b79fbf4d-3ef9-4689-8143-76b194e85509'],
    xms_ftd: randomBytes(48).toString('base64url'),
    xms_idrel: '1 12',
    xms_st: { sub: randomBytes(32).toString('base64url') },
    xms_tcdt: now - 40_000_000,
  };
  const signed = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${signed}.${createSign('RSA-SHA256').update(signed).sign(signingKey).toString('base64url')}`;
}

const MICROSOFT: ProviderProfile = {
  name: 'microsoft',
  greeting: () => `${MICROSOFT_HOST} Microsoft ESMTP MAIL Service ready at ${microsoftDate()}`,
  ehlo: (secure, clientAddress) => [
    `${MICROSOFT_HOST} Hello [${clientAddress}]`,
    'SIZE 157286400',
    'PIPELINING',
    'DSN',
    'ENHANCEDSTATUSCODES',
    secure ? 'AUTH LOGIN XOAUTH2' : 'STARTTLS',
    '8BITMIME',
    'BINARYMIME',
    'CHUNKING',
    'SMTPUTF8',
  ],
  startTlsReply: '2.0.0 SMTP server ready',
  advertisedSize: 157_286_400,
  defaultMessageLimit: 35 * 1024 * 1024,
  authSucceeded: '2.7.0 Authentication successful',
  accepted: (id) => `2.0.0 OK <${id}@${MICROSOFT_BACKEND}> [Hostname=${MICROSOFT_BACKEND}] Queued mail for delivery`,
  get replies(): ProfileReplies {
    return {
      tokenRefused: { code: 535, message: `5.7.3 Authentication unsuccessful ${microsoftDiagnostics()}` },
      undecodableLogin: { code: 501, message: '5.5.124 Invalid XOAUTH2 auth data' },
      basicRefused: { code: 535, message: `5.7.139 Authentication unsuccessful, basic authentication is disabled. ${microsoftDiagnostics()}` },
      smtpAuthDisabled: { code: 535, message: `5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. ${microsoftDiagnostics()}` },
      throttled: { code: 432, message: `4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=${MICROSOFT_BACKEND}]` },
      quotaExceeded: { code: 554, message: `5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Message submission quota exceeded. [Hostname=${MICROSOFT_BACKEND}]` },
      tooLarge: { code: 552, message: '5.3.4 Message size exceeds fixed maximum message size' },
      sendAsDenied: { code: 550, message: `5.7.60 SMTP; Client does not have permissions to send as this sender [${MICROSOFT_BACKEND}]` },
      unknownRecipient: { code: 550, message: '5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' },
    };
  },
  accessToken: microsoftJwt,
};

const GOOGLE: ProviderProfile = {
  name: 'google',
  greeting: () => `smtp.gmail.com ESMTP ${gsmtp()}`,
  ehlo: (secure, clientAddress) => [
    `smtp.gmail.com at your service, [${clientAddress}]`,
    'SIZE 35882577',
    '8BITMIME',
    ...(secure ? ['AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH'] : ['STARTTLS']),
    'ENHANCEDSTATUSCODES',
    'PIPELINING',
    'CHUNKING',
    'SMTPUTF8',
  ],
  startTlsReply: '2.0.0 Ready to start TLS',
  advertisedSize: 35_882_577,
  defaultMessageLimit: 35_882_577,
  tokenChallenge: { status: '401', schemes: 'Bearer', scope: 'https://mail.google.com/' },
  authSucceeded: '2.7.0 Accepted',
  accepted: (id) => `2.0.0 OK  ${Math.floor(Date.now() / 1000)} ${id.toLowerCase()} - gsmtp`,
  get replies(): ProfileReplies {
    const badCredentials = { code: 535, message: `5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  https://support.google.com/mail/?p=BadCredentials ${gsmtp()}` };
    return {
      tokenRefused: badCredentials,
      undecodableLogin: { code: 501, message: `5.5.2 Cannot Decode response ${gsmtp()}` },
      basicRefused: badCredentials,
      throttled: { code: 421, message: `4.7.0 Try again later, closing connection. (MAIL) ${gsmtp()}` },
      quotaExceeded: { code: 550, message: `5.4.5 Daily user sending limit exceeded. For more information on Gmail\n5.4.5 sending limits go to\n5.4.5  https://support.google.com/a/answer/166852 ${gsmtp()}` },
      tooLarge: { code: 552, message: `5.3.4 Your message exceeded Google's message size limits. For more information, go to\n5.3.4  https://support.google.com/mail/?p=MaxSizeError ${gsmtp()}` },
      unknownRecipient: { code: 550, message: `5.1.1 The email account that you tried to reach does not exist. Please try\n5.1.1 double-checking the recipient's email address for typos or\n5.1.1 unnecessary spaces. For more information, go to\n5.1.1  https://support.google.com/mail/?p=NoSuchUser ${gsmtp()}` },
    };
  },
  accessToken: () => `ya29.a0${randomBytes(150).toString('base64url')}`,
};

/** The XOAUTH2-only server the stand-in used to be (smtp-server's own wording): for relays to custom upstreams. */
const GENERIC: ProviderProfile = {
  name: 'generic',
  greeting: () => 'localhost ESMTP',
  ehlo: (secure, clientAddress, size) => [
    `localhost Nice to meet you, [${clientAddress}]`,
    'PIPELINING',
    '8BITMIME',
    'SMTPUTF8',
    'ENHANCEDSTATUSCODES',
    'DSN',
    secure ? 'AUTH XOAUTH2' : 'STARTTLS',
    `SIZE ${size}`,
  ],
  startTlsReply: '2.0.0 Ready to start TLS',
  defaultMessageLimit: 35_882_577,
  authSucceeded: '2.7.0 Authentication successful',
  accepted: (id) => `2.0.0 <${id}@fake-provider> Queued mail for delivery`,
  replies: {
    tokenRefused: { code: 535, message: '5.7.8 Error: authentication failed' },
    undecodableLogin: { code: 501, message: '5.5.2 Error: invalid userdata' },
    basicRefused: { code: 504, message: '5.5.4 Unrecognized authentication type' },
    smtpAuthDisabled: { code: 535, message: '5.7.8 Error: authentication failed: SMTP AUTH disabled' },
    throttled: { code: 421, message: '4.7.0 Too many connections, try again later' },
    quotaExceeded: { code: 550, message: '5.4.5 Sending quota exceeded' },
    tooLarge: { code: 552, message: '5.3.4 Message too big' },
    sendAsDenied: { code: 550, message: '5.7.1 Sender address rejected: not owned by user' },
    unknownRecipient: { code: 550, message: '5.1.1 Recipient address rejected: User unknown' },
  },
  accessToken: () => `at-${randomBytes(16).toString('hex')}`,
};

export const PROFILES: Record<ProviderProfileName, ProviderProfile> = { microsoft: MICROSOFT, google: GOOGLE, generic: GENERIC };
