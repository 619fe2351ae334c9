import type { AccountTokenStatus } from '../oauth/index.js';
import type { DeliveryHealth } from '../health.js';
import type { AccountQueueState } from '../spool/index.js';

export interface AccountView {
  name: string;
  mailbox: string;
  provider: string;
  canSignIn: boolean;
  token: AccountTokenStatus;
  delivery: DeliveryHealth;
  queue?: AccountQueueState;
}

export interface Notice {
  kind: 'ok' | 'error';
  text: string;
}

const escape = (text: string) => text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
const when = (iso: string | undefined) => (iso ? new Date(iso).toLocaleString('en-GB', { timeZone: 'UTC', dateStyle: 'medium', timeStyle: 'short' }) + ' UTC' : 'never');

function stateLine(token: AccountTokenStatus): string {
  switch (token.state) {
    case 'ready':
      return `<span class="ok">(Authenticated)</span> until ${escape(when(token.tokenExpiresAt))}`;
    case 'needs_reauth':
      return `<span class="bad">Needs authorisation</span>${token.lastError ? `<br><small>${escape(token.lastError)}</small>` : ''}`;
    case 'unavailable':
      return `<span class="bad">Error</span> <small>${escape(token.lastError ?? '')}</small>`;
    default:
      return '<span>Starting…</span>';
  }
}

function accountCard(view: AccountView, csrf: string): string {
  const queue = view.queue ? `${view.queue.queued + view.queue.deferred + view.queue.active} in queue${view.queue.held ? ' (held)' : ''}` : 'direct mode';
  const last = view.delivery.lastProblem;
  const problem = last ? `<p class="bad"><small>Last problem ${escape(when(last.at))}: ${escape(last.reply)}</small></p>${last.hint ? `<p><small>What to do: ${escape(last.hint)}</small></p>` : ''}` : '';
  const warning = view.token.warning ? `<p class="bad"><small>${escape(view.token.warning)}</small></p>` : '';
  const signIn = view.canSignIn
    ? `<form method="post" action="/accounts/${encodeURIComponent(view.name)}/sign-in"><input type="hidden" name="csrf" value="${csrf}"><button>Sign in</button></form>`
    : '';
  return `<section class="card" id="account-${escape(view.name)}">
  <h2>${escape(view.name)} <small>${escape(view.mailbox)} · ${escape(view.provider)}</small></h2>
  <p class="state">${stateLine(view.token)}</p>
  <p><small>Last delivery: ${escape(when(view.delivery.lastRelayedAt))} · ${escape(queue)}</small></p>
  ${problem}${warning}${view.token.hint && view.token.state !== 'ready' ? `<p><small>What to do: ${escape(view.token.hint)}</small></p>` : ''}
  ${signIn}
</section>`;
}

/** The admin page: small, no scripts, readable on a phone. */
export function renderPage(accounts: AccountView[], csrf: string, notice?: Notice): string {
  const options = accounts.map((account) => `<option value="${escape(account.name)}">${escape(account.name)} (${escape(account.mailbox)})</option>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>smtp-oauth-relay</title>
<style>
 body{font-family:system-ui,sans-serif;margin:0;padding:1rem;max-width:42rem;margin-inline:auto;color:#222;background:#f6f7f9}
 h1{font-size:1.3rem} h2{font-size:1.1rem;margin:0 0 .4rem} h2 small{font-weight:normal;color:#555}
 .card{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:1rem;margin:0 0 1rem}
 .ok{color:#11743b;font-weight:600} .bad{color:#b3261e;font-weight:600}
 .notice{padding:.7rem 1rem;border-radius:.5rem;margin-bottom:1rem} .notice.ok{background:#e6f4ea} .notice.error{background:#fce8e6}
 button{font-size:1rem;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #888;background:#fff;cursor:pointer}
 input,select{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.2rem 0 .6rem}
</style></head><body>
<h1>smtp-oauth-relay</h1>
${notice ? `<div class="notice ${notice.kind}" role="status">${escape(notice.text)}</div>` : ''}
${accounts.map((account) => accountCard(account, csrf)).join('\n')}
<section class="card"><h2>Send test message</h2>
<form method="post" action="/test-message"><input type="hidden" name="csrf" value="${csrf}">
<label>Account<select name="account">${options}</select></label>
<label>To<input type="email" name="to" required placeholder="you@example.com"></label>
<button>Send test message</button></form></section>
<p><small><a href="/readyz/accounts">/readyz/accounts</a> · <a href="/metrics">/metrics</a></small></p>
</body></html>`;
}
