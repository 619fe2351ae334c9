import path from 'node:path';
import { formatByteSize, type LoadedConfig } from '../config/index.js';
import { TokenStore } from '../oauth/index.js';
import { fingerprint } from '../oauth/token-store.js';

/** The `check` report: what the config sets up, in the words an administrator uses. */
export async function describeConfig(loaded: LoadedConfig): Promise<string> {
  const { config } = loaded;
  const store = new TokenStore(path.join(config.dataDir, 'tokens'));
  const lines = [`Config ${loaded.source} is valid.`, ''];
  lines.push('Listeners:');
  lines.push(`  SMTP   ${config.smtp.host}:${config.smtp.port}  (max message ${formatByteSize(config.smtp.maxMessageSize)}, max ${config.smtp.maxClients} clients, STARTTLS ${config.smtp.tls ? 'on' : 'off'})`);
  lines.push(`  HTTP   ${config.http.host}:${config.http.port}  (/metrics /healthz /readyz)`);
  lines.push(`  Data   ${config.dataDir}`, '');
  lines.push('Accounts:');
  for (const account of loaded.accounts.values()) {
    lines.push(`  ${account.name}: ${account.mailbox} (${account.provider}, ${account.flow})`);
    lines.push(`    token endpoint ${account.tokenUrl}`);
    lines.push(`    upstream       ${account.upstream.host}:${account.upstream.port} STARTTLS, XOAUTH2, up to ${account.upstream.maxConnections} connections`);
    if (account.sendAs.length) lines.push(`    may send as    ${account.sendAs.join(', ')}`);
    lines.push(`    token          ${await tokenState(store, account.name, account.refreshToken)}`);
  }
  lines.push('', 'Users:');
  for (const user of config.users) {
    lines.push(`  ${user.username} → ${user.account} (${user.passwordHash ? 'scrypt hash' : 'plain password from config'})`);
  }
  if (loaded.warnings.length) lines.push('', 'Warnings:', ...loaded.warnings.map((warning) => `  - ${warning}`));
  return lines.join('\n') + '\n';
}

async function tokenState(store: TokenStore, account: string, configured: string | undefined): Promise<string> {
  if (!configured) return 'client credentials: a new access token is requested before each expiry';
  const stored = await store.read(account).catch(() => undefined);
  if (stored && stored.seed === fingerprint(configured)) return `rotated refresh token saved ${stored.updatedAt} (preferred over the config's)`;
  return 'refresh token from the config (not used yet)';
}
