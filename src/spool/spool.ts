import { constants, createReadStream, createWriteStream } from 'node:fs';
import { access, copyFile, mkdir, open, readFile, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable, type Duplex } from 'node:stream';
import { SpillWriter } from './staged-message.js';
import { writeFileAtomic, syncDirectory } from '../util/atomic-file.js';
import { DamagedQueueFile, openQueueFileContent, queueFileTrailer, readQueueFileRecord } from './queue-file.js';
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
  /**
   * A worker process that receives into the spool the primary process owns: messages arrive in a
   * folder of its own under incoming/ (the primary removes it if the worker dies), and the queued
   * bytes the limits count are the primary's (it counts what every worker commits).
   */
  receiver?: { folder: string; queuedBytes: () => number };
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
 *   queue/     <id>.msg: committed, waiting for delivery. One queue file holds the message and the
 *              record it was committed with (see queue-file.ts); <id>.state, when present, is the
 *              record as it changed since (attempts, delivered recipients), replaced atomically.
 *   failed/    messages that failed for good, kept for the operator (pruned after a retention)
 *   corrupt/   files found damaged at start, never deleted by the relay
 * A 250 in queue mode means the queue file was written in incoming/, fsynced and renamed into
 * queue/: that rename is the commit point. The folder's fsync follows, shared by every commit
 * in flight (retried and logged, never a reason for 451).
 */
export class Spool {
  readonly incomingDir: string;
  readonly queueDir: string;
  readonly failedDir: string;
  readonly corruptDir: string;
  private queuedBytesValue = 0;
  /** The failed area in memory (id → account, failedAt, size), oldest first, so /metrics never reads the folder. */
  private readonly failedIndex = new Map<string, { account: string; failedAt: string; size: number }>();
  private failedBytes = 0;
  /** Bytes of messages being received (in memory or in incoming/): they count against the limits too. */
  private receivingBytes = 0;
  private diskCheck?: { at: number; free: number; reservedSince: number };
  /** Worker commits being counted (countReceived). */
  private readonly counting = new Set<string>();

  constructor(
    dataDir: string,
    private readonly limits: SpoolOptions = { maxBytes: Infinity, minFreeDisk: 0 },
  ) {
    const root = path.join(dataDir, 'spool');
    this.incomingDir = path.join(root, 'incoming', ...(limits.receiver ? [limits.receiver.folder] : []));
    this.queueDir = path.join(root, 'queue');
    this.failedDir = path.join(root, 'failed');
    this.corruptDir = path.join(root, 'corrupt');
  }

