/**
 * The outcome of anything that answers a device: a reply code, its RFC 3463 enhanced status code
 * and text, plus a low-cardinality reason for metrics and logs. Mapped to the wire in one place
 * (the listener), never compared by message text.
 */
export interface SmtpReply {
  code: number;
  enhanced: string;
  text: string;
}

export type FailureReason =
  | 'too_large'
  | 'header_too_large'
  | 'bare_line_ending'
  | 'upstream_rejected'
  | 'upstream_deferred'
  | 'upstream_auth'
  | 'upstream_unreachable'
  | 'upstream_tls'
  | 'token_unavailable'
  | 'needs_reauth'
  /** The provider refuses the account as configured (SMTP AUTH off, no mailbox permission): held. */
  | 'account_misconfigured'
  /** The provider's sending quota is used up: held until it frees up. */
  | 'quota_exhausted'
  /** The mailbox may not send as the From address. */
  | 'send_as_denied'
  /** High Volume Email refuses recipients outside the organization. */
  | 'external_recipient'
  | 'spool_full'
  /** The device hung up before the end of DATA: nothing was kept. */
  | 'disconnected'
  | 'expired'
  | 'internal'
  /** Refused by the listener's policy (networks, lockouts, recipients): not a message failure. */
  | 'policy';

export const FAILURE_REASONS: readonly FailureReason[] = [
  'too_large',
  'header_too_large',
  'bare_line_ending',
  'upstream_rejected',
  'upstream_deferred',
  'upstream_auth',
  'upstream_unreachable',
  'upstream_tls',
  'token_unavailable',
  'needs_reauth',
  'account_misconfigured',
  'quota_exhausted',
  'send_as_denied',
  'external_recipient',
  'spool_full',
  'disconnected',
  'expired',
  'internal',
];

/**
 * Refusals of what the device sent (its size, its header, its line endings): the device is told,
 * and the log says so as a warning, wherever in the session it was refused. Not the relay's fault.
 */
export const DEVICE_INPUT_REASONS: ReadonlySet<FailureReason> = new Set(['too_large', 'header_too_large', 'bare_line_ending', 'policy']);

/** Failures that say the account, not the message, must be fixed: its queue waits instead of retrying each message. */
export const HOLDING_REASONS: ReadonlySet<FailureReason> = new Set(['needs_reauth', 'account_misconfigured', 'quota_exhausted']);

export class SmtpError extends Error {
  /** smtp-server answers an error with err.responseCode and err.message. */
  readonly responseCode: number;
  /** What an administrator can do about it, when the relay knows. */
  readonly hint?: string;

  constructor(
    readonly reply: SmtpReply,
    readonly reason: FailureReason,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`${reply.enhanced} ${reply.text}`, options);
    this.name = 'SmtpError';
    this.responseCode = reply.code;
    this.hint = options?.hint ?? (options?.cause as { hint?: string } | undefined)?.hint;
  }

  get holdsAccount(): boolean {
    return HOLDING_REASONS.has(this.reason);
  }

  get isTemporary(): boolean {
    return this.reply.code < 500;
  }
}

export function defer(reason: FailureReason, text: string, enhanced = '4.3.0', cause?: unknown, hint?: string): SmtpError {
  return new SmtpError({ code: 451, enhanced, text }, reason, { cause, hint });
}

/** Any failure as a reply: an SmtpError as it is, anything else a local fault (4xx, never 5xx). */
export function asSmtpError(error: unknown): SmtpError {
  return error instanceof SmtpError ? error : defer('internal', 'Local error; try again later', '4.3.0', error);
}

export function reject(reason: FailureReason, code: number, enhanced: string, text: string, cause?: unknown, hint?: string): SmtpError {
  return new SmtpError({ code, enhanced, text }, reason, { cause, hint });
}
