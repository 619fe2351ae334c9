import { SmtpError, defer, reject } from '../reply.js';
import type { TransportName } from '../config/index.js';
import { classifySendError } from './classify.js';
import { RecipientsOutsideEnvelope } from './header-recipients.js';
import { ApiRefusal } from './http-api.js';
import type { ProviderVerdict } from './provider-replies.js';

/**
 * What the relay makes of a Microsoft Graph or Gmail API refusal, from the providers' documented
 * errors (Graph: "Microsoft Graph error responses", the Outlook mail API's error codes and
 * throttling; Gmail: "Resolve errors" of the Gmail API guide). Like SMTP replies: the account's
 * configuration holds its queue with the fix, the message's fault is permanent, the rest defers.
 */
interface KnownRefusal {
  transport: TransportName;
  status?: number;
  codes?: readonly string[];
  verdict: ProviderVerdict;
}

const GRAPH_MAIL_SEND =
  'grant the app the Microsoft Graph application permission Mail.Send (with admin consent), or only for some mailboxes Exchange RBAC for Applications: ' +
  "New-ServicePrincipal -AppId <clientId> -ObjectId <enterprise app object id>; New-ManagementScope -Name relay-senders -RecipientRestrictionFilter \"PrimarySmtpAddress -eq '<mailbox>'\"; " +
  "New-ManagementRoleAssignment -App <clientId> -Role 'Application Mail.Send' -CustomResourceScope relay-senders (a delegated sign-in needs the Mail.Send consent)";
const GMAIL_SEND_SCOPE =
  'the token lacks https://www.googleapis.com/auth/gmail.send: sign in again and consent to it, or for a service account add that scope to its domain-wide delegation entry (Admin console > Security > API controls > Domain-wide delegation)';

const KNOWN_REFUSALS: KnownRefusal[] = [
  { transport: 'graph', status: 401, verdict: { action: 'hold', reason: 'account_misconfigured', hint: `Graph refused a fresh token: it must be issued for https://graph.microsoft.com (scopes), and ${GRAPH_MAIL_SEND}` } },
  { transport: 'graph', codes: ['ErrorSendAsDenied'], verdict: { action: 'permanent', reason: 'send_as_denied', hint: 'the mailbox may not send as this From: grant it "Send As" on that address (Add-RecipientPermission) or remove the address from sendAs' } },
  { transport: 'graph', status: 403, verdict: { action: 'hold', reason: 'account_misconfigured', hint: GRAPH_MAIL_SEND } },
  {
    transport: 'graph',
    codes: ['MailboxNotEnabledForRESTAPI', 'MailboxNotSupportedForRESTAPI'],
    verdict: { action: 'hold', reason: 'account_misconfigured', hint: 'the mailbox cannot use Graph: it is inactive, soft-deleted, unlicensed or on-premises; use a licensed Exchange Online mailbox (or transport smtp)' },
  },
  { transport: 'graph', codes: ['ErrorInvalidUser', 'ResourceNotFound', 'Request_ResourceNotFound'], verdict: { action: 'hold', reason: 'account_misconfigured', hint: 'Graph knows no mailbox by this address: check the account\'s mailbox (its primary SMTP address)' } },
  { transport: 'graph', codes: ['ErrorQuotaExceeded', 'ErrorSubmissionQuotaExceeded'], verdict: { action: 'hold', reason: 'quota_exhausted', hint: "the mailbox's sending quota is used up: the queue waits and resumes when it frees up" } },
  { transport: 'graph', codes: ['ErrorMessageSizeExceeded'], verdict: { action: 'permanent', reason: 'too_large', hint: 'larger than the mailbox may send (its MaxSendSize)' } },
  { transport: 'graph', codes: ['ErrorInvalidRecipients'], verdict: { action: 'permanent', reason: 'upstream_rejected', hint: 'Graph refused the recipient addresses as invalid' } },
  { transport: 'gmail', status: 401, verdict: { action: 'hold', reason: 'account_misconfigured', hint: `the Gmail API refused a fresh token: ${GMAIL_SEND_SCOPE}` } },
  { transport: 'gmail', codes: ['dailyLimitExceeded', 'quotaExceeded'], verdict: { action: 'hold', reason: 'quota_exhausted', hint: "Gmail's daily sending quota is used up (2,000 messages, 500 on trial accounts): the queue waits and resumes when it frees up" } },
  { transport: 'gmail', codes: ['rateLimitExceeded', 'userRateLimitExceeded'], verdict: { action: 'defer', reason: 'upstream_deferred', hint: 'the Gmail API is throttling this account; the relay waits as it asks' } },
  { transport: 'gmail', codes: ['accessNotConfigured', 'SERVICE_DISABLED'], verdict: { action: 'hold', reason: 'account_misconfigured', hint: 'the Gmail API is not enabled in the Google Cloud project of the OAuth client: enable it (APIs & Services > Library > Gmail API)' } },
  { transport: 'gmail', status: 403, verdict: { action: 'hold', reason: 'account_misconfigured', hint: GMAIL_SEND_SCOPE } },
  { transport: 'gmail', codes: ['failedPrecondition', 'invalidArgument'], verdict: { action: 'permanent', reason: 'upstream_rejected', hint: 'the Gmail API refused the message as it is' } },
];