  /**
   * Prepares the folders and recovers after a crash: partial files go, committed messages stay,
   * and a committed message that cannot be read is set aside, never dropped.
   */
  async init(): Promise<Recovered> {
    for (const dir of [this.incomingDir, this.queueDir, this.failedDir, this.corruptDir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    // Partial messages, and the folders of worker processes (each receives into its own).
    for (const name of await readdir(this.incomingDir)) await rm(path.join(this.incomingDir, name), { force: true, recursive: true });
    const recovered: Recovered = { records: [], setAside: [] };
    const failed: QueueRecord[] = [];
    for (const area of ['queue', 'failed'] as const) {
      const found = await this.recoverArea(area);
      (area === 'queue' ? recovered.records : failed).push(...found.records);
      recovered.setAside.push(...found.setAside);
    }
    this.queuedBytesValue = recovered.records.reduce((sum, record) => sum + record.size, 0);
    failed.sort((a, b) => (a.failedAt ?? a.receivedAt).localeCompare(b.failedAt ?? b.receivedAt));
    for (const record of failed) this.indexFailed(record);
    return recovered;
  }

  private async recoverArea(area: SpoolArea): Promise<Recovered> {
    const dir = this.dirOf(area);
    const names = new Set(await readdir(dir));
    const recovered: Recovered = { records: [], setAside: [] };
    for (const name of names) {
      const file = path.join(dir, name);
      const [id, kind] = splitName(name);
      if (kind === 'msg') {
        const record = await this.load(id, area).catch((error: Error) => error);
        if (record instanceof Error) recovered.setAside.push(await this.setAside(id, area, 'it cannot be read: ' + record.message));
        else if (record) recovered.records.push(record);
      } else if (kind === 'tmp' || (kind === 'state' && !names.has(`${id}.msg`))) {
        await removeFile(file); // a state update cut short, or left by a removal or a move to failed/
      } else if (kind === 'eml' && names.has(`${id}.json`)) {
        const record = await this.convertLegacy(id, area).catch((error: Error) => error);
        if (record instanceof Error) recovered.setAside.push(await this.setAside(id, area, 'the record cannot be read'));
        else recovered.records.push(record);
      } else if (kind === 'eml') {
        await removeFile(file); // an earlier version's message that was never committed: no 250
      } else if (kind === 'json' && !names.has(`${id}.eml`)) {
        recovered.setAside.push(await this.setAside(id, area, 'its message file is missing'));
      }
    }
    return recovered;
  }

  /** An earlier version's pair (<id>.eml + <id>.json) becomes one queue file; idempotent after a crash. */
  private async convertLegacy(id: string, area: SpoolArea): Promise<QueueRecord> {
    const dir = this.dirOf(area);
    const record = JSON.parse(await readFile(path.join(dir, `${id}.json`), 'utf8')) as QueueRecord;
    if (record.id !== id) throw new Error('record id does not match its file');
    const incoming = path.join(this.incomingDir, `${id}.eml`);
    await copyFile(path.join(dir, `${id}.eml`), incoming);
    const { size } = await stat(incoming);
    const converted = { ...record, size };
    await sealQueueFile(incoming, converted, size, path.join(dir, `${id}.msg`));
    await syncDirectory(dir);
    await removeFile(path.join(dir, `${id}.eml`));
    await removeFile(path.join(dir, `${id}.json`));
    return converted;
  }

  private async setAside(id: string, area: SpoolArea, problem: string): Promise<string> {
    const dir = this.dirOf(area);
    for (const kind of ['msg', 'state', 'eml', 'json']) {
      await rename(path.join(dir, `${id}.${kind}`), path.join(this.corruptDir, `${id}.${kind}`)).catch(() => undefined);
    }
    await syncDirectory(dir);
    this.limits.onFault?.(`${area === 'queue' ? 'queued' : 'failed'} message set aside in spool/corrupt: ${problem}`, { id, folder: this.corruptDir });
    return id;
  }

  /** Queue ids look like Postfix's: short, unique, safe in file names and logs. */
  newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomBytes(5).toString('hex').toUpperCase()}`;
  }

  /** Queued messages plus those being received. */
  get bytes(): number {
    return (this.limits.receiver?.queuedBytes() ?? this.queuedBytesValue) + this.receivingBytes;
  }

  /**
   * Refuses (452 4.3.1) when this many more bytes would not fit: spool size limit and free disk.
   * Failed messages (reported already, kept to look at) count against queue.maxSize too, and the
   * oldest of them make room for new mail: they never block it, and never outgrow the limit.
   */
  async ensureRoom(size = 0): Promise<void> {
    if (this.bytes + size > this.limits.maxBytes) throw spoolFull();
    if (this.bytes + this.failedBytes + size > this.limits.maxBytes) await this.dropOldestFailed(this.bytes + this.failedBytes + size - this.limits.maxBytes);
    if (this.limits.minFreeDisk <= 0) return;
    const check = await this.freeDisk();
    if (check.free - check.reservedSince - size < this.limits.minFreeDisk) throw spoolFull();
  }

  /**
   * Why the spool cannot take mail now (for readiness): less than `headroom` bytes left under
   * queue.maxSize or above queue.minFreeDisk, or a folder not writable; empty when it can.
   */
  async acceptProblems(headroom: number): Promise<string[]> {
    const problems: string[] = [];
    await this.ensureRoom(headroom).catch((error: SmtpError) =>
      problems.push(error.reason === 'spool_full' ? 'spool: nearly full (see queue.maxSize, queue.minFreeDisk and the oldest queued messages)' : `spool: ${error.message}`),
    );
    for (const dir of [this.incomingDir, this.queueDir]) {
      await access(dir, constants.W_OK).catch((error: NodeJS.ErrnoException) => problems.push(`spool: ${path.basename(dir)}/ is not writable (${error.code})`));
    }
    return problems;
  }

  private async dropOldestFailed(excess: number): Promise<void> {
    const dropped: string[] = [];
    for (const [id, entry] of this.failedIndex) {
      if (excess <= 0) break;
      excess -= entry.size;
      await this.removeMessage(id, 'failed');
      this.forgetFailed(id);
      dropped.push(id);
    }
    if (dropped.length) this.limits.onFault?.(`failed messages deleted before queue.failedRetention to keep the spool within queue.maxSize`, { ids: dropped.slice(0, 20), count: dropped.length });
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
      // A hang-up can end the pipeline while a chunk is still being kept (its file opening): only
      // once the writer has closed are its bytes and its file what they will stay.
      sink.destroy();
      await sink.settled();
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
    if (staged.file) await sealQueueFile(staged.file, record, staged.size, this.queueFile(record.id));
    else await this.writeQueueFile(record, staged.memory ?? Buffer.alloc(0));
    // Renamed into queue/: committed. Nothing after this line may fail the message.
    this.release(staged);
    this.queuedBytesValue += record.size;
    await this.syncCommitted(record.id);
  }

  /**
   * A message a worker process committed (the primary's side): counted against the limits unless
   * the delivery agent has it already (`known`) or its file is gone (delivered meanwhile). True
   * when it is new here. The delivery agent removes a file before it forgets the message, so a
   * message seen present and unknown has not been delivered.
   */
  async countReceived(record: QueueRecord, known: () => boolean): Promise<boolean> {
    if (known() || this.counting.has(record.id)) return false; // told twice at once: by the worker and by a rescan
    this.counting.add(record.id);
    try {
      if (!(await exists(this.queueFile(record.id))) || known()) return false;
      this.queuedBytesValue += record.size;
      return true;
    } finally {
      this.counting.delete(record.id);
    }
  }

  /** A message the relay writes itself (a delivery report), committed in one step. */
  async enqueue(record: QueueRecord, content: Buffer): Promise<void> {
    await this.writeQueueFile(record, content);
    this.queuedBytesValue += record.size;
    await this.syncCommitted(record.id);
  }

  /**
   * A message another replica hands over (scale-down), committed here before the sender deletes its
   * copy: its content streams into incoming/, `check` sees the content's SHA-256 (and throws to
   * refuse it), then it is sealed with its record and committed like a received message.
   */
  async adopt(record: QueueRecord, content: Readable, check: (sha256: string) => void): Promise<void> {
    const file = path.join(this.incomingDir, `${record.id}.eml`);
    const digest = createHash('sha256');
    let size = 0;
    await this.ensureRoom(record.size); // before a byte is written: a full spool refuses at once
    try {
      await pipeline(
        content,
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            digest.update(chunk);
            size += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(file, { mode: 0o600 }),
      );
      if (size !== record.size) throw new Error(`handed-over message is ${size} bytes, its record says ${record.size}`);
      check(digest.digest('hex'));
      await sealQueueFile(file, record, size, this.queueFile(record.id));
    } catch (error) {
      await removeFile(file).catch(() => undefined);
      throw error;
    }
    this.queuedBytesValue += record.size;
    await this.syncCommitted(record.id);
  }

  /** A queue file from content in memory: written in incoming/ in one write, fsynced, renamed into queue/. */
  private async writeQueueFile(record: QueueRecord, content: Buffer): Promise<void> {
    const incoming = path.join(this.incomingDir, `${record.id}.msg`);
    try {
      const handle = await open(incoming, 'wx', 0o600);
      try {
        await handle.writev([content, queueFileTrailer(record, content.length)]);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      await rename(incoming, this.queueFile(record.id));
    } catch (error) {
      await removeFile(incoming).catch(() => undefined); // not committed: the device gets 4xx and sends again
      throw error;
    }
  }

  /** Makes the commit's rename survive a power cut; a failure here is logged, the message stands. */
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

  /** Whether a message with this id is in the queue or the failed area. */
  async has(id: string): Promise<boolean> {
    return (await exists(this.queueFile(id))) || this.failedIndex.has(id);
  }

  failedCount(account: string): number {
    let count = 0;
    for (const entry of this.failedIndex.values()) if (entry.account === account) count++;
    return count;
  }

  /** The message's current record: its state file if it changed since the commit, else the queue file's. */
  async read(id: string, area: SpoolArea = 'queue'): Promise<QueueRecord | undefined> {
    return this.load(id, area).catch(() => undefined);
  }

  private async load(id: string, area: SpoolArea): Promise<QueueRecord | undefined> {
    const committed = await readQueueFileRecord(this.queueFile(id, area));
    if (!committed) return undefined;
    const state = await readFile(this.stateFile(id, area), 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    const record = state === undefined ? committed.record : (JSON.parse(state) as QueueRecord);
    if (record.id !== id || record.size !== committed.contentLength) throw new DamagedQueueFile('record does not match its queue file');
    return record;
  }

  async list(area: SpoolArea = 'queue'): Promise<QueueRecord[]> {
    const ids = (await readdir(this.dirOf(area))).filter((name) => splitName(name)[1] === 'msg').map((name) => splitName(name)[0]);
    const records = await Promise.all(ids.map((id) => this.read(id, area)));
    return records.filter((record): record is QueueRecord => !!record);
  }

  /** Saves a changed record, unless the message was deleted meanwhile (e.g. by `queue delete`). */
  async save(record: QueueRecord): Promise<boolean> {
    if (!(await exists(this.queueFile(record.id)))) return false;
    await writeFileAtomic(this.stateFile(record.id), serialize(record));
    return true;
  }

  openStaged(message: StagedMessage): Readable {
    return message.file ? createReadStream(message.file) : Readable.from([message.memory ?? Buffer.alloc(0)], { objectMode: false });
  }

  /** The message as it will be sent (the queue file's content part). */
  openMessage(record: Pick<QueueRecord, 'id' | 'size'>, area: SpoolArea = 'queue'): Readable {
    return openQueueFileContent(this.queueFile(record.id, area), record.size);
  }

  /** Delivered: the queue file goes first (the message is gone), then its state. */
  async remove(record: QueueRecord): Promise<void> {
    await this.removeMessage(record.id, 'queue');
    this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
  }

  private async removeMessage(id: string, area: SpoolArea): Promise<void> {
    // In this order: a state file left by a crash is removed at start, while a queue file left
    // without its state would be sent again to the recipients it already reached.
    await removeFile(this.queueFile(id, area));
    await removeFile(this.stateFile(id, area));
  }

  /** Failed for good: kept in failed/ with its final record. Safe to repeat after a crash. */
  async moveToFailed(record: QueueRecord): Promise<void> {
    await writeFileAtomic(this.stateFile(record.id, 'failed'), serialize(record));
    await rename(this.queueFile(record.id), this.queueFile(record.id, 'failed')).catch(() => undefined);
    await removeFile(this.stateFile(record.id));
    await syncDirectory(this.queueDir);
    this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
    this.indexFailed(record);
  }

  private indexFailed(record: QueueRecord): void {
    this.failedIndex.set(record.id, { account: record.account, failedAt: record.failedAt ?? new Date().toISOString(), size: record.size });
    this.failedBytes += record.size;
  }

  /** Removes a message (queued or failed). */
  async deleteMessage(id: string): Promise<SpoolArea | undefined> {
    for (const area of ['queue', 'failed'] as const) {
      const record = await this.read(id, area);
      if (!record) continue;
      await this.removeMessage(id, area);
      if (area === 'queue') this.queuedBytesValue = Math.max(0, this.queuedBytesValue - record.size);
      else this.forgetFailed(id);
      return area;
    }
    return undefined;
  }

  private forgetFailed(id: string): void {
    this.failedBytes = Math.max(0, this.failedBytes - (this.failedIndex.get(id)?.size ?? 0));
    this.failedIndex.delete(id);
  }

  /** The newest `limit` failed messages, newest first (a page shows these; the rest are only counted). */
  async newestFailed(limit: number): Promise<QueueRecord[]> {
    const ids = [...this.failedIndex.keys()].slice(-limit).reverse();
    return (await Promise.all(ids.map((id) => this.read(id, 'failed')))).filter((record): record is QueueRecord => record !== undefined);
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

  private dirOf(area: SpoolArea): string {
    return area === 'queue' ? this.queueDir : this.failedDir;
  }

  private queueFile(id: string, area: SpoolArea = 'queue'): string {
    return path.join(this.dirOf(area), `${id}.msg`);
  }

  private stateFile(id: string, area: SpoolArea = 'queue'): string {
    return path.join(this.dirOf(area), `${id}.state`);
  }
}

/** "<id>.<kind>" (a replaceFile temporary, ".<name>.<random>.tmp", is kind "tmp"). */
function splitName(name: string): [string, string] {
  if (name.endsWith('.tmp')) return [name, 'tmp'];
  const dot = name.lastIndexOf('.');
  return dot > 0 ? [name.slice(0, dot), name.slice(dot + 1)] : [name, ''];
}

/** Appends the record to a message already on disk, fsyncs it and renames it into place. */
async function sealQueueFile(file: string, record: QueueRecord, contentLength: number, target: string): Promise<void> {
  const handle = await open(file, 'a');
  try {
    await handle.write(queueFileTrailer(record, contentLength));
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await rename(file, target);
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
