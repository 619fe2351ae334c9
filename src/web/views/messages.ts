import type { MessageSummary } from '../../spool/index.js';
import { describeEvent, MESSAGE_STATUSES, type MessageTrace, type ReplicaAnswers, type TraceQuery, type TraceSearchResult } from '../../trace/index.js';
import { actionForm, bytes, escape, layout, table, when, type Notice, type Csrf } from '../html.js';
import type { SpooledMessage } from '../sources.js';
import type { ProviderTraceResult } from '../../provider-trace/index.js';

const STATUS_CLASS: Record<string, string> = { delivered: 'ok', failed: 'bad', expired: 'bad', refused: 'bad', held: 'warn', deferred: 'warn' };

const status = (text: string) => `<span class="${STATUS_CLASS[text] ?? ''}">${escape(text)}</span>`;

/** The filters as a form that GETs itself: a bookmarkable search. */
function filterForm(filters: Record<string, string>): string {
  const input = (name: string, label: string, placeholder = '') => `<label>${label}<input name="${name}" value="${escape(filters[name] ?? '')}" placeholder="${escape(placeholder)}"></label>`;
  const options = ['', ...MESSAGE_STATUSES].map((value) => `<option value="${value}"${filters.status === value ? ' selected' : ''}>${value || 'any'}</option>`).join('');
  return `<form method="get" action="/messages" class="card" role="search" aria-label="Search the delivery log"><div class="filters">
${input('to', 'To', 'alice@ or example.com')}${input('from', 'From', 'scanner@')}${input('user', 'Device user')}${input('id', 'Queue id')}
<label>Status<select name="status">${options}</select></label>${input('since', 'Since', '24h, 7d, 2026-11-23')}
</div><button>Search</button></form>`;
}

/** A warning for each replica whose part is missing (a search, the counts). */
export function missingReplicas(replicas: ReplicaAnswers): string {
  return replicas
    .filter((replica) => !replica.answered)
    .map((replica) => `<p class="bad" role="alert">Replica ${escape(replica.name)} did not answer (${escape(replica.error ?? '')}): its part of the log is missing.</p>`)
    .join('');
}

export function renderMessages(result: TraceSearchResult, filters: Record<string, string>, problem?: string): string {
  const rows = result.messages.map((message) => {
    const received = message.received;
    const from = received ? `${escape(received.from ?? '')}${received.from && received.from !== received.sentAs ? ` → ${escape(received.sentAs)}` : ''}` : '';
    return [
      escape(when(message.events[0].at)),
      `<a href="/messages/${encodeURIComponent(message.id)}">${escape(message.id)}</a>`,
      status(message.status),
      escape(received?.user ?? (received?.about ? `report about ${received.about}` : '')),
      from,
      escape(received?.to.join(', ') ?? ''),
      escape(received?.subject ?? ''),
    ];
  });
  const list = rows.length ? table(`${rows.length} message(s), newest first`, ['Received', 'Id', 'Status', 'Device', 'From', 'To', 'Subject'], rows) : '<p>No message in the delivery log matches.</p>';
  const notice: Notice | undefined = problem ? { kind: 'error', text: problem } : undefined;
  return layout('messages', 'Messages', `${filterForm(filters)}${searchWarnings(result)}<section class="card">${list}</section>`, notice);
}

function searchWarnings(result: TraceSearchResult): string {
  const cut = result.truncated ? '<p class="warn" role="alert">The search reached its size cap: older matches may be missing. Narrow it (Since, To, Device user).</p>' : '';
  return cut + missingReplicas(result.replicas);
}

function summaryBlock(spooled: SpooledMessage, summary: MessageSummary | Error | undefined, csrf: Csrf): string {
  const { record, area, inFlight } = spooled;
  const facts = summary === undefined
    ? `<p>Kept on replica ${escape(spooled.replica ?? '')}: open its console for the subject and attachments.</p>`
    : summary instanceof Error
    ? `<p class="bad">The stored message cannot be parsed: ${escape(summary.message)}</p>`
    : `<dl><dt>Subject</dt><dd>${escape(summary.subject ?? '(none)')}</dd><dt>From</dt><dd>${escape(summary.from ?? '(none)')}</dd><dt>To</dt><dd>${escape(summary.to ?? '(none)')}</dd><dt>Date</dt><dd>${escape(summary.date ? when(summary.date) : '(none)')}</dd><dt>Size</dt><dd>${bytes(record.size)}</dd></dl>${
        summary.attachments.length
          ? table('Attachments', ['Name', 'Type', 'Size'], summary.attachments.map((attachment) => [escape(attachment.filename ?? '(no name)'), escape(attachment.contentType), bytes(attachment.size)]))
          : '<p>No attachments.</p>'
      }${summary.incomplete ? `<p class="warn">Incomplete: ${escape(summary.incomplete)}</p>` : ''}`;
  const where = area === 'failed' ? 'kept in the failed area' : inFlight ? 'being delivered right now' : `waiting; next attempt ${escape(when(record.nextAttemptAt))}`;
  return `<section class="card"><h2>In the spool <small>${where}</small></h2>${facts}${messageActions(spooled, csrf)}</section>`;
}

