import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../log.js';
import { boundedEvent, type TraceEvent, type TraceSink } from './events.js';
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

/** A search holds at most this many events, and this much of their text: narrow it with --since or filters. */
export const MAX_SEARCH_EVENTS = 200_000;
const MAX_SEARCH_BYTES = 4 * 1024 * 1024;
/** Message ids a first pass (by user, sender, recipient) collects at most. */
const MAX_CANDIDATES = 100_000;

const FLUSH_MS = 1000;
const FLUSH_BYTES = 256 * 1024;
const PRUNE_MS = 3_600_000;
/** A day is cut into files of at most this share of trace.maxSize, so the limit holds within a day too. */
const SEGMENTS_PER_LIMIT = 10;
const MIN_SEGMENT_BYTES = 64 * 1024;
/** `2026-12-07.jsonl`, then `2026-12-07.1.jsonl`, `2026-12-07.2.jsonl`, ... */
const FILE = /^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl$/;

interface Segment {
  name: string;
  day: string;
  index: number;
}

function segmentOf(name: string): Segment | undefined {
  const match = FILE.exec(name);
  return match ? { name, day: match[1], index: Number(match[2] ?? 0) } : undefined;
}

const segmentName = (day: string, index: number) => (index ? `${day}.${index}.jsonl` : `${day}.jsonl`);
const inOrder = (a: Segment, b: Segment) => a.day.localeCompare(b.day) || a.index - b.index;

