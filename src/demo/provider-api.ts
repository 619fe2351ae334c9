import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { HeaderCollector, buildHeader } from '../util/header-fields.js';
import { headerRecipients } from '../upstream/header-recipients.js';

/**
 * The stand-in's HTTP mail APIs, as documented:
 * - Microsoft Graph `POST /v1.0/users/{id}/sendMail` with a MIME message, base64, as text/plain
 *   (learn.microsoft.com/graph/api/user-sendmail, "Example 4: Send a new message using MIME
 *   format"; learn.microsoft.com/graph/outlook-send-mime-message): 202 Accepted with no body, the
 *   request limited to 4 MB; error bodies {"error": {"code", "message"}} (learn.microsoft.com/graph/errors),
 *   throttling 429 with Retry-After ("Application is over its MailboxConcurrency limit.",
 *   learn.microsoft.com/graph/throttling-limits#outlook-service-limits).
 * - Gmail `POST /upload/gmail/v1/users/{userId}/messages/send?uploadType=media` with the message
 *   as message/rfc822 (developers.google.com/gmail/api/guides/uploads and
 *   .../reference/rest/v1/users.messages/send): 200 with the Message resource, at most 35 MB;
 *   error bodies {"error": {"code", "message", "errors": [{"reason"}], "status"}}
 *   (developers.google.com/gmail/api/guides/handle-errors).
 * Both deliver to the addresses in To, Cc and Bcc and remove Bcc from the copies.
 */

export interface ApiScriptedAnswer {
  status: number;
  body?: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** What the API needs of the stand-in provider it belongs to. */
export interface ApiBackend {
  /** The token's mailbox ('*' for an app) and granted scope when it is valid now; undefined otherwise. */
  bearer(token: string): { mailbox: string; scope: string } | undefined;
  knowsMailbox(mailbox: string): boolean;
  /** Records a delivered message; resolves with the provider's message id. */
  deliver(mailbox: string, raw: Buffer, to: string[], via: 'graph' | 'gmail'): Promise<string>;
  /** The next scripted answer for a send, if any (429, 503, ...). */
  nextScripted(): ApiScriptedAnswer | undefined;
  /** The app lacks the permission to send (Graph Mail.Send / RBAC; Gmail scope): 403. */
  sendDenied(): boolean;
  /** The message's From is not one the mailbox may send as (Graph: 403 ErrorSendAsDenied). */
  sendAsRefused(mailbox: string, raw: Buffer): boolean;
  /** Messages delivered with this Message-ID, one row per recipient, for Exchange's message trace. */
  traced(messageId: string): { recipient: string; at: string; from: string; size: number; status: string }[];
}

const GRAPH_MIME_LIMIT = 4 * 1024 * 1024;
const GMAIL_API_LIMIT = 35 * 1024 * 1024;

type Answer = (status: number, body?: Record<string, unknown>, headers?: Record<string, string>) => void;

interface Upload {
  name: string;
  contentType: string;
  size: number;
  chunks: Buffer[];
  received: number;
}

const GRAPH_ATTACHMENT_LIMIT = 150 * 1024 * 1024;
const UPLOAD_CHUNK_LIMIT = 4 * 1024 * 1024;

export class ProviderApiServer {
  private readonly server: Server;
  private readonly drafts = new Map<string, { mailbox: string; raw: Buffer; attachments: Upload[] }>();
  private readonly uploads = new Map<string, Upload>();
  /** What Graph filed in Sent Items: id → mailbox and Message-ID. */
  readonly sentItems = new Map<string, { mailbox: string; internetMessageId: string }>();
  /** The app has Mail.Send only: listing or deleting in the mailbox gets 403. */
  mailReadWriteDenied = false;
  readonly trace = new MessageTraceState();
  /** Gmail sends whose message body has begun to arrive (one broken off is begun, never delivered). */
  bodiesBegun = 0;
  /** Every send request as received: path, content type, and the Authorization scheme. */
  readonly requests: { path: string; contentType: string; status: number }[] = [];
  url = '';

