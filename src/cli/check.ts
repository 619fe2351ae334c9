import os from 'node:os';
import path from 'node:path';
import { formatByteSize, formatDuration, type Config, type LoadedConfig, type ResolvedAccount } from '../config/index.js';
import { workerCount } from '../workers/index.js';
import { TokenStore, credentialExpiries, expiryWarning } from '../oauth/index.js';
import { fingerprint, type TokenStoreError } from '../oauth/token-store.js';
import { unusedExpiry } from '../oauth/inactivity.js';
import { askDaemon } from '../control/index.js';

/** The `check` report: what the config sets up, in the words an administrator uses. */
export async function describeConfig(loaded: LoadedConfig): Promise<string> {
  const { config } = loaded;
  const store = new TokenStore(path.join(config.dataDir, 'tokens'), config.tokenKey);
  const lines = [`Config ${loaded.source} is valid.`, ''];
  lines.push('Listeners:');
  const tls = config.smtp.tls;
  lines.push(`  SMTP   ${config.smtp.host}:${config.smtp.port}  (max message ${formatByteSize(config.smtp.maxMessageSize)}, max ${config.smtp.maxClients} clients, ${describeWorkers(config.smtp.workers)}, STARTTLS ${tls ? `on, min ${tls.minVersion}` : 'off'})`);
  if (tls?.implicitPort !== undefined) lines.push(`  SMTPS  ${config.smtp.host}:${tls.implicitPort}  (TLS from the first byte, min ${tls.minVersion})`);
  if (tls?.legacyDevices?.length) lines.push(`  Legacy TLS (1.0/1.1, old ciphers) for devices in ${tls.legacyDevices.join(', ')} only`);
  lines.push(`  HTTP   ${config.http.host}:${config.http.port}  (console, /metrics /healthz /readyz /readyz/accounts)`);
  lines.push(`  Data   ${config.dataDir}`);
  const { trace, notify } = config;
  lines.push(`  Log    ${trace.enabled ? `delivery log in ${path.join(config.dataDir, 'trace')}, kept ${formatDuration(trace.retention * 1000)}, at most ${formatByteSize(trace.maxSize)}${trace.subjects ? '' : ', no Subjects'}` : 'delivery log off (trace.enabled: false)'}`);
  if (notify) {
    const to = [notify.webhook && `webhook at ${new URL(notify.webhook).host}`, notify.email && `e-mail to ${config.bounces.postmaster}`].filter(Boolean);
    lines.push(`  Notify ${to.join(' and ') || 'nowhere (give notify.webhook or notify.email)'}; the same problem at most every ${formatDuration(notify.minInterval * 1000)}, ${notify.maxPerHour} an hour`);
  }
  if (config.cluster) lines.push(`  Cluster ${redactedUrl(config.cluster.redis)} as ${config.cluster.name ?? os.hostname()} (keys ${config.cluster.keyPrefix}*)`);
  lines.push('');
  lines.push('Accounts:');
  for (const account of loaded.accounts.values()) {
    lines.push(`  ${account.name}: ${account.mailbox} (${account.provider}, ${account.flow})`);
    lines.push(`    token endpoint ${account.tokenUrl}`);
    lines.push(`    upstream       ${describeUpstream(account)}`);
    lines.push(`    scopes         ${account.scopes ?? '(none)'}`);
    if (account.sendAs.length) lines.push(`    may send as    ${account.sendAs.join(', ')}`);
    lines.push(`    token          ${await tokenState(store, account)}`);
    for (const expiry of credentialExpiries(account)) {
      lines.push(`    ${expiry.credential.replace('_', ' ').padEnd(14)} expires ${new Date(expiry.expiresAt).toISOString().slice(0, 10)}`);
      const warning = expiryWarning(account, expiry);
      if (warning) loaded.warnings.push(warning);
    }
  }
  lines.push('', 'Users:');
  for (const user of config.users) {
    const silence = user.expectEvery ? `, flagged when silent over ${formatDuration(user.expectEvery * 1000)}` : '';
    lines.push(`  ${user.username} → ${user.account} (${user.passwordHash ? 'scrypt hash' : 'plain password from config'}${silence})`);
  }
  if (loaded.warnings.length) lines.push('', 'Warnings:', ...loaded.warnings.map((warning) => `  - ${warning}`));
  lines.push('', `Running relay: ${await runningState(config.dataDir)}`);
  return lines.join('\n') + '\n';
}

async function tokenState(store: TokenStore, account: ResolvedAccount): Promise<string> {
  if (account.flow !== 'refresh_token') return `${account.flow}: a new access token is requested before each expiry`;
  const configured = account.refreshToken;
  let stored;
  try {
    stored = await store.read(account.name);
  } catch (error) {
    return `PROBLEM: ${(error as Error).message} (${(error as TokenStoreError).hint ?? ''})`;
  }
  const usable = stored && (!configured || stored.seed === fingerprint(configured));
  if (!usable) return configured ? 'refresh token from the config (not used yet)' : `NONE: sign in with \`smtp-oauth-relay login ${account.name}\` or the admin page`;
  const lastUsed = stored!.lastUsedAt ?? stored!.updatedAt;
  const expiry = unusedExpiry(account.provider, Date.parse(lastUsed));
  const outlook = !expiry ? '' : expiry.warning ? `; WARNING: ${expiry.warning}` : `; unused it would last ${expiry.daysLeft} more days`;
  return `stored refresh token${store.encrypted ? ' (encrypted)' : ''}, last used ${lastUsed}${outlook}`;
}

/** Whether a daemon runs on this data folder, and which config changes it has not applied yet. */
async function runningState(dataDir: string): Promise<string> {
  const reply = await askDaemon(dataDir, { op: 'pending-restart' }, 5000).catch((error: Error) => ({ code: 1, output: error.message }));
  if (!reply) return 'none on this data folder';
  if (reply.code !== 0) return `did not answer (${reply.output.trim()})`;
  const keys = reply.output.split('\n').filter(Boolean);
  return keys.length ? `running; these changed keys need a restart to take effect: ${keys.join(', ')}` : 'running; every change it was sent (SIGHUP) is applied';
}

/** A Redis URL without its password, for printing. */
function redactedUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

/** What `check` says of an account's way out: where, how, and what its transport needs from the admin. */
function describeUpstream(account: ResolvedAccount): string {
  const { upstream } = account;
  switch (upstream.transport) {
    case 'graph':
      return `Microsoft Graph sendMail at ${upstream.apiUrl} (MIME, 4 MB; needs Mail.Send or RBAC for Applications "Application Mail.Send", no SMTP AUTH)`;
    case 'gmail':
      return `Gmail API messages.send at ${upstream.apiUrl} (35 MB; needs the gmail.send scope and the Gmail API enabled)`;
    default:
      return `${upstream.host}:${upstream.port} STARTTLS, XOAUTH2, up to ${upstream.maxConnections} connections`;
  }
}

/** What smtp.workers means on this machine. */
function describeWorkers(workers: number | 'auto'): string {
  const count = workerCount({ smtp: { workers } } as Config);
  const auto = workers === 'auto' ? ` (auto: ${count === 1 ? '1 CPU' : 'one per CPU'})` : '';
  return count === 1 ? `one process${auto}` : `${count} worker processes${auto} + primary`;
}
