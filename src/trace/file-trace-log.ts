import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../log.js';
import type { TraceEvent, TraceSink } from './events.js';
import { eventMayMatch, type TraceQuery } from './query.js';

/** Events read back for a search; `truncated` when the cap was reached (the newest days are kept). */
export interface FoundEvents {
  events: TraceEvent[];
  truncated: boolean;
}

/** The delivery log as this process keeps it: write events, read them back. */
export interface TraceLog extends TraceSink {
  /** Events that may match (all of a matching message's events within the query's time), newest days first. */
  events(query: TraceQuery): Promise<FoundEvents>;
  /** Calls visit for every event that may match, oldest first, without holding them (the console's replay at start). */
  replay(query: TraceQuery, visit: (event: TraceEvent) => void): Promise<void>;
  /** When events last could not be written (full or read-only disk), if ever. */
  readonly lastDropAt?: number;
  close(): Promise<void>;
}

/** A search holds at most about this many events (plus one day's): narrow it with --since or filters. */
export const MAX_SEARCH_EVENTS = 200_000;

const FLUSH_MS = 1000;
const FLUSH_BYTES = 256 * 1024;
const PRUNE_MS = 3_600_000;
const FILE = /^(\d{4}-\d{2}-\d{2})\.jsonl$/;

/**
 * The embedded delivery log: one JSON-lines file per UTC day under dataDir/trace/. Appends are
 * buffered and written at most once a second (never an fsync): the trace is a log, not the queue,
 * and a crash may lose its last second. Days past the retention are deleted.
 */
export class FileTraceLog implements TraceLog {
  private buffer: string[] = [];
  private bufferedBytes = 0;
  private bufferDay = '';
  private timer?: NodeJS.Timeout;
  private pruneTimer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private warned = false;
  lastDropAt?: number;

  /** Bytes appended since the last prune: past a tenth of maxBytes, the size is checked again. */
  private writtenSincePrune = 0;
  private pruning?: Promise<void>;

  /** @param limits how long days are kept, and how large the log may grow (the oldest days go first). */
  constructor(
    private readonly dir: string,
    private readonly limits: { retentionMs: number; maxBytes: number },
    private readonly logger: Logger,
    private readonly onDropped: (events: number) => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await this.prune();
  }

