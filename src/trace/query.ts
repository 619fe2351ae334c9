import { assemble, MESSAGE_STATUSES, type MessageStatus, type MessageTrace, type TraceEvent } from './events.js';

/** A delivery-log search, as `trace` and the console's Messages page ask it. */
export interface TraceQuery {
  id?: string;
  /** Device user name (exact, any case). */
  user?: string;
  /** Part of the original or sent-as sender address. */
  from?: string;
  /** Part of a recipient address. */
  to?: string;
  account?: string;
  /** Only messages with events at or after this time (ms since the epoch). */
  since?: number;
  status?: MessageStatus;
  /** The newest this many (default 200). */
  limit?: number;
}

export const DEFAULT_LIMIT = 200;

/** "2h", "30m", "3d", "90s" → ms; undefined when it is not such a duration. */
export function parseSince(text: string, now = Date.now()): number | undefined {
  const match = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (match) return now - Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd'];
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : at;
}

export function isStatus(text: string): text is MessageStatus {
  return (MESSAGE_STATUSES as readonly string[]).includes(text);
}

/** Whether one event could belong to a message the query wants (a cheap first cut). */
export function eventMayMatch(event: TraceEvent, query: TraceQuery): boolean {
  if (query.id !== undefined && event.id !== query.id) return false;
  if (query.account !== undefined && event.account !== query.account) return false;
  return query.since === undefined || Date.parse(event.at) >= query.since;
}

const contains = (value: string | undefined, part: string) => !!value && value.toLowerCase().includes(part.toLowerCase());

export function messageMatches(message: MessageTrace, query: TraceQuery): boolean {
  const received = message.received;
  if (query.status !== undefined && message.status !== query.status) return false;
  if (query.user !== undefined && received?.user?.toLowerCase() !== query.user.toLowerCase()) return false;
  if (query.from !== undefined && !contains(received?.from, query.from) && !contains(received?.sentAs, query.from)) return false;
  if (query.to !== undefined) {
    const recipients = [...(received?.to ?? []), ...message.events.flatMap((event) => (event.event === 'attempt' ? event.recipients.map((entry) => entry.address) : []))];
    if (!recipients.some((address) => contains(address, query.to!))) return false;
  }
  return true;
}

/** The matching messages among these events, newest first, at most query.limit. */
export function selectMessages(events: Iterable<TraceEvent & { replica?: string }>, query: TraceQuery): MessageTrace[] {
  return assemble(events)
    .filter((message) => messageMatches(message, query))
    .sort((a, b) => b.events[0].at.localeCompare(a.events[0].at))
    .slice(0, query.limit ?? DEFAULT_LIMIT);
}