  constructor(private readonly backend: ApiBackend) {
    this.server = createServer((request, response) => {
      void this.route(request, response).catch(() => {
        if (!response.headersSent) json(response, 500, { error: { code: 'InternalServerError', message: 'stand-in failure' } });
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private async route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (request.method === 'GET' && url.pathname.startsWith('/v1.0/admin/exchange/tracing/messageTraces')) return this.messageTrace(request, url, response);
    const answer = (status: number, body?: Record<string, unknown>, headers?: Record<string, string>) => {
      this.requests.push({ path: url.pathname, contentType: String(request.headers['content-type'] ?? ''), status });
      if (status >= 300) request.resume(); // the rest of a refused body is read and dropped
      json(response, status, body, headers);
    };
    if (request.method === 'PUT' && url.pathname.startsWith('/upload-sessions/')) return this.uploadChunk(request, url.pathname.slice('/upload-sessions/'.length), answer);
    const graph = /^\/v1\.0\/users\/([^/]+)\/(sendMail|mailFolders\/SentItems\/messages|messages(?:\/([^/]+)(?:\/(send|attachments\/createUploadSession))?)?)$/.exec(url.pathname);
    const gmail = /^\/upload\/gmail\/v1\/users\/([^/]+)\/messages\/send$/.exec(url.pathname);
    if (!graph && !gmail) return answer(404, { error: { code: 'ResourceNotFound', message: 'Resource not found for the segment.' } });
    const api = graph ? GRAPH : GMAIL;
    const userId = decodeURIComponent((graph ?? gmail)![1]);
    const token = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
    const grant = token ? this.backend.bearer(token) : undefined;
    if (!grant) return answer(401, api.invalidToken);
    if (!api.scopeGranted(grant.scope)) return graph ? answer(401, GRAPH.wrongAudience) : answer(403, GMAIL.insufficientScope);
    const mailbox = graph || userId !== 'me' ? userId : grant.mailbox;
    if (!this.backend.knowsMailbox(mailbox)) return answer(404, api.unknownUser(mailbox));
    if (grant.mailbox !== '*' && grant.mailbox.toLowerCase() !== mailbox.toLowerCase()) return answer(403, api.accessDenied);
    if (this.backend.sendDenied()) return answer(403, api.accessDenied);
    if (graph && (graph[2] === 'mailFolders/SentItems/messages' || (request.method === 'DELETE' && graph[3] && this.sentItems.has(decodeURIComponent(graph[3]))))) return this.sentItemsRoute(request, url, mailbox, graph[3] && decodeURIComponent(graph[3]), answer);
    if (graph && graph[2] !== 'sendMail') return this.draftRoute(request, mailbox, graph[3] && decodeURIComponent(graph[3]), graph[4], answer);
    if (request.method !== 'POST') return answer(405, graphError('BadRequest', 'Method not allowed.'));
    const scripted = this.backend.nextScripted();
    if (scripted) return answer(scripted.status, scripted.body, scripted.headers);
    const raw = graph ? await this.mimeBody(request, answer) : await this.rfc822Body(request, answer);
    if (!raw) return;
    const { to, copy } = withoutBcc(raw);
    if (!to.length) return answer(400, api.noRecipients);
    if (graph && this.backend.sendAsRefused(mailbox, copy)) return answer(403, GRAPH.sendAsDenied);
    const id = await this.backend.deliver(mailbox, copy, to, graph ? 'graph' : 'gmail');
    if (graph) this.fileSentCopy(mailbox, copy);
    if (graph) return answer(202, undefined, { 'request-id': randomUUID(), 'client-request-id': randomUUID() });
    return answer(200, { id, threadId: id, labelIds: ['SENT'] });
  }

  /** Graph's MIME body: base64 as text/plain, at most 4 MB; undefined once refused. */
  private async mimeBody(request: IncomingMessage, answer: Answer): Promise<Buffer | undefined> {
    if (!String(request.headers['content-type'] ?? '').startsWith('text/plain')) return void answer(400, GRAPH.badContentType);
    const body = await readLimited(request, GRAPH_MIME_LIMIT);
    if (!body) return void answer(413, GRAPH.tooLarge);
    const raw = decodeBase64(body);
    if (!raw) return void answer(400, GRAPH.invalidBase64);
    return raw;
  }

  private async rfc822Body(request: IncomingMessage, answer: Answer): Promise<Buffer | undefined> {
    if (!String(request.headers['content-type'] ?? '').startsWith('message/rfc822')) return void answer(400, GMAIL.badContentType);
    this.bodiesBegun++;
    const body = await readLimited(request, GMAIL_API_LIMIT);
    if (!body) return void answer(413, GMAIL.tooLarge);
    return body;
  }

  /**
   * Graph's large-message path (learn.microsoft.com/graph/outlook-large-attachments): a draft from
   * MIME (201), upload sessions for its attachments, send (202), or delete.
   */
  private async draftRoute(request: IncomingMessage, mailbox: string, draftId: string | undefined, action: string | undefined, answer: Answer): Promise<void> {
    if (!draftId) {
      if (request.method !== 'POST') return answer(405, graphError('BadRequest', 'Method not allowed.'));
      const scripted = this.backend.nextScripted();
      if (scripted) return answer(scripted.status, scripted.body, scripted.headers);
      const raw = await this.mimeBody(request, answer);
      if (!raw) return;
      const id = `AAMkAD${randomBytes(24).toString('base64url')}`;
      this.drafts.set(id, { mailbox, raw, attachments: [] });
      return answer(201, { id, isDraft: true, hasAttachments: false });
    }
    const draft = this.drafts.get(draftId);
    if (!draft || draft.mailbox !== mailbox) return answer(404, graphError('ErrorItemNotFound', 'The specified object was not found in the store.'));
    if (!action && request.method === 'DELETE') {
      this.drafts.delete(draftId);
      return answer(204);
    }
    if (action === 'attachments/createUploadSession' && request.method === 'POST') {
      const item = (JSON.parse((await readLimited(request, 64 * 1024))?.toString('utf8') || '{}') as { AttachmentItem?: { attachmentType?: string; name?: string; size?: number; contentType?: string } }).AttachmentItem;
      if (item?.attachmentType !== 'file' || !item.name || !Number.isInteger(item.size) || item.size! <= 0) return answer(400, graphError('ErrorInvalidRequest', 'AttachmentItem with attachmentType file, name and size is required.'));
      if (item.size! > GRAPH_ATTACHMENT_LIMIT) return answer(400, graphError('ErrorAttachmentSizeLimitExceeded', 'The attachment size exceeds the maximum of 150 MB.'));
      const session = randomBytes(18).toString('base64url');
      const upload = { name: item.name, contentType: item.contentType ?? 'application/octet-stream', size: item.size!, chunks: [] as Buffer[], received: 0 };
      draft.attachments.push(upload);
      this.uploads.set(session, upload);
      return answer(201, { uploadUrl: `${this.url}/upload-sessions/${session}`, expirationDateTime: new Date(Date.now() + 3_600_000).toISOString(), nextExpectedRanges: ['0-'] });
    }
    if (action === 'send' && request.method === 'POST') {
      request.resume();
      if (draft.attachments.some((upload) => upload.received !== upload.size)) return answer(400, graphError('ErrorInvalidRequest', 'An attachment upload is not complete.'));
      const { to, copy } = withoutBcc(withAttachments(draft.raw, draft.attachments));
      if (!to.length) return answer(400, GRAPH.noRecipients);
      if (this.backend.sendAsRefused(mailbox, copy)) return answer(403, GRAPH.sendAsDenied);
      this.drafts.delete(draftId);
      await this.backend.deliver(mailbox, copy, to, 'graph');
      this.fileSentCopy(mailbox, copy);
      return answer(202, undefined, { 'request-id': randomUUID() });
    }
    return answer(405, graphError('BadRequest', 'Method not allowed.'));
  }

  /**
   * The copies Graph files in Sent Items (its MIME send always does): listed by internetMessageId
   * and deleted, with Mail.ReadWrite (Mail.Send alone gets 403).
   */
  private sentItemsRoute(request: IncomingMessage, url: URL, mailbox: string, id: string | undefined, answer: Answer): void {
    if (this.mailReadWriteDenied) return answer(403, GRAPH.accessDenied);
    if (request.method === 'DELETE' && id) {
      this.sentItems.delete(id);
      return answer(204);
    }
    const wanted = /internetMessageId eq '((?:[^']|'')*)'/.exec(url.searchParams.get('$filter') ?? '')?.[1]?.replace(/''/g, "'");
    const value = [...this.sentItems].filter(([, copy]) => copy.mailbox === mailbox && (!wanted || copy.internetMessageId === wanted)).map(([copyId]) => ({ id: copyId }));
    return answer(200, { value });
  }

  /** Graph files every message it sends in the mailbox's Sent Items. */
  private fileSentCopy(mailbox: string, raw: Buffer): void {
    const head = raw.subarray(0, Math.max(0, raw.indexOf('\r\n\r\n'))).toString('latin1');
    this.sentItems.set(`AAMkAD${randomBytes(24).toString('base64url')}`, { mailbox, internetMessageId: /^Message-ID:[ \t]*(\S+)/im.exec(head)?.[1] ?? '' });
  }

  /** A chunk of an upload session: no Authorization header (the URL is the credential), Content-Range in order, under 4 MB. */
  private async uploadChunk(request: IncomingMessage, session: string, answer: Answer): Promise<void> {
    const upload = this.uploads.get(session);
    if (!upload) return answer(404, graphError('ErrorItemNotFound', 'The upload session was not found.'));
    if (request.headers.authorization) return answer(401, graphError('InvalidAuthenticationToken', 'An upload URL must be used without an Authorization header.'));
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(request.headers['content-range'] ?? ''));
    if (!range || Number(range[1]) !== upload.received || Number(range[3]) !== upload.size) return answer(416, graphError('InvalidRange', `Expected the range starting at ${upload.received}.`));
    const body = await readLimited(request, UPLOAD_CHUNK_LIMIT);
    if (!body) return answer(413, graphError('ErrorRequestEntityTooLarge', 'An upload chunk must be under 4 MB.'));
    if (body.length !== Number(range[2]) - Number(range[1]) + 1) return answer(400, graphError('InvalidRange', 'The body does not match Content-Range.'));
    upload.chunks.push(body);
    upload.received += body.length;
    if (upload.received < upload.size) return answer(200, { expirationDateTime: new Date(Date.now() + 3_600_000).toISOString(), nextExpectedRanges: [`${upload.received}-`] });
    this.uploads.delete(session);
    return answer(201);
  }

