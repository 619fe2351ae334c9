import { Transform, type TransformCallback } from 'node:stream';
import { reject } from '../reply.js';

const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;
const CRLF = Buffer.from('\r\n');

export type LineEndingPolicy = 'normalize' | 'reject';

/**
 * SMTP smuggling defence. smtp-server ends DATA only on CRLF.CRLF but passes bare LF and bare CR
 * into the message: "\r.\r" in a body could end an upstream's DATA early and start a second,
 * unrewritten message on the relay's authenticated session. nodemailer 10 also repairs bare line
 * endings on the way out, but the relay does not rely on it: the message is made CRLF-only here,
 * before the header rewrite reads it and before it is stored (NUL bytes go too); or, with
 * `reject`, it is refused with 554 5.6.11.
 */
export class LineEndingGuard extends Transform {
  private pendingCR = false;
  /** How many bare line endings or NULs were found (for the log). */
  repairs = 0;

  constructor(private readonly policy: LineEndingPolicy) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    // Nearly every chunk is clean: checked with native searches, passed on untouched.
    if (!this.pendingCR && isClean(chunk)) return callback(null, chunk);
    const parts: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      parts.push(CRLF);
      if (chunk[0] === LF) start = i = 1;
      else this.repairs++;
    }
    for (; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte === CR) {
        if (i + 1 === chunk.length) {
          parts.push(chunk.subarray(start, i));
          this.pendingCR = true;
          start = i + 1;
        } else if (chunk[i + 1] === LF) {
          i++;
        } else {
          parts.push(chunk.subarray(start, i), CRLF);
          start = i + 1;
          this.repairs++;
        }
      } else if (byte === LF || byte === NUL) {
        parts.push(chunk.subarray(start, i));
        if (byte === LF) parts.push(CRLF);
        start = i + 1;
        this.repairs++;
      }
    }
    if (this.repairs > 0 && this.policy === 'reject') {
      return callback(reject('bare_line_ending', 554, '5.6.11', 'Message contains bare CR or LF (or NUL); send lines ending in CRLF'));
    }
    if (start === 0 && parts.length === 0) return callback(null, chunk);
    parts.push(chunk.subarray(start));
    callback(null, Buffer.concat(parts));
  }

  override _flush(callback: TransformCallback): void {
    if (this.pendingCR) {
      this.repairs++;
      if (this.policy === 'reject') return callback(reject('bare_line_ending', 554, '5.6.11', 'Message contains bare CR or LF (or NUL); send lines ending in CRLF'));
      this.push(CRLF);
    }
    callback();
  }
}

/** True when every CR is followed by LF, every LF follows a CR, no NUL, and no CR ends the chunk. */
function isClean(chunk: Buffer): boolean {
  if (chunk.indexOf(NUL) !== -1) return false;
  for (let at = chunk.indexOf(LF); at !== -1; at = chunk.indexOf(LF, at + 1)) {
    if (at === 0 || chunk[at - 1] !== CR) return false;
  }
  for (let at = chunk.indexOf(CR); at !== -1; at = chunk.indexOf(CR, at + 1)) {
    if (chunk[at + 1] !== LF) return false;
  }
  return true;
}
