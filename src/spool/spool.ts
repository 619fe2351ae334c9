import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm, readdir } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';

export interface StagedMessage {
  id: string;
  file: string;
  size: number;
}

/**
 * Message files under <dataDir>/spool. A message is written to disk as it streams in, so the
 * device's DATA is never held in memory and the upstream send can be retried from the file.
 */
export class Spool {
  readonly incomingDir: string;

  constructor(dataDir: string) {
    this.incomingDir = path.join(dataDir, 'spool', 'incoming');
  }

  async init(): Promise<void> {
    await mkdir(this.incomingDir, { recursive: true, mode: 0o700 });
    // Left by a crash mid-transaction: the device got no 250 for these and will send again.
    for (const name of await readdir(this.incomingDir)) await rm(path.join(this.incomingDir, name), { force: true });
  }

  /** Queue ids look like Postfix's: short, unique, safe in file names and logs. */
  newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomBytes(5).toString('hex').toUpperCase()}`;
  }

  async stage(id: string, source: Readable): Promise<StagedMessage> {
    const file = path.join(this.incomingDir, `${id}.eml`);
    const sink = createWriteStream(file, { mode: 0o600 });
    try {
      await pipeline(source, sink);
    } catch (error) {
      await rm(file, { force: true });
      throw error;
    }
    return { id, file, size: sink.bytesWritten };
  }

  open(message: StagedMessage): Readable {
    return createReadStream(message.file);
  }

  async discard(message: StagedMessage): Promise<void> {
    await rm(message.file, { force: true });
  }
}
