import path from 'node:path';
import { askDaemon } from '../control/index.js';
import { createLogger } from '../log.js';
import { FileTraceLog, formatTimeline, isStatus, parseSince, selectMessages, timelineJson, MESSAGE_STATUSES, type TraceQuery, type TraceSearchResult } from '../trace/index.js';

export interface TraceOptions {
  id?: string;
  user?: string;
  from?: string;
  to?: string;
  account?: string;
  since?: string;
  status?: string;
  limit?: string;
  json?: boolean;
}

/**
 * `smtp-oauth-relay trace`: the delivery log, like Postfix's logs or Exchange's message trace.
 * The running relay answers (in a cluster, for every replica); without one, this replica's files.
 */
export async function traceCommand(dataDir: string, options: TraceOptions): Promise<{ code: number; output: string }> {
  const query = parseQuery(options);
  if (typeof query === 'string') return { code: 2, output: `${query}\n` };
  const byDaemon = await askDaemon(dataDir, { op: 'trace-search', query });
  let result: TraceSearchResult;
  if (byDaemon && byDaemon.code === 0) result = JSON.parse(byDaemon.output) as TraceSearchResult;
  else if (byDaemon) return byDaemon;
  else {
    const found = await new FileTraceLog(path.join(dataDir, 'trace'), { retentionMs: Infinity, maxBytes: Infinity }, createLogger('silent')).events(query);
    result = { messages: selectMessages(found.events, query), replicas: [{ name: 'this data folder (no relay running)', answered: true }], truncated: found.truncated || undefined };
  }
  return { code: 0, output: options.json ? timelineJson(result) : formatTimeline(result) };
}

function parseQuery(options: TraceOptions): TraceQuery | string {
  const since = options.since === undefined ? undefined : parseSince(options.since);
  if (options.since !== undefined && since === undefined) return `--since "${options.since}": give a duration (90s, 30m, 2h, 7d) or a date (2026-11-23T08:00Z)`;
  if (options.status !== undefined && !isStatus(options.status)) return `--status "${options.status}": one of ${MESSAGE_STATUSES.join(', ')}`;
  const limit = options.limit === undefined ? undefined : Number(options.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) return `--limit "${options.limit}": a positive whole number`;
  return { id: options.id, user: options.user, from: options.from, to: options.to, account: options.account, since, status: options.status as TraceQuery['status'], limit };
}
