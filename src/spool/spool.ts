import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable, type Duplex } from 'node:stream';
import { SpillWriter } from './staged-message.js';
import { writeFileAtomic, syncDirectory } from '../util/atomic-file.js';
import type { QueueRecord } from './record.js';

/** A received message before it is committed: in memory when small, else in incoming/. */
export interface StagedMessage {
  id: string;
  size: number;
  memory?: Buffer;
  file?: string;
}

export interface SpoolLimits {
  maxBytes: number;
  minFreeDisk: number;
}

export type SpoolArea = 'queue' | 'failed';

/**
 * Message files under <dataDir>/spool, the way Postfix keeps its queue:
 *   incoming/  messages being received (no 250 yet); removed at start
 *   queue/     <id>.eml + <id>.json: committed, waiting for delivery (the .json is the commit mark)
 *   failed/    messages that failed for good, kept for the operator
 * A 250 in queue mode means both files are fsynced and renamed into queue/ and the folder fsynced.
 */
export class Spool {
  readonly incomingDir: string;
  readonly queueDir: string;
  readonly failedDir: string;
  private queuedBytesValue = 0;
  private diskCheck?: { at: number; free: number };

  constructor(
    dataDir: string,
    private readonly limits: SpoolLimits = { maxBytes: Infinity, minFreeDisk: 0 },
  ) {
    const root = path.join(dataDir, 'spool');
    this.incomingDir = path.join(root, 'incoming');
    this.queueDir = path.join(root, 'queue');
    this.failedDir = path.join(root, 'failed');
  }

  /** Prepares the folders and recovers after a crash: partial files go, complete messages stay. */
  async init(): Promise<QueueRecord[]> {
    for (const dir of [this.incomingDir, this.queueDir, this.failedDir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.incomingDir)) await rm(path.join(this.incomingDir, name), { force: true });
    const names = new Set(await readdir(this.queueDir));
    const records: QueueRecord[] = [];
    for (const name of names) {
      const file = path.join(this.queueDir, name);
      const id = name.replace(/\.(eml|json)$/, '');
      if (name.endsWith('.tmp')) {
        await rm(file, { force: true }); // a state update cut short; the previous .json stands
      } else if (name.endsWith('.eml') && !names.has(`${id}.json`)) {
        await rm(file, { force: true }); // never committed: the device got no 250
      } else if (name.endsWith('.json')) {
        const record = await this.read(id);
        if (record) records.push(record);
        else await rm(file, { force: true });
      }
    }
    this.queuedBytesValue = records.reduce((sum, record) => sum + record.size, 0);
    return records;
  }

  /** Queue ids look like Postfix's: short, unique, safe in file names and logs. */
  newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomBytes(5).toString('hex').toUpperCase()}`;
  }

  get queuedBytes(): number {
    return this.queuedBytesValue;
  }

  /** Whether a message of this size still fits (spool size limit and free disk). */
  async hasRoom(size = 0): Promise<boolean> {
    if (this.queuedBytesValue + size > this.limits.maxBytes) return false;
    if (this.limits.minFreeDisk <= 0) return true;
    const now = Date.now();
    if (!this.diskCheck || now - this.diskCheck.at > 1000) {
      const info = await statfs(this.queueDir);
      this.diskCheck = { at: now, free: info.bavail * info.bsize };
    }
    return this.diskCheck.free - size >= this.limits.minFreeDisk;
  }

  /** Streams a message through the given transforms (into incoming/ when large); nothing is committed yet. */
  async stage(id: string, source: Readable, transforms: Duplex[] = []): Promise<StagedMessage> {
    const file = path.join(this.incomingDir, `${id}.eml`);
    const sink = new SpillWriter(file);
    try {
      await pipeline([source, ...transforms, sink]);
    } catch (error) {
      if (sink.spilled) await removeFile(file);
      throw error;
    }
    return sink.spilled ? { id, file, size: sink.bytes } : { id, memory: sink.memory, size: sink.bytes };
  }

  /** Makes a staged message durable in queue/: after this resolves, a 250 may be given. */
  async commit(staged: StagedMessage, record: QueueRecord): Promise<void> {
    const target = this.messageFile(record.id);
    // Without its .json the file in queue/ does not count yet, so it may be written in place.
    const handle = staged.file ? await open(staged.file, 'r+') : await open(target, 'wx', 0o600);
    try {
      if (staged.memory) await handle.writeFile(staged.memory);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (staged.file) await rename(staged.file, target);
    // The .json lands last (fsynced, then the folder): it is what marks the message committed.
    await writeFileAtomic(this.recordFile(record.id), serialize(record));
    this.queuedBytesValue += record.size;
  }

  /** A message the relay writes itself (a delivery report), committed in one step. */
  async enqueue(record: QueueRecord, content: Buffer): Promise<void> {
    await writeFileAtomic(this.messageFile(record.id), content);
    await writeFileAtomic(this.recordFile(record.id), serialize(record));
    this.queuedBytesValue += record.size;
  }

  async read(id: string, area: SpoolArea = 'queue'): Promise<QueueRecord | undefined> {
    try {
      return JSON.parse(await readFile(this.recordFile(id, area), 'utf8')) as QueueRecord;
    } catch {
      return undefined;
    }
  }

  async list(area: SpoolArea = 'queue'): Promise<QueueRecord[]> {
    const dir = area === 'queue' ? this.queueDir : this.failedDir;
    const ids = (await readdir(dir)).filter((name) => name.endsWith('.json')).map((name) => name.slice(0, -'.json'.length));
    const records = await Promise.all(ids.map((id) => this.read(id, area)));
    return records.filter((record): record is QueueRecord => !!record);
  }

  /** Saves a changed record, unless the message was deleted meanwhile (e.g. by `queue delete`). */
  async save(record: QueueRecord): Promise<boolean> {
    if (!(await exists(this.messageFile(record.id)))) return false;
    await writeFileAtomic(this.recordFile(record.id), serialize(record));
    return true;
  }

  openStaged(message: StagedMessage): Readable {
    return message.file ? createReadStream(message.file) : Readable.from([message.memory ?? Buffer.alloc(0)], { objectMode: false });
  }

  openMessage(id: string, area: SpoolArea = 'queue'): Readable {
    return createReadStream(this.messageFile(id, area));
  }

  /** Delivered: both files go. */
  async remove(record: QueueRecord): Promise<void> {
    await removeFile(this.recordFile(record.id));
    await removeFile(this.messageFile(record.id));
    this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
  }

  /** Failed for good: kept in failed/ with its final record. */
  async moveToFailed(record: QueueRecord): Promise<void> {
    await writeFileAtomic(this.recordFile(record.id, 'failed'), serialize(record));
    await rename(this.messageFile(record.id), this.messageFile(record.id, 'failed')).catch(() => undefined);
    await removeFile(this.recordFile(record.id));
    await syncDirectory(this.queueDir);
    this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
  }

  async discard(message: StagedMessage): Promise<void> {
    if (message.file) await removeFile(message.file);
  }

  messageFile(id: string, area: SpoolArea = 'queue'): string {
    return path.join(area === 'queue' ? this.queueDir : this.failedDir, `${id}.eml`);
  }

  recordFile(id: string, area: SpoolArea = 'queue'): string {
    return path.join(area === 'queue' ? this.queueDir : this.failedDir, `${id}.json`);
  }
}

function serialize(record: QueueRecord): string {
  return JSON.stringify(record, null, 2) + '\n';
}

/** unlink, quietly done when the file is gone already (cheaper than rm, which stats first). */
async function removeFile(file: string): Promise<void> {
  await unlink(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}