/** The relay's reading of an API refusal, when it knows it. */
function explainRefusal(transport: TransportName, refusal: ApiRefusal): ProviderVerdict | undefined {
  return KNOWN_REFUSALS.find((known) => known.transport === transport && (known.status === undefined || known.status === refusal.status) && (!known.codes || known.codes.includes(refusal.code)))?.verdict;
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH']);

/** What the device (or the queue) is told about a failed API send. */
export function classifyApiError(error: unknown, account: string, transport: TransportName): SmtpError {
  if (error instanceof SmtpError) return error;
  if (error instanceof RecipientsOutsideEnvelope) {
    const hint = `transport ${transport} delivers to the addresses in To, Cc and Bcc: every one must also be an envelope recipient (RCPT TO), or send through transport smtp`;
    return reject('upstream_rejected', 550, '5.7.1', `Message names recipients it is not addressed to (${error.addresses.slice(0, 3).join(', ')}); not sent`, error, hint);
  }
  if (error instanceof ApiRefusal) return classifyRefusal(error, account, transport);
  const code = (error as { code?: string }).code ?? '';
  if (UNREACHABLE.has(code)) return defer('upstream_unreachable', 'Upstream API unreachable; try later', '4.4.1', error);
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code)) return defer('upstream_tls', 'Upstream TLS failed; the relay will not send in clear text', '4.7.10', error);
  return classifySendError(error, account); // token errors, and anything else as a local fault
}

function classifyRefusal(refusal: ApiRefusal, account: string, transport: TransportName): SmtpError {
  const known = explainRefusal(transport, refusal);
  const words = `Upstream API: ${refusal.message}`;
  if (known?.action === 'hold') return defer(known.reason, `Relay account ${account} cannot send now (HTTP ${refusal.status} ${refusal.code}); try later`, '4.7.0', refusal, known.hint);
  if (known?.action === 'permanent' || refusal.status === 413 || (refusal.status === 400 && !known)) {
    const reason = known?.reason ?? (refusal.status === 413 ? 'too_large' : 'upstream_rejected');
    const [code, enhanced] = reason === 'too_large' ? [552, '5.3.4'] : reason === 'send_as_denied' ? [550, '5.7.60'] : refusal.code === 'ErrorInvalidRecipients' ? [550, '5.1.3'] : [554, '5.6.0'];
    return reject(reason, code, enhanced, words, refusal, known?.hint);
  }
  if (refusal.status >= 300 && refusal.status < 400) {
    return defer('upstream_unreachable', 'Upstream API answered with a redirect, which the relay does not follow; try later', '4.4.1', refusal, 'check upstream.apiUrl: it must be the API itself (https://graph.microsoft.com or https://gmail.googleapis.com)');
  }
  return defer(known?.reason ?? 'upstream_deferred', words, refusal.status === 429 ? '4.7.0' : '4.3.2', refusal, known?.hint);
}
