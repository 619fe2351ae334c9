import { actionForm, escape, layout, span, table, when, type Notice, type Csrf } from '../html.js';
import type { ConsoleSources } from '../sources.js';
import { missingReplicas } from './messages.js';

export async function renderDevices(sources: ConsoleSources, csrf: Csrf, notice?: Notice): Promise<string> {
  const now = Date.now();
  const { view, replicas } = await sources.activity();
  const lockouts = sources.lockouts();
  const rows = sources.users().map((user) => {
    const seen = view.device(user.username);
    const silentFor = seen.lastMessageAt === undefined ? undefined : now - seen.lastMessageAt;
    const expectMs = user.expectEvery === undefined ? undefined : user.expectEvery * 1000;
    const silent = expectMs !== undefined && (silentFor === undefined || silentFor > expectMs);
    const lockout = lockouts.find((entry) => entry.scope === 'user' && entry.key === user.username);
    const lastMessage = seen.lastMessageAt ? `${escape(when(seen.lastMessageAt))}` : 'none seen';
    return [
      `<strong>${escape(user.username)}</strong>`,
      escape(user.account),
      escape(when(seen.lastLoginAt)),
      escape(seen.addresses.join(', ') || '—'),
      escape(String(seen.messages)),
      seen.failures ? `<span class="bad">${seen.failures}</span>` : '0',
      silent ? `<span class="bad">Silent ${silentFor === undefined ? '(no message seen yet)' : `for ${span(silentFor)}`}</span> <small>expected every ${span(expectMs!)}${silentFor === undefined ? '' : `; last ${lastMessage}`}</small>` : lastMessage,
      lockout ? `<span class="bad">Locked out until ${escape(when(lockout.until))}</span> ${actionForm('/devices/unlock', csrf, `Unlock ${user.username}`, { scope: 'user', key: user.username })}` : 'no',
    ];
  });
  const devices = table('Device users', ['User', 'Account', 'Last login', 'Addresses seen', 'Messages today', 'Failures today', 'Last message', 'Locked out'], rows);
  const addresses = lockouts.filter((entry) => entry.scope === 'ip');
  const addressList = addresses.length
    ? table('Client addresses locked out after failed logins', ['Address', 'Until', 'Action'], addresses.map((entry) => [escape(entry.key), escape(when(entry.until)), actionForm('/devices/unlock', csrf, `Unlock ${entry.key}`, { scope: 'ip', key: entry.key })]))
    : '<p>No client address is locked out.</p>';
  const note = `<p><small>Counts since midnight UTC${replicas.length > 1 ? `, over ${replicas.filter((replica) => replica.answered).length} replicas` : ''}. Unlock applies to every replica of a cluster.</small></p>`;
  return layout('devices', 'Devices', `${missingReplicas(replicas)}<section class="card">${devices}${note}</section><section class="card"><h2>Locked-out addresses</h2>${addressList}</section>`, notice);
}