  private messageTrace(request: IncomingMessage, url: URL, response: ServerResponse): void {
    const token = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
    const grant = token ? this.backend.bearer(token) : undefined;
    if (!grant || !GRAPH.scopeGranted(grant.scope)) return json(response, 401, GRAPH.invalidToken);
    if (grant.mailbox !== '*' || this.trace.denied) return json(response, 403, graphError('Forbidden', "Missing role permissions on the request. API requires one of 'ExchangeMessageTrace.Read.All'."));
    const now = Date.now();
    const recent = this.trace.requests.filter((at) => at > now - TRACE_WINDOW_MS);
    if (recent.length >= TRACE_REQUESTS) return json(response, 429, graphError('TooManyRequests', 'Too many requests.'), { 'Retry-After': String(Math.ceil((recent[0] + TRACE_WINDOW_MS - now) / 1000)) });
    this.trace.requests.push(now);
    const detail = /\/messageTraces\/([^/]+)\/getDetailsByRecipient\(recipientAddress='(.*)'\)$/.exec(decodeURIComponent(url.pathname));
    if (detail) {
      const [messageId, recipient] = [Buffer.from(detail[1], 'base64url').toString(), detail[2].replace(/''/g, "'")];
      const row = this.backend.traced(messageId).find((candidate) => candidate.recipient === recipient);
      if (!row) return json(response, 404, graphError('NotFound', 'The message trace was not found.'));
      return json(response, 200, { value: traceDetails(row) });
    }
    const filter = url.searchParams.get('$filter') ?? '';
    const messageId = /messageId eq '((?:[^']|'')*)'/.exec(filter)?.[1]?.replace(/''/g, "'");
    if (!messageId || !/receivedDateTime ge /.test(filter)) return json(response, 400, graphError('BadRequest', 'A messageId and a receivedDateTime range are required in $filter.'));
    const rows = this.backend.traced(messageId).map((row) => ({
      id: Buffer.from(messageId).toString('base64url'),
      messageId,
      senderAddress: row.from,
      recipientAddress: row.recipient,
      status: row.status,
      receivedDateTime: row.at,
      size: row.size,
      fromIP: '127.0.0.1',
      toIP: '',
    }));
    return json(response, 200, { '@odata.context': 'https://graph.microsoft.com/v1.0/$metadata#admin/exchange/tracing/messageTraces', value: rows });
  }
}

