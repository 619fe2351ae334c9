import { Transform, type TransformCallback } from 'node:stream';
import { applySenderRules, type SenderDecision, type SenderRules } from './headers.js';
import { HeaderCollector, buildHeader, fieldValue, foldLongLines, type HeaderField, type HeaderSection } from '../util/header-fields.js';
import { reject } from '../reply.js';
import libmime from 'libmime';

const SUBJECT_LENGTH = 200;

function decodedSubject(field: HeaderField | undefined): string | undefined {
  if (!field) return undefined;
  // Raw 8-bit subjects are usually UTF-8 (RFC 6532); encoded words are decoded.
  const raw = Buffer.from(fieldValue(field), 'latin1').toString('utf8');
  let text: string;
  try {
    text = libmime.decodeWords(raw);
  } catch {
    text = raw;
  }
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim().slice(0, SUBJECT_LENGTH);
}

/**
 * Reads only the header section of a streamed message (up to a cap), applies the sender rules to
 * it, and passes the body through untouched: memory stays flat whatever the message size. The
 * header that leaves always ends with an empty line, so the upstream sees the same fields.
 */
export class SenderRewriter extends Transform {
  private collector?: HeaderCollector = new HeaderCollector();
  private decisionValue?: SenderDecision;
  private subjectField?: HeaderField;
  private messageIdField?: HeaderField;
  private recipientFieldList: HeaderField[] = [];

  constructor(
    private readonly rules: SenderRules,
    private readonly limits: { maxHeaderBytes: number; maxHeaderLines: number },
  ) {
    super();
  }

  get hasDecision(): boolean {
    return this.decisionValue !== undefined;
  }

  /** Set once the header section has been read. */
  get decision(): SenderDecision {
    if (!this.decisionValue) throw new Error('header section not read yet');
    return this.decisionValue;
  }

  /** The Subject, decoded (RFC 2047) and cut to 200 characters, for the delivery log; set with the decision. */
  get subject(): string | undefined {
    // Decoded only when asked (trace.subjects): the hot path keeps a reference to the field.
    return decodedSubject(this.subjectField);
  }

  /** The To, Cc and Bcc fields that leave (set with the decision). */
  get recipientFields(): readonly HeaderField[] {
    return this.recipientFieldList;
  }

  /** The Message-ID that leaves (the device's, or the one the relay added): how a provider's own trace finds the message. */
  get messageId(): string | undefined {
    const value = this.messageIdField && fieldValue(this.messageIdField).replace(/[\x00-\x20\x7f-\xff]+/g, '');
    return value ? value.slice(0, 250) : undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const collector = this.collector;
    if (!collector) return callback(null, chunk);
    const section = collector.push(chunk);
    if (section) return callback(this.release(section));
    callback(this.tooLarge(collector.size, collector.fieldCount));
  }

  override _flush(callback: TransformCallback): void {
    callback(this.collector ? this.release(this.collector.finish()) : null);
  }

  private tooLarge(headerBytes: number, fieldCount: number): Error | null {
    if (headerBytes > this.limits.maxHeaderBytes) {
      return reject('header_too_large', 552, '5.3.4', `Message header block exceeds ${this.limits.maxHeaderBytes} bytes`);
    }
    if (fieldCount > this.limits.maxHeaderLines) {
      return reject('header_too_large', 552, '5.3.4', `Message has more than ${this.limits.maxHeaderLines} header lines`);
    }
    return null;
  }

  private release(section: HeaderSection): Error | null {
    const problem = this.tooLarge(this.collector!.size - section.rest.length, section.fields.length);
    this.collector = undefined;
    if (problem) return problem;
    const { fields, decision } = applySenderRules(section.fields, this.rules);
    this.decisionValue = decision;
    this.subjectField = section.fields.find((field) => field.key === 'subject');
    this.messageIdField = fields.find((field) => field.key === 'message-id');
    this.recipientFieldList = fields.filter((field) => field.key === 'to' || field.key === 'cc' || field.key === 'bcc');
    this.push(buildHeader(fields.map(foldLongLines)));
    if (section.rest.length > 0) this.push(section.rest);
    return null;
  }
}