/**
 * The embedded delivery log: JSON-lines files per UTC day under dataDir/trace/, a day cut into
 * segments of a tenth of trace.maxSize. Appends are buffered and written at most once a second
 * (never an fsync): the trace is a log, not the queue, and a crash may lose its last second. Days
 * past the retention are deleted, and the oldest segments while the log is over its size.
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
  /** The segment appends go to, and its size (found on disk for the first write of a day). */
  private current?: { day: string; index: number; size: number };

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
    const line = `${JSON.stringify(boundedEvent(event))}\n`;
    this.buffer.push(line);
    this.bufferedBytes += line.length;
    // A flush never outgrows a segment, so a segment (and the log) overshoots by one event at most.
    if (this.bufferedBytes >= Math.min(FLUSH_BYTES, this.segmentBytes)) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS).unref();
  }

  /** Writes what is buffered; resolves when it (and every earlier write) is in the file. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length === 0) return this.writing;
    const lines = this.buffer;
    const [day, bytes] = [this.bufferDay, this.bufferedBytes];
    this.writtenSincePrune += bytes;
    this.buffer = [];
    this.bufferedBytes = 0;
    if (this.writtenSincePrune > this.limits.maxBytes / SEGMENTS_PER_LIMIT) void this.prune();
    this.writing = this.writing.then(async () =>
      appendFile(await this.segmentFor(day, bytes), lines.join(''), { mode: 0o600 }).then(
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

  private get segmentBytes(): number {
    return Math.max(MIN_SEGMENT_BYTES, this.limits.maxBytes / SEGMENTS_PER_LIMIT);
  }

  /** The file the next `bytes` go to: today's newest segment, or a new one once it holds its share of maxSize. */
  private async segmentFor(day: string, bytes: number): Promise<string> {
    if (this.current?.day !== day) {
      const [newest] = (await this.segments(LISTING)).filter((segment) => segment.day === day).reverse();
      const size = newest ? (await stat(path.join(this.dir, newest.name)).catch(() => ({ size: 0 }))).size : 0;
      this.current = { day, index: newest?.index ?? 0, size };
    }
    if (this.current.size > 0 && this.current.size + bytes > this.segmentBytes) this.current = { day, index: this.current.index + 1, size: 0 };
    this.current.size += bytes;
    return path.join(this.dir, segmentName(day, this.current.index));
  }

  /**
   * Newest segment first. Memory stays bounded whatever the log holds: past MAX_SEARCH_EVENTS or
   * MAX_SEARCH_BYTES of events the oldest are let go and the answer says it was cut.
   */
  async events(query: TraceQuery, cap = MAX_SEARCH_EVENTS): Promise<FoundEvents> {
    const segments = (await this.segments(query)).reverse();
    const { ids: candidates, cut } = await this.candidates(segments, query);
    const found: TraceEvent[] = [];
    let bytes = 0;
    let truncated = cut;
    for (const segment of segments) {
      if (found.length >= cap || bytes >= MAX_SEARCH_BYTES) return { events: found, truncated: true };
      // This segment's matches, oldest first; when they would overflow, only the newest are kept
      // (a queue: `first` moves on, the array is compacted now and then, never shifted per event).
      let kept: { event: TraceEvent; size: number }[] = [];
      let first = 0;
      let keptBytes = 0;
      await this.readSegment(segment, query, (event, size) => {
        if (candidates && !candidates.has(event.id)) return;
        kept.push({ event, size });
        keptBytes += size;
        while (kept.length - first > cap - found.length || keptBytes > MAX_SEARCH_BYTES - bytes) {
          keptBytes -= kept[first++].size;
          truncated = true;
        }
        if (first > 4096 && first * 2 > kept.length) [kept, first] = [kept.slice(first), 0];
      });
      for (let index = first; index < kept.length; index++) found.push(kept[index].event);
      bytes += keptBytes;
    }
    return { events: found, truncated };
  }

  /**
   * With a user, sender or recipient to look for, a first pass collects the ids of the messages
   * whose lines mention it (cheap text search), so the cap counts candidates, not the whole log.
   */
  private async candidates(segments: Segment[], query: TraceQuery): Promise<{ ids?: Set<string>; cut: boolean }> {
    const needles = [query.user && `"user":${JSON.stringify(query.user)}`, query.from, query.to].filter((needle): needle is string => !!needle).map((needle) => needle.toLowerCase());
    if (needles.length === 0) return { cut: false };
    const ids = new Set<string>();
    for (const segment of segments) {
      for await (const line of createInterface({ input: createReadStream(path.join(this.dir, segment.name)), crlfDelay: Infinity })) {
        const lower = line.toLowerCase();
        if (!needles.some((needle) => lower.includes(needle))) continue;
        if (ids.size >= MAX_CANDIDATES) return { ids, cut: true }; // newest first: the most recent are kept
        ids.add(parseEvent(line)?.id ?? '');
      }
    }
    return { ids, cut: false };
  }

  async replay(query: TraceQuery, visit: (event: TraceEvent) => void): Promise<void> {
    for (const segment of await this.segments(query)) await this.readSegment(segment, query, visit);
  }

  /** The files a query reaches, oldest first (everything written so far is in them; writes are flushed first unless only listing). */
  private async segments(query: TraceQuery): Promise<Segment[]> {
    if (query !== LISTING) await this.flush();
    const firstDay = query.since === undefined ? '' : new Date(query.since).toISOString().slice(0, 10);
    return (await readdir(this.dir).catch(() => [] as string[]))
      .map(segmentOf)
      .filter((segment): segment is Segment => segment !== undefined && segment.day >= firstDay)
      .sort(inOrder);
  }

  private async readSegment(segment: Segment, query: TraceQuery, visit: (event: TraceEvent, size: number) => void): Promise<void> {
    // A search by id knows the text its lines contain: the rest are skipped unparsed.
    const needle = query.id === undefined ? undefined : `"id":${JSON.stringify(query.id)}`;
    const lines = createInterface({ input: createReadStream(path.join(this.dir, segment.name)), crlfDelay: Infinity });
    for await (const line of lines) {
      if (needle && !line.includes(needle)) continue;
      const event = parseEvent(line);
      if (event && eventMayMatch(event, query)) visit(event, line.length);
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
    const kept: (Segment & { size: number })[] = [];
    for (const segment of await this.segments(LISTING)) {
      if (segment.day < oldestKept) await unlink(path.join(this.dir, segment.name)).catch(() => undefined);
      else kept.push({ ...segment, size: (await stat(path.join(this.dir, segment.name)).catch(() => ({ size: 0 }))).size });
    }
    let total = kept.reduce((sum, segment) => sum + segment.size, 0);
    const dropped: string[] = [];
    // The newest segment (being written) stays: each is a tenth of maxSize, so the log stays near it.
    while (total > this.limits.maxBytes && kept.length > 1) {
      const oldest = kept.shift()!;
      await unlink(path.join(this.dir, oldest.name)).catch(() => undefined);
      total -= oldest.size;
      dropped.push(oldest.name);
    }
    if (dropped.length) this.logger.warn({ files: dropped.slice(0, 10), count: dropped.length, maxBytes: this.limits.maxBytes }, 'delivery log over trace.maxSize: its oldest part was deleted before trace.retention');
  }
}

/** A listing of the files for pruning: no flush (a flush may be what started the pruning). */
const LISTING: TraceQuery = {};

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
