import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { QueueRecord } from './record.js';

/**
 * One file per queued message, like Postfix's queue file: the message exactly as it will be sent,
 * then the record it was committed with (JSON), then a fixed-size footer saying where each part
 * ends. Putting the record at the end lets a message that was streamed to disk while it arrived
 * become a queue file by appending, so committing costs one fsync and one rename.
 *
 *   <content bytes><record JSON>\nSORQ1 <content length, 16 hex> <JSON length, 8 hex>\n
 */
const MAGIC = 'SORQ1';
const FOOTER_LENGTH = `\n${MAGIC} ${'0'.repeat(16)} ${'0'.repeat(8)}\n`.length;
const FOOTER = new RegExp(`^\\n${MAGIC} ([0-9a-f]{16}) ([0-9a-f]{8})\\n$`);

/** What follows the content in a queue file: the record and the footer. */
export function queueFileTrailer(record: QueueRecord, contentLength: number): Buffer {
  const json = Buffer.from(JSON.stringify(record));
  const footer = `\n${MAGIC} ${contentLength.toString(16).padStart(16, '0')} ${json.length.toString(16).padStart(8, '0')}\n`;
  return Buffer.concat([json, Buffer.from(footer)]);
}

/** A queue file that exists but cannot be read back: it is set aside, never guessed at. */
export class DamagedQueueFile extends Error {}

/** The record a queue file was committed with; undefined when the file is gone. */
export async function readQueueFileRecord(file: string): Promise<{ record: QueueRecord; contentLength: number } | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const footer = FOOTER.exec(size >= FOOTER_LENGTH ? await readAt(handle, size - FOOTER_LENGTH, FOOTER_LENGTH) : '');
    if (!footer) throw new DamagedQueueFile('no queue-file footer');
    const contentLength = parseInt(footer[1], 16);
    const jsonLength = parseInt(footer[2], 16);
    if (contentLength + jsonLength + FOOTER_LENGTH !== size) throw new DamagedQueueFile('queue-file lengths do not add up');
    const record = JSON.parse(await readAt(handle, contentLength, jsonLength)) as QueueRecord;
    return { record, contentLength };
  } catch (error) {
    throw error instanceof DamagedQueueFile ? error : new DamagedQueueFile((error as Error).message);
  } finally {
    await handle.close();
  }
}

async function readAt(handle: FileHandle, position: number, length: number): Promise<string> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await handle.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead).toString('utf8');
}

/** The message part of a queue file (its first contentLength bytes). */
export function openQueueFileContent(file: string, contentLength: number): Readable {
  if (contentLength === 0) return Readable.from([]);
  return createReadStream(file, { start: 0, end: contentLength - 1 });
}
