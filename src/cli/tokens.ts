import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadedConfig } from '../config/index.js';
import { TokenStore } from '../oauth/index.js';
import { askDaemon } from '../control/index.js';

/**
 * `tokens encrypt [--old-key-file F]`: rewrites every stored refresh token with the configured
 * tokenKey: encrypts a plain store, or moves an encrypted one from the old key to the new.
 */
export async function encryptTokenStore(loaded: LoadedConfig, oldKeyFile: string | undefined): Promise<string> {
  if (!loaded.config.tokenKey) return 'Set tokenKey (or tokenKeyFile) in the config first; the store is then rewritten with it.\n';
  const oldKey = oldKeyFile ? (await readFile(oldKeyFile, 'utf8')).replace(/\r?\n$/, '') : undefined;
  // A running relay may be saving a rotated token right now: it re-encrypts its own store.
  const byDaemon = await askDaemon(loaded.config.dataDir, { op: 'tokens-rekey', newKey: loaded.config.tokenKey, oldKey });
  if (byDaemon) {
    if (byDaemon.code !== 0) throw new Error(byDaemon.output.trim());
    return byDaemon.output;
  }
  const store = new TokenStore(path.join(loaded.config.dataDir, 'tokens'), loaded.config.tokenKey);
  const accounts = await store.rewriteAll(oldKey);
  return `${accounts.length} token file(s) now encrypted with the configured tokenKey: ${accounts.join(', ') || 'none'}\n`;
}
