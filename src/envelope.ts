/**
 * What a device asked for with RFC 3461 (DSN) parameters, kept with the message: RET and ENVID
 * from MAIL FROM, NOTIFY and ORCPT per recipient (keyed by the address as given in RCPT TO).
 */
export interface DsnRequest {
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  recipients?: Record<string, { notify?: string[]; orcpt?: string }>;
}

/**
 * What a device declared of its message at MAIL FROM, kept with it and declared again upstream:
 * 8-bit content (BODY=8BITMIME, RFC 6152) and UTF-8 in addresses or headers (SMTPUTF8, RFC 6531).
 */
export interface DeclaredContent {
  eightBitMime?: true;
  smtpUtf8?: true;
}

/** smtp-server's reading of BODY= and SMTPUTF8 on MAIL FROM. */
export function declaredContent(envelope: { bodyType?: string; smtpUtf8?: boolean }): DeclaredContent {
  return { ...(envelope.bodyType === '8bitmime' ? { eightBitMime: true } : {}), ...(envelope.smtpUtf8 ? { smtpUtf8: true } : {}) };
}

export type NoticeKind = 'FAILURE' | 'DELAY';

/**
 * Whether the sender wants to hear of this about this recipient. Without NOTIFY, failures are
 * reported and delays are not (RFC 3461 4.1 leaves that to the MTA; Postfix does the same).
 */
export function wantsNotice(dsn: DsnRequest | undefined, recipient: string, kind: NoticeKind): boolean {
  const notify = dsn?.recipients?.[recipient]?.notify;
  return notify ? notify.includes(kind) : kind === 'FAILURE';
}

/**
 * The DSN parameters for an upstream transaction to these recipients: RET and ENVID, and NOTIFY
 * when every recipient asked the same (one transaction carries one NOTIFY). nodemailer sends them
 * only when the upstream offers DSN.
 */
export function upstreamDsn(dsn: DsnRequest | undefined, recipients: readonly string[]): { ret?: string; envid?: string; notify?: string[] } | undefined {
  if (!dsn) return undefined;
  const notices = new Set(recipients.map((recipient) => dsn.recipients?.[recipient]?.notify?.join(',') ?? ''));
  const [notify] = notices;
  const result = { ret: dsn.ret, envid: dsn.envid, notify: notices.size === 1 && notify ? notify.split(',') : undefined };
  return result.ret || result.envid || result.notify ? result : undefined;
}
