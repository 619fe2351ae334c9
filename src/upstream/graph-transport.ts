import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { ResolvedAccount } from '../config/index.js';
import type { AccessTokens } from '../oauth/index.js';
import { reject } from '../reply.js';
import { ApiTransport } from './api-transport.js';
import { liftAttachments, SkeletonTooLarge, type LiftedAttachment, type LiftedMessage } from './graph-attachments.js';
import { headerForApi, splitAtBody } from './header-recipients.js';
import { ApiRefusal } from './http-api.js';
import type { Envelope, SendReceipt } from './transport.js';
import { SentItemsCleaner } from './sent-items.js';
import { fieldValue } from '../util/header-fields.js';
import type { Logger } from '../log.js';

/** Graph takes a MIME request (the message in base64) of at most 4 MB. */
const GRAPH_MIME_REQUEST_LIMIT = 4 * 1024 * 1024;
/** The largest MIME that fits: base64 makes 4 bytes of every 3. */
const GRAPH_MIME_MESSAGE_LIMIT = Math.floor(GRAPH_MIME_REQUEST_LIMIT / 4) * 3;
/** Upload session chunks: under 4 MB each, in multiples of 320 KiB (Microsoft's guidance for upload sessions). */
const UPLOAD_CHUNK = 9 * 320 * 1024;

/**
 * Microsoft Graph, for tenants that switched SMTP AUTH off: only the Mail.Send permission is needed.
 * A message up to 4 MB of MIME goes whole to `sendMail` (base64, Content-Type text/plain). A larger
 * one goes the documented way for large attachments: the message without them is created as a
 * draft from its MIME (every header kept), each attachment is uploaded in an upload session (up to
 * 150 MB, its bytes as they were), then the draft is sent. Graph delivers to the header's To, Cc and
 * Bcc; envelope-only recipients go as Bcc.
 */
export class GraphTransport extends ApiTransport {
  readonly name = 'graph';

  /** upstream.saveToSentItems: false deletes the copy Graph files; undefined keeps it. */
  private readonly sentItems?: SentItemsCleaner;

  constructor(
    account: ResolvedAccount,
    tokens: AccessTokens,
    /** Where lifted attachments wait for their upload (under the data directory). */
    private readonly scratchDir: string,
    logger: Logger,
  ) {
    super(account, tokens);
    if (!account.upstream.saveToSentItems) this.sentItems = new SentItemsCleaner((path, options) => this.call(path, options), this.user, logger);
  }

  async deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    const split = await splitAtBody(message);
    const head = headerForApi(split, envelope.to);
    const receipt = await this.send(envelope, head, split.body[Symbol.asyncIterator](), signal);
    const messageId = split.fields.find((field) => field.key === 'message-id');
    if (messageId) this.sentItems?.remove(fieldValue(messageId).trim());
    return receipt;
  }

  override close(): void {
    this.sentItems?.close();
  }

  private async send(envelope: Envelope, head: Buffer, body: AsyncIterator<Buffer>, signal?: AbortSignal): Promise<SendReceipt> {
    const start = await readUpTo(head, body, GRAPH_MIME_MESSAGE_LIMIT, signal);
    if (start.whole) return this.sendMime(envelope, Buffer.concat(start.chunks), signal);
    const lifted = await liftAttachments(concat(start.chunks, body), this.scratchDir, GRAPH_MIME_MESSAGE_LIMIT).catch((error: unknown) => {
      if (!(error instanceof SkeletonTooLarge)) throw error;
      throw reject('too_large', 552, '5.3.4', 'Message is too large for Microsoft Graph: without its attachments it is over 3 MB', error, 'Graph takes 3 MB of message text and headers, and attachments up to 150 MB each; send such messages through transport smtp');
    });
    try {
      return await this.sendWithUploads(envelope, lifted, signal);
    } finally {
      await lifted.discard();
    }
  }

  private async sendMime(envelope: Envelope, mime: Buffer, signal?: AbortSignal): Promise<SendReceipt> {
    const answer = await this.call(`/v1.0/users/${this.user}/sendMail`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: Buffer.from(mime.toString('base64')), signal });
    return accepted(envelope, answer.headers['request-id']);
  }

  /** Draft, upload sessions, send; a draft left by a failure is deleted, so a retry starts clean. */
  private async sendWithUploads(envelope: Envelope, lifted: LiftedMessage, signal?: AbortSignal): Promise<SendReceipt> {
    signal?.throwIfAborted();
    const created = await this.call(`/v1.0/users/${this.user}/messages`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: Buffer.from(lifted.skeleton.toString('base64')), signal });
    const draft = `/v1.0/users/${this.user}/messages/${encodeURIComponent(String((JSON.parse(created.body.toString('utf8')) as { id?: unknown }).id))}`;
    try {
      for (const attachment of lifted.attachments) await this.upload(draft, attachment, signal);
      signal?.throwIfAborted();
      const sent = await this.call(`${draft}/send`, { method: 'POST', headers: { 'Content-Length': '0' }, signal });
      return accepted(envelope, sent.headers['request-id']);
    } catch (error) {
      await this.call(draft, { method: 'DELETE' }).catch(() => undefined);
      throw error;
    }
  }

  /** One attachment through an upload session: chunks with Content-Range, to the URL Graph gave, without the token. */
  private async upload(draft: string, attachment: LiftedAttachment, signal?: AbortSignal): Promise<void> {
    const item = { attachmentType: 'file', name: attachment.name, size: attachment.size, contentType: attachment.contentType, isInline: attachment.isInline, contentId: attachment.contentId };
    const session = await this.call(`${draft}/attachments/createUploadSession`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: Buffer.from(JSON.stringify({ AttachmentItem: item })), signal });
    const uploadUrl = new URL(String((JSON.parse(session.body.toString('utf8')) as { uploadUrl?: unknown }).uploadUrl));
    const file = await open(attachment.file);
    try {
      for (let start = 0; start < attachment.size; start += UPLOAD_CHUNK) {
        const chunk = Buffer.alloc(Math.min(UPLOAD_CHUNK, attachment.size - start));
        await file.read(chunk, 0, chunk.length, start);
        const range = `bytes ${start}-${start + chunk.length - 1}/${attachment.size}`;
        const answer = await this.client.requestUrl(uploadUrl, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(chunk.length), 'Content-Range': range }, body: chunk, signal });
        if (answer.status !== 200 && answer.status !== 201) throw ApiRefusal.from(answer);
      }
    } finally {
      await file.close();
    }
  }
}

function accepted(envelope: Envelope, requestId: string | string[] | undefined): SendReceipt {
  return { accepted: [...envelope.to], rejected: [], response: `202 Accepted${typeof requestId === 'string' ? ` request-id ${requestId}` : ''}` };
}

/** Reads until `limit` bytes: whole when the message ended within it, else the chunks read so far (the rest stays in `rest`). */
async function readUpTo(head: Buffer, rest: AsyncIterator<Buffer>, limit: number, signal?: AbortSignal): Promise<{ chunks: Buffer[]; whole: boolean }> {
  const chunks = [head];
  let size = head.length;
  for (;;) {
    signal?.throwIfAborted();
    if (size > limit) return { chunks, whole: false };
    const next = await rest.next();
    if (next.done) return { chunks, whole: true };
    chunks.push(next.value);
    size += next.value.length;
  }
}

async function* concat(first: Buffer[], rest: AsyncIterator<Buffer>): AsyncIterable<Buffer> {
  yield* first;
  for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
}
