import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable, type Duplex } from 'node:stream';
import { SpillWriter } from './staged-message.js';
import { replaceFile, writeFileAtomic, syncDirectory } from '../util/atomic-file.js';
import type { QueueRecord } from './record.js';
import { SmtpError, defer } from '../reply.js';

/** A received message before it is committed: in memory when small, else in incoming/. */
export interface StagedMessage {
  id: string;
  size: number;
  memory?: Buffer;
  file?: string;
  /** Bytes it holds of the spool's room until it is committed or discarded. */
  reserved: number;
}

/** 452 4.3.1: the spool cannot take this now (size limit or free disk). */
function spoolFull(): SmtpError {
  return new SmtpError({ code: 452, enhanced: '4.3.1', text: 'Relay spool is full; try again later' }, 'spool_full');
}

/** Free disk is asked of the kernel at most this often; bytes written meanwhile are subtracted. */
const DISK_CHECK_MS = 1000;

export interface SpoolOptions {
  maxBytes: number;
  minFreeDisk: number;
  /** Told of what went wrong without failing anyone: a late fsync, a damaged record set aside. */
  onFault?: (message: string, details: Record<string, unknown>) => void;
}

export type SpoolArea = 'queue' | 'failed';

/** What recovery found in queue/ at start. */
export interface Recovered {
  /** Committed messages to deliver (some may be failures whose report and move were cut short). */
  records: QueueRecord[];
  /** Records that could not be read, or had lost their message: moved to corrupt/ for the operator. */
  setAside: string[];
}

/**
 * Message files under <dataDir>/spool, the way Postfix keeps its queue:
 *   incoming/  messages being received (no 250 yet); removed at start
 *   queue/     <id>.eml + <id>.json: committed, waiting for delivery (the .json is the commit mark)
 *   failed/    messages that failed for good, kept for the operator (pruned after a retention)
 *   corrupt/   records found damaged at start, with their messages, never deleted by the relay
 * A 250 in queue mode means both files are fsynced and the .json renamed into queue/: that rename
 * is the commit point; the folder's fsync follows (retried and logged, never a reason for 451).
 */
export class Spool {
  readonly incomingDir: string;
  readonly queueDir: string;
  readonly failedDir: string;
  readonly corruptDir: string;
  private queuedBytesValue = 0;
  /** The failed area in memory (id → account, failedAt), so /metrics never reads the folder. */
  private readonly failedIndex = new Map<string, { account: string; failedAt: string }>();
  /** Bytes of messages being received (in memory or in incoming/): they count against the limits too. */
  private receivingBytes = 0;
  private diskCheck?: { at: number; free: number; reservedSince: number };

  constructor(
    dataDir: string,
    private readonly limits: SpoolOptions = { maxBytes: Infinity, minFreeDisk: 0 },
  ) {
    const root = path.join(dataDir, 'spool');
    this.incomingDir = path.join(root, 'incoming');
    this.queueDir = path.join(root, 'queue');
    this.failedDir = path.join(root, 'failed');
    this.corruptDir = path.join(root, 'corrupt');
  }

  /**
   * Prepares the folders and recovers after a crash: partial files go, committed messages stay,
   * and a committed record that cannot be used is set aside with its message, never dropped.
   */
  async init(): Promise<Recovered> {
    for (const dir of [this.incomingDir, this.queueDir, this.failedDir, this.corruptDir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.incomingDir)) await rm(path.join(this.incomingDir, name), { force: true });
    const names = new Set(await readdir(this.queueDir));
    const recovered: Recovered = { records: [], setAside: [] };
    for (const name of names) {
      const file = path.join(this.queueDir, name);
      const id = name.replace(/\.(eml|json)$/, '');
      if (name.endsWith('.tmp')) {
        await rm(file, { force: true }); // a state update cut short; the previous .json stands
      } else if (name.endsWith('.eml') && !names.has(`${id}.json`)) {
        await rm(file, { force: true }); // never committed: the device got no 250
      } else if (name.endsWith('.json')) {
        const record = await this.read(id);
        if (record?.id === id && names.has(`${id}.eml`)) recovered.records.push(record);
        else recovered.setAside.push(await this.setAside(id, record ? 'its message file is missing' : 'the record cannot be read'));
      }
    }
    this.queuedBytesValue = recovered.records.reduce((sum, record) => sum + record.size, 0);
    for (const record of await this.list('failed')) this.failedIndex.set(record.id, { account: record.account, failedAt: record.failedAt ?? record.receivedAt });
    return recovered;
  }

  private async setAside(id: string, problem: string): Promise<string> {
    for (const file of [this.messageFile(id), this.recordFile(id)]) {
      await rename(file, path.join(this.corruptDir, path.basename(file))).catch(() => undefined);
    }
    await syncDirectory(this.queueDir);
    this.limits.onFault?.('queued message set aside in spool/corrupt: ' + problem, { id, folder: this.corruptDir });
    return id;
  }

