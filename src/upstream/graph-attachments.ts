import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import mailsplit from '@zone-eu/mailsplit';

/** An attachment lifted out of a message for Graph's upload session, its decoded bytes in a file. */
export interface LiftedAttachment {
  name: string;
  contentType: string;
  size: number;
  isInline: boolean;
  contentId?: string;
  file: string;
}

export interface LiftedMessage {
  /** The message without the lifted attachments: every header and every other part as it was. */
  skeleton: Buffer;
  attachments: LiftedAttachment[];
  /** Removes the attachments' files. */
  discard(): Promise<void>;
}

/** A delimiter line as the splitter hands it over between parts ("\r\n--boundary\r\n"). */
const DELIMITER = /^(?:\r?\n)?--[^\r\n]+\r?\n$/;

/** An attachment whose encoded body passes this is lifted out; smaller ones stay in the MIME. */
const LIFT_OVER = 512 * 1024;

type SplitItem = { type: 'data' | 'body'; value: Buffer } | MimeNodeLike;
interface MimeNodeLike {
  type: 'node';
  root: boolean;
  parentNode: MimeNodeLike | false;
  multipart: string | false;
  contentType: string | false;
  disposition: string | false;
  filename: string | false;
  _boundary: Buffer | false;
  headers: { getFirst(key: string): string } | false;
  getHeaders(): Buffer;
  getDecoder(): NodeJS.ReadWriteStream;
}

/** The leaf being read: kept as it is while small, else decoded into a file. */
interface Candidate {
  node: MimeNodeLike;
  /** The delimiter before it, removed from the skeleton if it is lifted. */
  delimiter?: Buffer;
  encoded: Buffer[];
  encodedSize: number;
  lifted?: { decoder: NodeJS.ReadWriteStream; file: string; written: Promise<void> };
}

/**
 * Splits a message for Graph's documented large-message path (create the message, attach large
 * files through upload sessions, send): the attachments directly under the top multipart whose
 * encoded bodies pass 512 KB are decoded, streaming, into files under `scratchDir`; everything else
 * stays byte for byte in the skeleton. Memory holds the skeleton (at most `skeletonLimit` bytes)
 * and one chunk, whatever the attachments weigh.
 */
export async function liftAttachments(message: AsyncIterable<Buffer>, scratchDir: string, skeletonLimit: number): Promise<LiftedMessage> {
  await mkdir(scratchDir, { recursive: true, mode: 0o700 });
  const skeleton: Buffer[] = [];
  let skeletonSize = 0;
  const attachments: LiftedAttachment[] = [];
  const files: string[] = [];
  const discard = async () => void (await Promise.all(files.map((file) => rm(file, { force: true }))));
  let rootBoundary: string | undefined;
  let keptChildren = 0;
  let current: Candidate | undefined;
  const keep = (chunk: Buffer) => {
    skeletonSize += chunk.length;
    if (skeletonSize > skeletonLimit) throw new SkeletonTooLarge(skeletonLimit);
    skeleton.push(chunk);
  };

  const finish = async () => {
    const candidate = current;
    current = undefined;
    if (!candidate) return;
    if (!candidate.lifted) {
      keptChildren++;
      keep(candidate.node.getHeaders());
      for (const chunk of candidate.encoded) keep(chunk);
      return;
    }
    candidate.lifted.decoder.end();
    await candidate.lifted.written;
    const node = candidate.node;
    const contentId = node.headers ? node.headers.getFirst('content-id').replace(/^<|>$/g, '') : '';
    attachments.push({
      name: node.filename || 'attachment',
      contentType: node.contentType || 'application/octet-stream',
      size: (await stat(candidate.lifted.file)).size,
      isInline: node.disposition === 'inline',
      contentId: contentId || undefined,
      file: candidate.lifted.file,
    });
  };

  const splitter = new mailsplit.Splitter() as unknown as NodeJS.ReadWriteStream & AsyncIterable<SplitItem>;
  const feeding = feed(message, splitter);
  feeding.catch(() => undefined); // awaited below; a failure also ends the loop
  try {
    for await (const item of splitter) {
      if (item.type === 'node') {
        await finish();
        if (item.root && item.multipart === 'mixed' && item._boundary) rootBoundary = item._boundary.toString('latin1');
        if (isLiftable(item)) {
          current = { node: item, delimiter: skeleton.at(-1), encoded: [], encodedSize: 0 };
        } else {
          keep(item.getHeaders());
          if (item.parentNode && item.parentNode.root) keptChildren++;
        }
      } else if (item.type === 'body' && current) {
        await grow(current, item.value, scratchDir, files, () => {
          // Lifted: the delimiter that opened its part goes too.
          const delimiter = current?.delimiter;
          if (delimiter && skeleton.at(-1) === delimiter && DELIMITER.test(delimiter.toString('latin1'))) skeletonSize -= skeleton.pop()!.length;
        });
      } else {
        if (item.type === 'data') await finish();
        if (item.type === 'data' && rootBoundary && keptChildren === 0 && attachments.length > 0 && item.value.includes(`--${rootBoundary}--`)) {
          // Every part was lifted: an empty text part keeps the multipart well formed.
          keep(Buffer.from(`--${rootBoundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`));
          keptChildren++;
        }
        keep(item.value);
      }
    }
    await finish();
    await feeding;
  } catch (error) {
    current?.lifted?.decoder.end();
    await discard();
    throw error;
  }
  return { skeleton: Buffer.concat(skeleton), attachments, discard };
}

/** A part directly under a top multipart/mixed that is a file (attachment, or named), not a message. */
function isLiftable(node: MimeNodeLike): boolean {
  const parent = node.parentNode;
  if (!parent || !parent.root || parent.multipart !== 'mixed' || node.multipart) return false;
  if (node.contentType === 'message/rfc822') return false;
  return node.disposition === 'attachment' || !!node.filename;
}

async function grow(candidate: Candidate, chunk: Buffer, scratchDir: string, files: string[], onLift: () => void): Promise<void> {
  if (!candidate.lifted) {
    candidate.encoded.push(chunk);
    candidate.encodedSize += chunk.length;
    if (candidate.encodedSize <= LIFT_OVER) return;
    const file = path.join(scratchDir, `${Date.now()}-${randomBytes(6).toString('hex')}.part`);
    files.push(file);
    const decoder = candidate.node.getDecoder();
    const out = createWriteStream(file, { mode: 0o600 });
    const written = new Promise<void>((resolve, reject) => {
      out.on('finish', resolve).on('error', reject);
      decoder.on('error', reject);
    });
    written.catch(() => undefined); // awaited in finish()
    decoder.pipe(out as Writable);
    candidate.lifted = { decoder, file, written };
    onLift();
    const held = candidate.encoded;
    candidate.encoded = [];
    for (const piece of held) await write(decoder, piece);
    return;
  }
  await write(candidate.lifted.decoder, chunk);
}

function write(stream: NodeJS.WritableStream, chunk: Buffer): Promise<void> {
  return stream.write(chunk) ? Promise.resolve() : new Promise((resolve) => stream.once('drain', resolve));
}

async function feed(message: AsyncIterable<Buffer>, splitter: NodeJS.ReadWriteStream): Promise<void> {
  try {
    for await (const chunk of message) await write(splitter, chunk);
    splitter.end();
  } catch (error) {
    (splitter as unknown as Readable).destroy(error as Error);
    throw error;
  }
}

/** The message without its large attachments is still over Graph's MIME request. */
export class SkeletonTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`the message without its large attachments is over ${limit} bytes`);
    this.name = 'SkeletonTooLarge';
  }
}
