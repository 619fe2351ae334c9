import { SmtpError, defer, reject } from '../reply.js';
import { TokenError } from '../oauth/index.js';
import { explainReply } from './provider-replies.js';
import { NoXOAuth2Offered } from './xoauth2-login.js';

/** What nodemailer attaches to its errors; classified on these fields, never on message text. */
export interface NodemailerError extends Error {
  code?: string;
  originalCode?: string;
  responseCode?: number;
  response?: string;
  command?: string;
}

const UNREACHABLE = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'EPROXY']);

/** "550 5.7.60 SMTP; Client does not..." → its parts; the enhanced code defaults from the class. */
export function parseReply(response: string): { code: number; enhanced: string; text: string } | undefined {
  const match = /^([2-5]\d\d)[ -](?:([2-5]\.\d{1,3}\.\d{1,3}) )?(.*)$/s.exec(response.trim());
  if (!match) return undefined;
  const code = Number(match[1]);
  // Multi-line replies arrive joined by newlines; one line is enough for a device.
  const text = match[3].replace(/\r?\n\d{3}[ -](\d\.\d{1,3}\.\d{1,3} )?/g, ' ').trim();
  return { code, enhanced: match[2] ?? `${String(code)[0]}.0.0`, text };
}

/**
 * Maps a failed upstream send to the reply the device gets. A problem of the relay's own (login,
 * token, TLS, network) is 451 so the device keeps the message; only the upstream's verdict on the
 * message or its recipients is passed on as 5xx.
 */
export function classifySendError(error: unknown, account: string): SmtpError {
  if (error instanceof SmtpError) return error;
  if (error instanceof TokenError) {
    return error.kind === 'reauth'
      ? defer('needs_reauth', `Relay account ${account} needs to be signed in again; message not sent, try later`, '4.7.0', error)
      : defer('token_unavailable', `Relay account ${account} cannot reach its OAuth token service; try later`, '4.4.3', error);
  }
  if (error instanceof NoXOAuth2Offered) {
    const hint = `the upstream server ${error.message} after STARTTLS; the relay logs in with XOAUTH2 only and never sends a password: set upstream.host to the provider's submission server (smtp.office365.com or smtp.gmail.com, port 587)`;
    return defer('account_misconfigured', `Relay account ${account} cannot send now: the upstream offers no XOAUTH2 login; try later`, '4.7.0', error, hint);
  }
  const err = error as NodemailerError;
  const known = explainReply(err.response);
  const reply = err.response ? parseReply(err.response) : undefined;
  const refusedLogin = err.code === 'EAUTH' ? `Upstream refused the relay account ${account}${err.response ? `: ${err.response.split(/\r?\n/)[0]}` : ''}` : undefined;
  if (known && reply) {
    if (known.action === 'permanent') return reject(known.reason, reply.code >= 500 ? reply.code : 550, reply.enhanced, `Upstream: ${reply.text}`, error, known.hint);
    // Held or deferred, the device keeps its message (451); a 5xx about the account is not about the message.
    const text = known.action === 'hold' ? `Relay account ${account} cannot send now (${reply.enhanced}); try later` : (refusedLogin ?? `Upstream: ${reply.text}`);
    return defer(known.reason, text, reply.code >= 500 ? '4.7.0' : reply.enhanced, error, known.hint);
  }
  if (refusedLogin) return defer('upstream_auth', refusedLogin, '4.7.0', error);
  if (err.code === 'ETLS' || isCertificateError(err)) {
    return defer('upstream_tls', 'Upstream TLS failed; the relay will not send in clear text', '4.7.10', error);
  }
  if (err.code && UNREACHABLE.has(err.code)) {
    return defer('upstream_unreachable', 'Upstream mail server unreachable; try later', '4.4.1', error);
  }
  if (reply && reply.code >= 500) return reject('upstream_rejected', reply.code, reply.enhanced, `Upstream: ${reply.text}`, error);
  if (reply && reply.code >= 400) return defer('upstream_deferred', `Upstream: ${reply.text}`, reply.enhanced, error);
  // nodemailer refuses before MAIL FROM, with no reply, when the upstream's SIZE is smaller.
  if (err.code === 'EMESSAGE' && err.command === 'MAIL FROM') {
    return reject('too_large', 552, '5.3.4', 'Message is larger than the upstream accepts', error);
  }
  return defer('internal', 'Local error while relaying; try later', '4.3.0', error);
}

function isCertificateError(err: NodemailerError): boolean {
  const code = err.originalCode ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code);
}
