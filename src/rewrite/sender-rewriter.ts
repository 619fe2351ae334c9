import { Transform, type TransformCallback } from 'node:stream';
import { Headers } from '@zone-eu/mailsplit';
import { applySenderRules, type SenderDecision, type SenderRules } from './headers.js';
import { reject } from '../reply.js';

/**
 * Reads only the header block of a streamed message (up to a cap), applies the sender rules to
 * it, and passes the body through untouched: memory stays flat whatever the message size.
 */
export class SenderRewriter extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private headerDone = false;
  private decisionValue?: SenderDecision;

  constructor(
    private readonly rules: SenderRules,
    private readonly limits: { maxHeaderBytes: number; maxHeaderLines: number },
  ) {
    super();
  }

  /** Set once the header block has been read. */
  get decision(): SenderDecision {
    if (!this.decisionValue) throw new Error('header block not read yet');
    return this.decisionValue;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.headerDone) return callback(null, chunk);
    const searchFrom = Math.max(0, this.pendingBytes - 3);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const buffered = this.pending.length === 1 ? chunk : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [buffered];
    const end = headerEnd(buffered, searchFrom);
    if (end < 0) {
      if (this.pendingBytes > this.limits.maxHeaderBytes) {
        return callback(reject('header_too_large', 552, '5.3.4', `Message header block exceeds ${this.limits.maxHeaderBytes} bytes`));
      }
      return callback();
    }
    callback(this.emitHeaders(buffered.subarray(0, end)), buffered.subarray(end));
  }

  override _flush(callback: TransformCallback): void {
    // A message that is all header (no blank line, no body) still gets the rules.
    callback(this.headerDone ? null : this.emitHeaders(Buffer.concat(this.pending, this.pendingBytes)));
  }

  private emitHeaders(block: Buffer): Error | null {
    this.headerDone = true;
    this.pending = [];
    const headers = new Headers(block);
    if (headers.getList().length > this.limits.maxHeaderLines) {
      return reject('header_too_large', 552, '5.3.4', `Message has more than ${this.limits.maxHeaderLines} header lines`);
    }
    this.decisionValue = applySenderRules(headers, this.rules);
    this.push(headers.build());
    return null;
  }
}

/** Offset just past the blank line that ends the header block, or -1 (CRLF or bare LF). */
function headerEnd(buffer: Buffer, from: number): number {
  if (from === 0 && (buffer[0] === 0x0a || (buffer[0] === 0x0d && buffer[1] === 0x0a))) {
    return 0; // no header at all: the message starts with the blank line
  }
  for (let i = buffer.indexOf(0x0a, from); i >= 0; i = buffer.indexOf(0x0a, i + 1)) {
    const next = buffer[i + 1];
    if (next === 0x0a) return i + 2;
    if (next === 0x0d && buffer[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}