/**
 * Exchange's message trace (learn.microsoft.com/graph/api/messagetracingroot-list-messagetraces and
 * exchangemessagetrace-getdetailsbyrecipient): app-only with ExchangeMessageTrace.Read.All, at
 * most 100 requests per tenant in 5 minutes (Exchange Team blog, January 2026).
 */
const TRACE_WINDOW_MS = 5 * 60_000;
const TRACE_REQUESTS = 100;

export class MessageTraceState {
  readonly requests: number[] = [];
  /** The app lacks ExchangeMessageTrace.Read.All: 403. */
  denied = false;
}

const GRAPH = {
  scopeGranted: (scope: string) => scope.includes('https://graph.microsoft.com/'),
  invalidToken: graphError('InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.'),
  wrongAudience: graphError('InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.'),
  accessDenied: graphError('ErrorAccessDenied', 'Access is denied. Check credentials and try again.'),
  sendAsDenied: graphError('ErrorSendAsDenied', 'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.'),
  unknownUser: (mailbox: string) => graphError('ErrorInvalidUser', `The requested user '${mailbox}' is invalid.`),
  badContentType: graphError('RequestBodyRead', 'The MIME content must be sent base64-encoded as text/plain.'),
  tooLarge: graphError('ErrorRequestEntityTooLarge', 'The request exceeds the maximum supported size of 4 MB.'),
  invalidBase64: graphError('ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.'),
  noRecipients: graphError('ErrorInvalidRecipients', 'At least one recipient is not valid., A message can\'t be sent because it contains no recipients.'),
};

