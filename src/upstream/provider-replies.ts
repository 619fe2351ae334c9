import type { FailureReason } from '../reply.js';

/**
 * What to do about an upstream reply:
 * - hold: the account is misconfigured or out of quota; retrying each message would not help, so
 *   its queue waits (messages do not expire meanwhile) and is tried again later;
 * - permanent: the message (or recipient) will never go through as it is;
 * - defer: try again later (backoff).
 */
export type ReplyAction = 'hold' | 'permanent' | 'defer';

export interface ProviderVerdict {
  action: ReplyAction;
  /** The metric and log reason. */
  reason: FailureReason;
  /** One line an administrator can act on. */
  hint: string;
}

interface KnownReply {
  /** The enhanced status code (RFC 3463) the providers use for it. */
  enhanced: string;
  /** Tells variants of one code apart, on the provider's words (lower-cased). */
  text?: RegExp;
  verdict: ProviderVerdict;
}

const SET_CAS = 'Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false';

/** Exchange Online and Gmail replies seen in 2026, most specific first. */
const KNOWN_REPLIES: KnownReply[] = [
  {
    enhanced: '5.7.139',
    text: /security defaults/,
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: "Entra security defaults block SMTP AUTH for this user: turn security defaults off (Entra ID > Properties) and use Conditional Access, or use High Volume Email" },
  },
  {
    enhanced: '5.7.139',
    text: /did not meet the criteria/,
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: `SMTP AUTH is disabled for the mailbox: ${SET_CAS}` },
  },
  {
    enhanced: '5.7.139',
    text: /disabled for the tenant/,
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: `SMTP AUTH is disabled for the tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or per mailbox: ${SET_CAS}` },
  },
  {
    enhanced: '5.7.139',
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: `the organization configuration does not allow SMTP AUTH: check the authentication policy and Set-TransportConfig, then ${SET_CAS}` },
  },
  {
    enhanced: '5.7.57',
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: 'the upstream saw no login before MAIL FROM: check upstream.host/port (smtp.office365.com:587) and that the account uses XOAUTH2' },
  },
  {
    enhanced: '4.2.0',
    text: /mapiexceptionlogonfailed/,
    verdict: {
      action: 'hold',
      reason: 'account_misconfigured',
      hint: 'the app cannot open the mailbox: register its service principal in Exchange (New-ServicePrincipal -AppId <clientId> -ObjectId <enterprise app object id>) and grant it the mailbox (Add-MailboxPermission -User <service principal> -AccessRights FullAccess, or RBAC for Applications with Application SMTP.SendAsApp)',
    },
  },
  {
    enhanced: '5.7.3',
    verdict: { action: 'defer', reason: 'upstream_auth', hint: 'the token is not accepted for this mailbox: the XOAUTH2 user must be the licensed mailbox the token belongs to; a shared mailbox cannot sign in (sign in as a user with Send As on it and list it in sendAs)' },
  },
  {
    enhanced: '5.7.60',
    verdict: { action: 'permanent', reason: 'send_as_denied', hint: 'the mailbox may not send as this From: grant it "Send As" on that address (Add-RecipientPermission) or remove the address from sendAs' },
  },
  {
    enhanced: '5.2.252',
    verdict: { action: 'permanent', reason: 'send_as_denied', hint: 'SendAsDenied: grant the mailbox "Send As" on the From address (Add-RecipientPermission) or remove it from sendAs' },
  },
  {
    enhanced: '4.7.66',
    verdict: { action: 'defer', reason: 'upstream_deferred', hint: 'Microsoft refused legacy TLS on the upstream connection; the relay itself always uses TLS 1.2+, so look for a TLS-intercepting proxy between the relay and Microsoft' },
  },
  {
    enhanced: '5.5.105',
    verdict: { action: 'permanent', reason: 'external_recipient', hint: 'High Volume Email delivers to recipients inside your organization only: send external mail through a normal mailbox account' },
  },
  {
    enhanced: '5.4.5',
    verdict: { action: 'hold', reason: 'quota_exhausted', hint: "Gmail's daily sending quota is used up (2,000 messages, 500 on trial accounts): the queue waits and resumes when it frees up" },
  },
  {
    enhanced: '4.7.0',
    text: /too many login attempts/,
    verdict: { action: 'defer', reason: 'upstream_auth', hint: 'Gmail is throttling logins for this account; the relay retries later (several relays or apps signing in as one account make this worse)' },
  },
  {
    enhanced: '5.7.8',
    verdict: { action: 'defer', reason: 'upstream_auth', hint: 'Gmail refused the token: check that the scope is https://mail.google.com/ and the mailbox is the signed-in account (or delegated to the service account)' },
  },
];

/** The relay's reading of a provider reply ("535 5.7.139 Authentication unsuccessful, ..."), when it knows it. */
export function explainReply(response: string | undefined): ProviderVerdict | undefined {
  if (!response) return undefined;
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(response)?.[1];
  if (!enhanced) return undefined;
  const text = response.toLowerCase();
  return KNOWN_REPLIES.find((known) => known.enhanced === enhanced && (!known.text || known.text.test(text)))?.verdict;
}