  record(event: TraceEvent): void {
    const day = event.at.slice(0, 10);
    if (day !== this.bufferDay && this.buffer.length) this.flush();
    this.bufferDay = day;
    const line = `${JSON.stringify(event)}\n`;
    this.buffer.push(line);
    this.bufferedBytes += line.length;
    if (this.bufferedBytes >= FLUSH_BYTES) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS).unref();
  }

  /** Writes what is buffered; resolves when it (and every earlier write) is in the file. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length === 0) return this.writing;
    const lines = this.buffer;
    const file = path.join(this.dir, `${this.bufferDay}.jsonl`);
    this.writtenSincePrune += this.bufferedBytes;
    this.buffer = [];
    this.bufferedBytes = 0;
    if (this.writtenSincePrune > this.limits.maxBytes / 10) void this.prune();
    this.writing = this.writing.then(() =>
      appendFile(file, lines.join(''), { mode: 0o600 }).then(
        () => {
          this.warned = false;
        },
        (error: Error) => {
          this.lastDropAt = Date.now();
          this.onDropped(lines.length);
          if (!this.warned) this.logger.warn({ err: error.message, events: lines.length }, 'cannot write the delivery log (trace); its events are lost, mail is not');
          this.warned = true;
        },
      ),
    );
    return this.writing;
  }

  async events(query: TraceQuery, cap = MAX_SEARCH_EVENTS): Promise<FoundEvents> {
    const days = (await this.days(query)).reverse();
    const candidates = await this.candidates(days, query);
    const found: TraceEvent[] = [];
    // Newest day first, whole days at a time: when the cap is reached, what is kept is the most recent.
    for (const file of days) {
      if (found.length >= cap) return { events: found, truncated: true };
      await this.readDay(file, query, (event) => (!candidates || candidates.has(event.id)) && found.push(event));
    }
    return { events: found, truncated: false };
  }

  /**
   * With a user, sender or recipient to look for, a first pass collects the ids of the messages
   * whose lines mention it (cheap text search), so the cap counts candidates, not the whole log.
   */
  private async candidates(days: string[], query: TraceQuery): Promise<Set<string> | undefined> {
    const needles = [query.user && `"user":${JSON.stringify(query.user)}`, query.from, query.to].filter((needle): needle is string => !!needle).map((needle) => needle.toLowerCase());
    if (needles.length === 0) return undefined;
    const ids = new Set<string>();
    for (const file of days) {
      for await (const line of createInterface({ input: createReadStream(path.join(this.dir, file)), crlfDelay: Infinity })) {
        const lower = line.toLowerCase();
        if (needles.some((needle) => lower.includes(needle))) ids.add(parseEvent(line)?.id ?? '');
      }
    }
    return ids;
  }

  async replay(query: TraceQuery, visit: (event: TraceEvent) => void): Promise<void> {
    for (const file of await this.days(query)) await this.readDay(file, query, visit);
  }

  /** The day files a query reaches, oldest first (everything written so far is in them). */
  private async days(query: TraceQuery): Promise<string[]> {
    await this.flush();
    const firstDay = query.since === undefined ? '' : new Date(query.since).toISOString().slice(0, 10);
    return (await readdir(this.dir).catch(() => [] as string[])).filter((name) => FILE.test(name) && name.slice(0, 10) >= firstDay).sort();
  }

  private async readDay(name: string, query: TraceQuery, visit: (event: TraceEvent) => void): Promise<void> {
    // A search by id knows the text its lines contain: the rest are skipped unparsed.
    const needle = query.id === undefined ? undefined : `"id":${JSON.stringify(query.id)}`;
    const lines = createInterface({ input: createReadStream(path.join(this.dir, name)), crlfDelay: Infinity });
    for await (const line of lines) {
      if (needle && !line.includes(needle)) continue;
      const event = parseEvent(line);
      if (event && eventMayMatch(event, query)) visit(event);
    }
  }

  async close(): Promise<void> {
    clearTimeout(this.pruneTimer);
    await this.pruning;
    await this.flush();
  }

  /**
   * Deletes the days past the retention and, while the log is larger than maxBytes, the oldest
   * days (never today's): a device flooding the relay cannot fill the disk through the log. Runs
   * at start, every hour, and after each tenth of maxBytes written.
   */
  private prune(): Promise<void> {
    this.pruning ??= this.pruneNow().finally(() => {
      this.pruning = undefined;
      clearTimeout(this.pruneTimer);
      this.pruneTimer = setTimeout(() => void this.prune(), PRUNE_MS).unref();
    });
    return this.pruning;
  }

  private async pruneNow(): Promise<void> {
    this.writtenSincePrune = 0;
    const oldestKept = new Date(Date.now() - this.limits.retentionMs).toISOString().slice(0, 10);
    const days = (await readdir(this.dir).catch(() => [] as string[])).filter((name) => FILE.test(name)).sort();
    const kept: { name: string; size: number }[] = [];
    for (const name of days) {
      if (name.slice(0, 10) < oldestKept) await unlink(path.join(this.dir, name)).catch(() => undefined);
      else kept.push({ name, size: (await stat(path.join(this.dir, name)).catch(() => ({ size: 0 }))).size });
    }
    let total = kept.reduce((sum, day) => sum + day.size, 0);
    const dropped: string[] = [];
    while (total > this.limits.maxBytes && kept.length > 1) {
      const oldest = kept.shift()!;
      await unlink(path.join(this.dir, oldest.name)).catch(() => undefined);
      total -= oldest.size;
      dropped.push(oldest.name.slice(0, 10));
    }
    if (dropped.length) this.logger.warn({ days: dropped, maxBytes: this.limits.maxBytes }, 'delivery log over trace.maxSize: its oldest days were deleted before trace.retention');
  }
}

/** A line a crash cut short, or one edited by hand, is skipped. */
function parseEvent(line: string): TraceEvent | undefined {
  try {
    const event = JSON.parse(line) as TraceEvent;
    return typeof event.id === 'string' && typeof event.at === 'string' && typeof event.account === 'string' ? event : undefined;
  } catch {
    return undefined;
  }
}

/** The delivery log switched off (trace.enabled: false). */
export class NoTraceLog implements TraceLog {
  record(): void {}
  async events(): Promise<FoundEvents> {
    return { events: [], truncated: false };
  }
  async replay(): Promise<void> {}
  async close(): Promise<void> {}
}
