import type { MessageTrace, TraceEvent } from './events.js';
import type { TraceSearchResult } from './search.js';

const time = (iso: string) => iso.replace('T', ' ').slice(0, 19);

/** One event as a line a person reads. */
export function describeEvent(event: TraceEvent): string {
  switch (event.event) {
    case 'received': {
      const who = event.about === 'notification' ? 'notification e-mail (notify.email)' : event.about ? `delivery report about ${event.about}` : `from device ${event.user ?? '?'} (${event.clientIp ?? '?'})`;
      const rewritten = event.from && event.from.toLowerCase() !== event.sentAs.toLowerCase() ? `${event.from} → sent as ${event.sentAs}` : `sent as ${event.sentAs || '<>'}`;
      const subject = event.subject !== undefined ? `, subject "${event.subject}"` : '';
      const more = event.toMore ? ` and ${event.toMore} more` : '';
      return `received ${who}, ${event.size} bytes, ${rewritten}, to ${event.to.join(', ')}${more}${subject} (${event.mode} mode)`;
    }
    case 'refused':
      return `refused, the device was told: ${event.reply}`;
    case 'attempt': {
      const others = event.recipients.filter((entry) => entry.reply !== event.reply);
      const same = event.recipients.filter((entry) => entry.reply === event.reply).map((entry) => entry.address);
      const detail = others.map((entry) => `\n      ${entry.address}: ${entry.reply}`).join('');
      const more = event.recipientsMore ? `\n      and ${event.recipientsMore} more recipient(s)` : '';
      return `attempt${same.length ? ` to ${same.join(', ')}` : ''}: ${event.result} in ${event.durationMs} ms — ${event.reply}${detail}${more}`;
    }
    case 'report':
      return `${event.kind === 'failed' ? 'failure' : 'delay'} report ${event.reportId} queued to ${event.to}`;
    case 'handed-over':
      return `handed over to ${event.peer} (this replica was stopping)`;
    case 'adopted':
      return 'taken over from a stopping replica';
    case 'final':
      return event.status;
  }
}

function formatMessage(message: MessageTrace, showReplica: boolean): string {
  const received = message.received;
  const title = `${message.id}  ${message.status.toUpperCase()}  account ${message.account}${received?.user ? `  user ${received.user}` : ''}`;
  const lines = message.events.map((event) => `  ${time(event.at)}${showReplica && event.replica ? ` [${event.replica}]` : ''}  ${describeEvent(event)}`);
  return [title, ...lines].join('\n');
}

/** C0 and C1 control characters and DEL: in a terminal they move the cursor, recolour or retitle it. */
const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;

/** Every string in a value with its control characters shown as U+FFFD (what devices and providers wrote reaches a terminal). */
function printable<T>(value: T): T {
  if (typeof value === 'string') return value.replace(CONTROL, '\uFFFD') as T;
  if (Array.isArray(value)) return value.map(printable) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([key, entry]) => [key, printable(entry)])) as T;
  return value;
}

/** `trace --json`: the same data, with control characters escaped (JSON.stringify leaves C1 and DEL as they are). */
export function timelineJson(result: TraceSearchResult): string {
  return `${JSON.stringify(result, null, 2).replace(/[\x7f-\x9f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`;
}

/** What `smtp-oauth-relay trace` prints: each match with its timeline, and who did not answer. */
export function formatTimeline(unsafe: TraceSearchResult): string {
  const result = printable(unsafe);
  const missing = result.replicas.filter((replica) => !replica.answered);
  const cut = result.truncated ? 'warning: the search reached its size cap; older matches may be missing: narrow it with --since or a filter\n' : '';
  const warning = cut + missing.map((replica) => `warning: replica ${replica.name} did not answer (${replica.error}); its part of the log is missing\n`).join('');
  if (result.messages.length === 0) return `${warning}No message in the delivery log matches.\n`;
  return `${warning}${result.messages.map((message) => formatMessage(message, result.replicas.length > 1)).join('\n\n')}\n\n${result.messages.length} message(s)\n`;
}
