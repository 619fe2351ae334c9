import type { Readable } from 'node:stream';
import { reject } from '../reply.js';
import { ApiTransport } from './api-transport.js';
import { headerForApi, splitAtBody } from './header-recipients.js';
import type { Envelope, SendReceipt } from './transport.js';

/** Graph takes a MIME request (the message in base64) of at most 4 MB. */
export const GRAPH_MIME_REQUEST_LIMIT = 4 * 1024 * 1024;
/** The largest message that fits: base64 makes 4 bytes of every 3. */
const GRAPH_MIME_MESSAGE_LIMIT = Math.floor(GRAPH_MIME_REQUEST_LIMIT / 4) * 3;

/**
 * Microsoft Graph `sendMail` with the message as MIME (base64, Content-Type text/plain), for
 * tenants that switched SMTP AUTH off: no SMTP AUTH needed, only the Mail.Send permission. Graph
 * delivers to the header's To, Cc and Bcc; envelope-only recipients go as Bcc.
 */
export class GraphTransport extends ApiTransport {
  readonly name = 'graph';
  /** Room is left for the Bcc field the transport may add. */
  readonly maxMessageSize = GRAPH_MIME_MESSAGE_LIMIT - 128 * 1024;

  async deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt> {
    const split = await splitAtBody(message);
    const head = headerForApi(split, envelope.to);
    const whole = await readUpTo([head], split.body, GRAPH_MIME_MESSAGE_LIMIT, signal);
    if (!whole) {
      throw reject('too_large', 552, '5.3.4', 'Message is larger than Microsoft Graph takes as MIME (4 MB, about 3 MB of message)', undefined, 'send larger messages through transport smtp (35 MB), or make the device send smaller files');
    }
    const answer = await this.call(`/v1.0/users/${this.user}/sendMail`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: Buffer.from(whole.toString('base64')), signal });
    const requestId = answer.headers['request-id'];
    return { accepted: [...envelope.to], rejected: [], response: `202 Accepted${typeof requestId === 'string' ? ` request-id ${requestId}` : ''}` };
  }
}

/** The whole message when it is at most `limit` bytes, else undefined (it is not read further). */
async function readUpTo(first: Buffer[], rest: AsyncIterable<Buffer>, limit: number, signal?: AbortSignal): Promise<Buffer | undefined> {
  const chunks = [...first];
  let size = first.reduce((sum, chunk) => sum + chunk.length, 0);
  for await (const chunk of rest) {
    signal?.throwIfAborted();
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  signal?.throwIfAborted();
  return size > limit ? undefined : Buffer.concat(chunks);
}