/**
 * Retry now (a waiting message) and Delete, sent to the replica that holds the message. Delete asks
 * twice: its button is behind a disclosure, so one stray press cannot lose a message.
 */
export function messageActions({ record, area, inFlight, replica }: SpooledMessage, csrf: Csrf): string {
  if (inFlight) return '';
  const where: Record<string, string> = replica ? { replica } : {};
  const retry = area === 'queue' ? actionForm(`/queue/${record.id}/retry`, csrf, 'Retry now', where) : '';
  return `${retry}<details class="inline"><summary>Delete…</summary>${actionForm(`/queue/${record.id}/delete`, csrf, `Delete ${record.id} for good`, where, 'danger')}</details>`;
}

/** Exchange's words for its trace statuses (exchangeMessageTraceStatus), as an administrator reads them. */
const EXCHANGE_STATUS: Record<string, string> = {
  delivered: 'Delivered',
  failed: 'Failed',
  pending: 'Pending',
  expanded: 'Expanded (a group)',
  quarantined: 'Quarantined',
  filteredAsSpam: 'Filtered as spam',
  gettingStatus: 'Getting status',
};

/** What Exchange Online did with the message, per recipient, under the relay's own timeline. */
function providerBlock(provider: ProviderTraceResult | undefined): string {
  if (!provider) return '';
  const title = '<h2>What Exchange Online did <small>Microsoft Graph message trace</small></h2>';
  if ('unavailable' in provider) return `<section class="card">${title}<p class="warn">${escape(provider.unavailable)}</p></section>`;
  if (provider.entries.length === 0) return `<section class="card">${title}<p>Exchange has no trace of this Message-ID yet (it records a message within minutes; asked ${escape(when(provider.askedAt))}).</p></section>`;
  const rows = provider.entries.map((entry) => [
    escape(entry.recipient),
    escape(EXCHANGE_STATUS[entry.status] ?? entry.status),
    escape(entry.receivedAt ? when(entry.receivedAt) : ''),
    entry.details.map((detail) => `${escape(detail.event)}: ${escape(detail.description)}`).join('<br>'),
  ]);
  return `<section class="card">${title}${table('Exchange message trace', ['Recipient', 'Status', 'Received by Exchange', 'Detail'], rows)}<p><small>Asked ${escape(when(provider.askedAt))}.</small></p></section>`;
}

export function renderMessage(id: string, trace: MessageTrace | undefined, result: TraceSearchResult, spooled: { message: SpooledMessage; summary?: MessageSummary | Error } | undefined, csrf: Csrf, notice?: Notice, provider?: ProviderTraceResult): string {
  const showReplica = result.replicas.length > 1;
  const timeline = trace
    ? `<ol class="timeline">${trace.events.map((event) => `<li><time datetime="${escape(event.at)}">${escape(when(event.at))}</time>${showReplica && event.replica ? ` <small>[${escape(event.replica)}]</small>` : ''} — ${escape(describeEvent(event))}</li>`).join('')}</ol>`
    : '<p>Not in the delivery log (older than trace.retention, or the log is off).</p>';
  const head = trace ? `<p>Status: ${status(trace.status)} · account ${escape(trace.account)}</p>` : '';
  const spool = spooled ? summaryBlock(spooled.message, spooled.summary, csrf) : '';
  return layout('messages', `Message ${id}`, `${searchWarnings(result)}<section class="card"><h2>Timeline</h2>${head}${timeline}</section>${providerBlock(provider)}${spool}<p><a href="/messages">Back to messages</a></p>`, notice);
}

/** The query a filter form asks for; a problem when a field cannot be read. */
export function queryFromForm(filters: Record<string, string>, parseSince: (text: string) => number | undefined, isStatus: (text: string) => boolean): TraceQuery | string {
  const since = filters.since ? parseSince(filters.since) : Date.now() - 86_400_000;
  if (since === undefined) return `Since "${filters.since}": give a duration (30m, 24h, 7d) or a date.`;
  if (filters.status && !isStatus(filters.status)) return `Status "${filters.status}" is not one the log knows.`;
  const text = (name: string) => filters[name]?.trim() || undefined;
  return { id: text('id'), user: text('user'), from: text('from'), to: text('to'), account: text('account'), status: text('status') as TraceQuery['status'], since, limit: 200 };
}
