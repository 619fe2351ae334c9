import { pendingRecipients } from '../../spool/index.js';
import { actionForm, escape, layout, span, table, when, type Notice, type Csrf } from '../html.js';
import type { ConsoleSources, SpooledMessage } from '../sources.js';
import { messageActions, missingReplicas } from './messages.js';

function row(message: SpooledMessage, csrf: Csrf, now: number, showReplica: boolean): string[] {
  const { record, area, inFlight, held, replica } = message;
  const state = area === 'failed' ? '<span class="bad">failed</span>' : inFlight ? 'sending now' : held ? '<span class="warn">held</span>' : Date.parse(record.nextAttemptAt) <= now ? 'due' : `deferred, next try in ${span(Date.parse(record.nextAttemptAt) - now)}`;
  const recipients = area === 'failed' ? record.failedRecipients.map((failure) => failure.address) : pendingRecipients(record);
  const actions = messageActions(message, csrf);
  return [
    ...(showReplica ? [escape(replica ?? '')] : []),
    `<a href="/messages/${encodeURIComponent(record.id)}">${escape(record.id)}</a>`,
    state,
    `${escape(when(record.receivedAt))} <small>(${span(now - Date.parse(record.receivedAt))} ago)</small>`,
    escape(record.user ?? (record.isReport ? 'delivery report' : '')),
    escape(recipients.join(', ')),
    escape(String(record.attempts)),
    escape(record.lastReply ?? ''),
    actions,
  ];
}

const HEADINGS = ['Id', 'State', 'Received', 'Device', 'Recipients', 'Attempts', 'Last reply', 'Actions'];
const headings = (showReplica: boolean) => (showReplica ? ['Replica', ...HEADINGS] : HEADINGS);

export async function renderQueue(sources: ConsoleSources, csrf: Csrf, notice?: Notice): Promise<string> {
  const now = Date.now();
  const { entries: spooled, replicas } = await sources.queue();
  const showReplica = replicas.length > 1;
  const sections = [...sources.accounts.values()].map(({ account }) => {
    const mine = spooled.filter((message) => message.record.account === account.name && message.area === 'queue');
    const state = sources.queueState(account.name);
    const held = state.held ? `<p class="bad">Held${state.heldFor ? ` (${escape(state.heldFor)})` : ''}: nothing is sent until the account works again; see the Overview for what to do.</p>` : '';
    const retryAll = mine.length ? actionForm(`/accounts/${encodeURIComponent(account.name)}/retry-all`, csrf, `Retry all for ${account.name}`) : '';
    const list = mine.length ? table(`Waiting for ${account.name}`, headings(showReplica), mine.map((message) => row(message, csrf, now, showReplica))) : `<p>Nothing waiting${account.delivery === 'direct' ? ' (direct mode)' : ''}.</p>`;
    return `<section class="card"><h2>${escape(account.name)} <small>${escape(account.mailbox)}</small></h2>${held}${list}${retryAll}</section>`;
  });
  const failed = spooled.filter((message) => message.area === 'failed');
  const failedList = failed.length ? table('Failed for good, kept for the failed retention', headings(showReplica), failed.map((message) => row(message, csrf, now, showReplica))) : '<p>No failed messages.</p>';
  return layout('queue', 'Queue', `${missingReplicas(replicas)}${sections.join('\n')}<section class="card"><h2>Failed</h2>${failedList}</section>`, notice);
}
