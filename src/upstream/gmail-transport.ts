import type { Readable } from 'node:stream';
import { ApiTransport } from './api-transport.js';
import { headerForApi, splitAtBody } from './header-recipients.js';
import type { Envelope, SendReceipt } from './transport.js';

/**
 * The Gmail API's `users.messages.send`, the message streamed as message/rfc822 (media upload,
 * up to Gmail's 35 MB), with the gmail.send scope only. Gmail delivers to the header's To, Cc and
 * Bcc; envelope-only recipients go as Bcc. Aborting leaves the chunked request unfinished, so
 * Gmail sends nothing.
 */
/** messages.send takes at most 35 MB ("Maximum file size: 35MB"). */
const GMAIL_MESSAGE_LIMIT = 35 * 1024 * 1024;

export class GmailTransport extends ApiTransport {
  readonly name = 'gmail';
  /** Room is left for the Bcc field the transport may add. */
  readonly maxMessageSize = GMAIL_MESSAGE_LIMIT - 128 * 1024;

  async deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    const split = await splitAtBody(message);
    const head = headerForApi(split, envelope.to);
    const answer = await this.call(`/upload/gmail/v1/users/${this.user}/messages/send?uploadType=media`, {
      method: 'POST',
      headers: { 'Content-Type': 'message/rfc822' },
      body: prepend(head, split.body),
      signal,
    });
    const id = (JSON.parse(answer.body.toString('utf8') || '{}') as { id?: unknown }).id;
    return { accepted: [...envelope.to], rejected: [], response: `200 OK${typeof id === 'string' ? ` id ${id}` : ''}` };
  }
}

async function* prepend(head: Buffer, body: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  yield head;
  yield* body;
}