const GMAIL = {
  scopeGranted: (scope: string) => /https:\/\/(mail\.google\.com\/|www\.googleapis\.com\/auth\/gmail\.(send|compose|modify))/.test(scope),
  invalidToken: googleError(401, 'UNAUTHENTICATED', 'authError', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.'),
  insufficientScope: googleError(403, 'PERMISSION_DENIED', 'insufficientPermissions', 'Request had insufficient authentication scopes.'),
  accessDenied: googleError(403, 'PERMISSION_DENIED', 'forbidden', 'Delegation denied for the requested user.'),
  unknownUser: (mailbox: string) => googleError(400, 'FAILED_PRECONDITION', 'failedPrecondition', `Mail service not enabled for ${mailbox}`),
  badContentType: googleError(400, 'INVALID_ARGUMENT', 'invalidArgument', "Media type 'application/octet-stream' is not supported."),
  tooLarge: googleError(413, 'INVALID_ARGUMENT', 'uploadTooLarge', 'Request payload size exceeds the limit: 36700160 bytes.'),
  noRecipients: googleError(400, 'INVALID_ARGUMENT', 'invalidArgument', 'Recipient address required'),
};

function graphError(code: string, message: string): Record<string, unknown> {
  return { error: { code, message, innerError: { date: new Date().toISOString().slice(0, 19), 'request-id': randomUUID(), 'client-request-id': randomUUID() } } };
}

function googleError(code: number, status: string, reason: string, message: string): Record<string, unknown> {
  return { error: { code, message, errors: [{ message, domain: 'global', reason }], status } };
}

/** The documented refusals, for tests to script (apiScript). */
export const REFUSALS = {
  mailboxNotEnabled: { status: 404, body: graphError('MailboxNotEnabledForRESTAPI', 'The mailbox is either inactive, soft-deleted, or is hosted on-premise.') },
  invalidRecipients: { status: 400, body: graphError('ErrorInvalidRecipients', "At least one recipient isn't valid., Recipient 'bad..address@example.com' is not resolved.") },
  graphTooLarge: { status: 413, body: graphError('ErrorRequestEntityTooLarge', 'The request exceeds the maximum supported size of 4 MB.') },
  gmailFailedPrecondition: { status: 400, body: googleError(400, 'FAILED_PRECONDITION', 'failedPrecondition', 'Bad Request') },
  gmailInvalidArgument: { status: 400, body: googleError(400, 'INVALID_ARGUMENT', 'invalidArgument', 'Invalid To header') },
  gmailDailyLimit: { status: 403, body: googleError(403, 'PERMISSION_DENIED', 'dailyLimitExceeded', 'Daily Limit Exceeded') },
  unavailable: (seconds: number): ApiScriptedAnswer => ({ status: 503, headers: { 'Retry-After': String(seconds) }, body: graphError('ServiceUnavailable', 'Service Unavailable') }),
} satisfies Record<string, ApiScriptedAnswer | ((seconds: number) => ApiScriptedAnswer)>;

/** Gmail's and Graph's throttling answers, for tests and the demo to script. */
export const THROTTLED = {
  graph: (seconds: number): ApiScriptedAnswer => ({ status: 429, headers: { 'Retry-After': String(seconds) }, body: graphError('ApplicationThrottled', 'Application is over its MailboxConcurrency limit.') }),
  gmail: (seconds: number): ApiScriptedAnswer => ({ status: 429, headers: { 'Retry-After': String(seconds) }, body: googleError(429, 'RESOURCE_EXHAUSTED', 'rateLimitExceeded', 'User-rate limit exceeded.') }),
};

function json(response: ServerResponse, status: number, body: Record<string, unknown> | undefined, headers: Record<string, string> = {}): void {
  const text = body ? JSON.stringify(body) : '';
  response.writeHead(status, { ...headers, ...(body ? { 'Content-Type': 'application/json; charset=utf-8' } : {}), 'Content-Length': Buffer.byteLength(text) });
  response.end(text);
}

/** The request body, or undefined once it passes `limit` (the rest is not kept). */
async function readLimited(request: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      request.resume();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function decodeBase64(body: Buffer): Buffer | undefined {
  const text = body.toString('latin1').replace(/\s+/g, '');
  return /^[A-Za-z0-9+/]*={0,2}$/.test(text) && text.length % 4 === 0 ? Buffer.from(text, 'base64') : undefined;
}

/** The recipients the provider delivers to (To, Cc, Bcc) and the copy they get (no Bcc field). */
function withoutBcc(raw: Buffer): { to: string[]; copy: Buffer } {
  const collector = new HeaderCollector();
  const section = collector.push(raw) ?? collector.finish();
  const to = headerRecipients(section.fields);
  const kept = section.fields.filter((field) => field.key !== 'bcc');
  const head = section.blankLine ? buildHeader(kept) : Buffer.concat(kept.map((field) => field.raw));
  return { to, copy: Buffer.concat([head, section.rest]) };
}

/** Exchange's events for one recipient: received from the app, then what became of it. */
function traceDetails(row: { recipient: string; at: string; status: string }): Record<string, unknown>[] {
  const outcome: Record<string, [string, string]> = {
    delivered: ['Deliver', 'The message was successfully delivered.'],
    quarantined: ['Quarantine', 'The message was quarantined as high confidence phish.'],
    filteredAsSpam: ['Spam', 'The message was marked as spam and delivered to the Junk Email folder.'],
    failed: ['Fail', '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'],
  };
  const [event, description] = outcome[row.status] ?? ['Pending', 'The message is being processed.'];
  return [
    { dateTime: row.at, event: 'Receive', action: '', description: 'Message received by: SN4PR0501MB3886.namprd05.prod.outlook.com' },
    { dateTime: row.at, event, action: '', description },
  ];
}

/**
 * The message Exchange sends from a draft and its uploaded attachments: the draft's MIME with each
 * attachment added as a base64 part of its top multipart/mixed (a single-part draft becomes one).
 */
function withAttachments(raw: Buffer, uploads: Upload[]): Buffer {
  if (!uploads.length) return raw;
  const headEnd = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, headEnd + 2).toString('latin1');
  const body = raw.subarray(headEnd + 4);
  const boundary = /^Content-Type:[ \t]*multipart\/mixed;[^]*?boundary="?([^";\r\n]+)"?/im.exec(head)?.[1];
  const parts = uploads.map((upload) => Buffer.from(
    `--${boundary ?? 'stand-in-mixed'}\r\nContent-Type: ${upload.contentType}; name="${upload.name}"\r\nContent-Disposition: attachment; filename="${upload.name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${Buffer.concat(upload.chunks).toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`,
    'latin1',
  ));
  if (boundary) {
    const close = body.lastIndexOf(`--${boundary}--`);
    return Buffer.concat([raw.subarray(0, headEnd + 4), body.subarray(0, close), ...parts, body.subarray(close)]);
  }
  const inner = /^(Content-[^:]+:.*(?:\r\n[ \t].*)*\r\n)/gim;
  const contentFields = head.match(inner)?.join('') ?? '';
  const otherFields = head.replace(inner, '');
  return Buffer.concat([
    Buffer.from(`${otherFields}Content-Type: multipart/mixed; boundary="stand-in-mixed"\r\n\r\n--stand-in-mixed\r\n${contentFields}\r\n`, 'latin1'),
    body,
    Buffer.from('\r\n'),
    ...parts,
    Buffer.from('--stand-in-mixed--\r\n'),
  ]);
}
