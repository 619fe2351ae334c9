/**
 * The delivery log ("message trace"): what happened to each message, as events appended while it
 * moves. A message's timeline is the events with its id, from every replica that touched it.
 */
export type FinalStatus = 'delivered' | 'failed' | 'expired' | 'deleted';
export type AttemptResult = 'delivered' | 'deferred' | 'failed' | 'held';

interface EventBase {
  /** ISO time. */
  at: string;
  id: string;
  account: string;
}

export type TraceEvent =
  | (EventBase & {
      event: 'received';
      mode: 'queue' | 'direct';
      user?: string;
      clientIp?: string;
      size: number;
      /** The author's address as the device gave it. */
      from?: string;
      /** The address it goes out as (MAIL FROM upstream). */
      sentAs: string;
      to: string[];
      /** Recipients past the first MAX_LISTED, counted but not listed (a refused flood must not fill the log). */
      toMore?: number;
      subject?: string;
      /** The Message-ID that left (the key of the provider's own message trace). */
      messageId?: string;
      /** For a delivery report the relay wrote: the message it is about ('notification' for a notify.email message). */
      about?: string;
    })
  /** The device was told no (direct mode, or a local fault before the 250). */
  | (EventBase & { event: 'refused'; reply: string })
  | (EventBase & { event: 'attempt'; result: AttemptResult; reply: string; recipients: { address: string; reply: string }[]; recipientsMore?: number; durationMs: number })
  | (EventBase & { event: 'report'; reportId: string; to: string; kind: 'failed' | 'delayed' })
  | (EventBase & { event: 'handed-over'; peer: string })
  | (EventBase & { event: 'adopted' })
  /** relayWrote: a delivery report or notification the relay wrote itself (its failure is not told again). */
  | (EventBase & { event: 'final'; status: FinalStatus; relayWrote?: true });

/** Where events go. The embedded default is a file per day (FileTraceLog). */
/** Recipients an event lists at most; the rest are counted (toMore, recipientsMore). */
export const MAX_LISTED = 100;
/** A reply or subject is kept up to this length in the log. */
const MAX_TEXT = 1000;

/** The event as the log keeps it: lists and texts bounded, whatever a device or provider sent. */
export function boundedEvent(event: TraceEvent): TraceEvent {
  const text = (value: string) => (value.length > MAX_TEXT ? `${value.slice(0, MAX_TEXT)}…` : value);
  if (event.event === 'received' && event.to.length > MAX_LISTED) return { ...event, to: event.to.slice(0, MAX_LISTED), toMore: event.to.length - MAX_LISTED + (event.toMore ?? 0) };
  if (event.event === 'attempt') {
    const recipients = event.recipients.slice(0, MAX_LISTED).map((entry) => ({ address: entry.address, reply: text(entry.reply) }));
    const more = event.recipients.length - recipients.length;
    return { ...event, reply: text(event.reply), recipients, ...(more > 0 ? { recipientsMore: more } : {}) };
  }
  if (event.event === 'refused') return { ...event, reply: text(event.reply) };
  return event;
}

export interface TraceSink {
  record(event: TraceEvent): void;
}

export type MessageStatus = FinalStatus | 'refused' | 'held' | 'deferred' | 'queued' | 'handed-over';
export const MESSAGE_STATUSES: readonly MessageStatus[] = ['delivered', 'failed', 'expired', 'deleted', 'refused', 'held', 'deferred', 'queued', 'handed-over'];

export type ReceivedEvent = Extract<TraceEvent, { event: 'received' }>;

/** One message as the log knows it. */
export interface MessageTrace {
  id: string;
  account: string;
  received?: ReceivedEvent;
  status: MessageStatus;
  /** Oldest first; with `replica` where a cluster search merged several replicas' logs. */
  events: (TraceEvent & { replica?: string })[];
}

/** What a message's events add up to: the final word if there is one, else the latest attempt. */
function statusOf(events: readonly TraceEvent[]): MessageStatus {
  let status: MessageStatus = 'queued';
  for (const event of events) {
    if (event.event === 'final') return event.status;
    if (event.event === 'refused') status = 'refused';
    else if (event.event === 'handed-over') status = 'handed-over';
    else if (event.event === 'adopted') status = 'queued';
    else if (event.event === 'attempt') status = event.result === 'delivered' ? 'delivered' : event.result === 'failed' ? 'failed' : event.result;
  }
  return status;
}

/** Groups events by message, oldest event first. */
export function assemble(events: Iterable<TraceEvent & { replica?: string }>): MessageTrace[] {
  const byId = new Map<string, (TraceEvent & { replica?: string })[]>();
  for (const event of events) {
    const list = byId.get(event.id);
    if (list) list.push(event);
    else byId.set(event.id, [event]);
  }
  return [...byId.entries()].map(([id, list]) => {
    list.sort((a, b) => a.at.localeCompare(b.at));
    const received = list.find((event): event is ReceivedEvent & { replica?: string } => event.event === 'received');
    return { id, account: list[0].account, received, status: statusOf(list), events: list };
  });
}
