import { credentialExpiries } from '../../oauth/index.js';
import type { AccountTokenStatus } from '../../oauth/index.js';
import { hourlyChart } from '../chart.js';
import { actionForm, escape, layout, span, table, when, type Notice, type Csrf } from '../html.js';
import type { AdminAccount, ConsoleSources } from '../sources.js';
import type { ActivityView } from '../../trace/index.js';
import { missingReplicas } from './messages.js';
import { testMessageForm } from './setup.js';

const DAY_MS = 86_400_000;
const SOON_MS = 14 * DAY_MS;

function stateLine(token: AccountTokenStatus): string {
  switch (token.state) {
    case 'ready':
      return `<span class="ok">(Authenticated)</span> · access token until ${escape(when(token.tokenExpiresAt))}`;
    case 'needs_reauth':
      return `<span class="bad">Needs authorisation</span>${token.lastError ? `<br><small>${escape(token.lastError)}</small>` : ''}`;
    case 'unavailable':
      return `<span class="bad">Error</span> <small>${escape(token.lastError ?? '')}</small>`;
    default:
      return '<span>Starting…</span>';
  }
}

/** The dates on which the account's credentials stop working, soonest first, flagged within two weeks. */
function lifetimes({ account, tokens }: AdminAccount, token: AccountTokenStatus, now: number): string {
  const rows: [string, number, string?][] = credentialExpiries(account).map((expiry) => [expiry.credential === 'certificate' ? 'Certificate' : 'Client secret', expiry.expiresAt]);
  if (token.refreshTokenExpiresAt) rows.push(['Refresh token (Google app in Testing)', Date.parse(token.refreshTokenExpiresAt)]);
  if (token.refreshTokenUnusedExpiry) rows.push(['Refresh token, if left unused', Date.parse(token.refreshTokenUnusedExpiry), token.refreshTokenLastUsedAt && `last used ${when(token.refreshTokenLastUsedAt)}`]);
  if (rows.length === 0) return tokens.account.flow === 'refresh_token' ? '' : '<p><small>No stored refresh token: this account asks for tokens with its own credential.</small></p>';
  const items = rows
    .sort((a, b) => a[1] - b[1])
    .map(([label, at, note]) => {
      const soon = at - now < SOON_MS;
      return `<dt>${escape(label)}</dt><dd${soon ? ' class="bad"' : ''}>${escape(when(at))} (${at < now ? 'expired' : `in ${span(at - now)}`})${note ? ` <small>${escape(note)}</small>` : ''}</dd>`;
    })
    .join('');
  return `<dl>${items}</dl>`;
}

function accountCard(entry: AdminAccount, sources: ConsoleSources, activity: ActivityView, csrf: Csrf, now: number): string {
  const { account, tokens } = entry;
  const token = tokens.status();
  const delivery = sources.health(account.name);
  const today = activity.accountToday(account.name);
  const queue = account.delivery === 'queue' ? sources.queueState(account.name) : undefined;
  const depth = queue ? queue.queued + queue.deferred + queue.active : 0;
  const queueText = queue
    ? `${depth} in queue${queue.held ? ` — <span class="bad">held${queue.heldFor ? ` (${escape(queue.heldFor)})` : ''}</span>` : ''}${queue.oldestReceivedAt ? `, oldest ${span(now - Date.parse(queue.oldestReceivedAt))}` : ''}`
    : 'direct mode (nothing queues)';
  const last = delivery.lastProblem;
  const problem = last ? `<p class="bad"><small>Last problem ${escape(when(last.at))}: ${escape(last.reply)}</small></p>${last.hint ? `<p><small>What to do: ${escape(last.hint)}</small></p>` : ''}` : '';
  const testing = token.refreshTokenExpiresAt
    ? `<p class="loud" role="alert">This Google OAuth app is in "Testing": its refresh token dies on ${escape(when(token.refreshTokenExpiresAt))} whatever the relay does. Publish the consent screen ("In production") in the Google Cloud console, then sign in again.</p>`
    : token.warning
      ? `<p class="bad"><small>${escape(token.warning)}</small></p>`
      : '';
  const fix = token.hint && token.state !== 'ready' ? `<p><small>What to do: ${escape(token.hint)}</small></p>` : '';
  const signIn = account.flow === 'refresh_token' && account.authorizeUrl
    ? actionForm(`/accounts/${encodeURIComponent(account.name)}/sign-in`, csrf, 'Sign in')
    : '';
  return `<section class="card" id="account-${escape(account.name)}" aria-labelledby="account-${escape(account.name)}-name">
  <h2 id="account-${escape(account.name)}-name">${escape(account.name)} <small>${escape(account.mailbox)} · ${escape(account.provider)}</small></h2>
  <p class="state">${stateLine(token)}</p>
  ${testing}${problem}${fix}
  <p>Today: <strong>${today.messages}</strong> message(s), <strong${today.failures ? ' class="bad"' : ''}>${today.failures}</strong> failure(s) · ${queueText} · last delivery ${escape(when(delivery.lastRelayedAt))}</p>
  ${lifetimes(entry, token, now)}
  ${hourlyChart(account.name, activity.lastDay(account.name))}
  ${signIn} <a href="/messages?account=${encodeURIComponent(account.name)}">Messages</a> · <a href="/setup#setup-${encodeURIComponent(account.name)}">Set up</a>
</section>`;
}

async function replicaSection(sources: ConsoleSources, now: number): Promise<string> {
  const replicas = await sources.replicas();
  if (!replicas) return '';
  const rows = replicas.map((replica) => [
    escape(replica.name),
    replica.stale ? '<span class="bad">not heard from</span>' : '<span class="ok">up</span>',
    escape(replica.version),
    escape(replica.smtp),
    escape(String(replica.queued)),
    `${span(now - Date.parse(replica.lastSeen))} ago`,
  ]);
  return `<section class="card"><h2>Replicas</h2>${table('Replicas of this cluster', ['Name', 'State', 'Version', 'SMTP', 'Queued', 'Last heartbeat'], rows)}</section>`;
}

export async function renderOverview(sources: ConsoleSources, csrf: Csrf, notice?: Notice): Promise<string> {
  const now = Date.now();
  const { view, replicas } = await sources.activity();
  const cards = [...sources.accounts.values()].map((entry) => accountCard(entry, sources, view, csrf, now)).join('\n');
  return layout('overview', 'Overview', `${missingReplicas(replicas)}${cards}\n${await replicaSection(sources, now)}\n${testMessageForm(sources, csrf)}`, notice);
}