  /** Queue ids look like Postfix's: short, unique, safe in file names and logs. */
  newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomBytes(5).toString('hex').toUpperCase()}`;
  }

  /** Queued messages plus those being received. */
  get bytes(): number {
    return this.queuedBytesValue + this.receivingBytes;
  }

  /** Refuses (452 4.3.1) when this many more bytes would not fit: spool size limit and free disk. */
  async ensureRoom(size = 0): Promise<void> {
    if (this.bytes + size > this.limits.maxBytes) throw spoolFull();
    if (this.limits.minFreeDisk <= 0) return;
    const check = await this.freeDisk();
    if (check.free - check.reservedSince - size < this.limits.minFreeDisk) throw spoolFull();
  }

  private async freeDisk(): Promise<{ free: number; reservedSince: number }> {
    const now = Date.now();
    if (!this.diskCheck || now - this.diskCheck.at > DISK_CHECK_MS) {
      try {
        const info = await statfs(this.queueDir);
        this.diskCheck = { at: now, free: info.bavail * info.bsize, reservedSince: 0 };
      } catch (error) {
        // A local fault: the device retries later; the path stays in the log, not in the reply.
        throw defer('internal', 'Local error checking the spool; try again later', '4.3.0', error);
      }
    }
    return this.diskCheck;
  }

  /**
   * Streams a message through the given transforms (into incoming/ when large); nothing is
   * committed yet. Every chunk is checked against the limits while it arrives; on any failure or
   * abort the partial message is removed and its bytes are given back.
   */
  async stage(id: string, source: Readable, transforms: Duplex[] = [], signal?: AbortSignal): Promise<StagedMessage> {
    const file = path.join(this.incomingDir, `${id}.eml`);
    const sink = new SpillWriter(file, (bytes) => this.reserve(bytes));
    try {
      await pipeline([source, ...transforms, sink], { signal });
    } catch (error) {
      this.receivingBytes -= sink.bytes;
      if (sink.spilled) await removeFile(file);
      throw error;
    }
    const staged = { id, size: sink.bytes, reserved: sink.bytes };
    return sink.spilled ? { ...staged, file } : { ...staged, memory: sink.memory };
  }

  private async reserve(bytes: number): Promise<void> {
    await this.ensureRoom(bytes);
    this.receivingBytes += bytes;
    if (this.diskCheck) this.diskCheck.reservedSince += bytes;
  }

  private release(staged: StagedMessage): void {
    this.receivingBytes -= staged.reserved;
    staged.reserved = 0;
  }

  /** Makes a staged message durable in queue/: after this resolves, a 250 may be given. */
  async commit(staged: StagedMessage, record: QueueRecord): Promise<void> {
    const target = this.messageFile(record.id);
    try {
      // Without its .json the file in queue/ does not count yet, so it may be written in place.
      const handle = staged.file ? await open(staged.file, 'r+') : await open(target, 'wx', 0o600);
      try {
        if (staged.memory) await handle.writeFile(staged.memory);
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (staged.file) await rename(staged.file, target);
      // The .json lands last: its rename is the commit point. Nothing after it may fail the message.
      await replaceFile(this.recordFile(record.id), serialize(record));
    } catch (error) {
      await removeFile(target).catch(() => undefined); // not committed: the device gets 4xx and sends again
      throw error;
    }
    this.release(staged);
    this.queuedBytesValue += record.size;
    await this.syncCommitted(record.id);
  }

  /** Makes the commit's renames survive a power cut; a failure here is logged, the message stands. */
  private async syncCommitted(id: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await syncDirectory(this.queueDir);
      } catch (error) {
        if (attempt === 3) {
          this.limits.onFault?.('cannot fsync the queue folder after a commit; the message is queued, but a power cut now could lose it', { id, err: (error as Error).message });
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
      }
    }
  }

  /** A message the relay writes itself (a delivery report), committed in one step. */
  async enqueue(record: QueueRecord, content: Buffer): Promise<void> {
    await writeFileAtomic(this.messageFile(record.id), content);
    await replaceFile(this.recordFile(record.id), serialize(record));
    this.queuedBytesValue += record.size;
    await this.syncCommitted(record.id);
  }

  /** Whether a record with this id is in the queue or the failed area. */
  async has(id: string): Promise<boolean> {
    return (await exists(this.recordFile(id))) || this.failedIndex.has(id);
  }

  failedCount(account: string): number {
    let count = 0;
    for (const entry of this.failedIndex.values()) if (entry.account === account) count++;
    return count;
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

  /** Failed for good: kept in failed/ with its final record. Safe to repeat after a crash. */
  async moveToFailed(record: QueueRecord): Promise<void> {
    await writeFileAtomic(this.recordFile(record.id, 'failed'), serialize(record));
    await rename(this.messageFile(record.id), this.messageFile(record.id, 'failed')).catch(() => undefined);
    await removeFile(this.recordFile(record.id));
    await syncDirectory(this.queueDir);
    this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
    this.failedIndex.set(record.id, { account: record.account, failedAt: record.failedAt ?? new Date().toISOString() });
  }

  /** Removes a message (queued or failed): the record first, so a crash leaves no half message. */
  async deleteMessage(id: string): Promise<SpoolArea | undefined> {
    for (const area of ['queue', 'failed'] as const) {
      const record = await this.read(id, area);
      if (!record) continue;
      await removeFile(this.recordFile(id, area));
      await removeFile(this.messageFile(id, area));
      if (area === 'queue') this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
      else this.failedIndex.delete(id);
      return area;
    }
    return undefined;
  }

  /** Deletes failed messages older than the retention; returns how many went. */
  async pruneFailed(retentionMs: number): Promise<number> {
    const cutoff = new Date(Date.now() - retentionMs).toISOString();
    const old = [...this.failedIndex].filter(([, entry]) => entry.failedAt < cutoff).map(([id]) => id);
    for (const id of old) await this.deleteMessage(id);
    return old.length;
  }

  /** Gives up a staged message that was not committed (or was relayed directly). */
  async discard(message: StagedMessage): Promise<void> {
    if (message.reserved === 0) return; // committed: its file lives in queue/ now
    this.release(message);
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
