import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { writeFileAtomic } from '../util/atomic-file.js';

/** A refresh token the provider handed back, kept across restarts. */
export interface StoredRefreshToken {
  refreshToken: string;
  /** Digest of the config's refresh token this one descends from: a new one in the config wins. */
  seed: string;
  updatedAt: string;
}

export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32);
}

/** One JSON file per account under <dataDir>/tokens, mode 0600, replaced atomically. */
export class TokenStore {
  constructor(private readonly dir: string) {}

  fileFor(account: string): string {
    return path.join(this.dir, `${account}.json`);
  }

  async read(account: string): Promise<StoredRefreshToken | undefined> {
    try {
      return JSON.parse(await readFile(this.fileFor(account), 'utf8')) as StoredRefreshToken;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async write(account: string, record: StoredRefreshToken): Promise<void> {
    await writeFileAtomic(this.fileFor(account), JSON.stringify(record, null, 2) + '\n', 0o600);
  }
}
