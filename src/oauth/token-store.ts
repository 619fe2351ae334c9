import { readFile, readdir, rename } from 'node:fs/promises';
import path from 'node:path';
import { createCipheriv, createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { writeFileAtomic } from '../util/atomic-file.js';

/** A refresh token the provider handed back (or a sign-in produced), kept across restarts. */
export interface StoredRefreshToken {
  refreshToken: string;
  /** Digest of the config's refresh token this one descends from: a new one in the config wins. */
  seed: string;
  updatedAt: string;
  /** When the provider last accepted it (a refresh token unused too long dies). */
  lastUsedAt?: string;
}

/** The token store cannot be read as it is: names the file and what to do. */
export class TokenStoreError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'TokenStoreError';
  }
}

interface SealedFile {
  version: 1;
  cipher: 'aes-256-gcm';
  iv: string;
  tag: string;
  data: string;
}

export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32);
}

/** The AES-256 key for a configured tokenKey (any long string; stretched with scrypt). */
function deriveKey(tokenKey: string): Buffer {
  return scryptSync(tokenKey, 'smtp-oauth-relay token store v1', 32);
}

/**
 * One JSON file per account under <dataDir>/tokens, mode 0600, replaced atomically; sealed with
 * AES-256-GCM when a tokenKey is configured. A file that cannot be opened (wrong key, altered) is
 * never overwritten: it is moved aside, so nothing is lost.
 */
export class TokenStore {
  private readonly key?: Buffer;

  constructor(
    private readonly dir: string,
    tokenKey?: string,
  ) {
    this.key = tokenKey ? deriveKey(tokenKey) : undefined;
  }

  get encrypted(): boolean {
    return this.key !== undefined;
  }

  fileFor(account: string): string {
    return path.join(this.dir, `${account}.json`);
  }

  async accounts(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((name) => name.endsWith('.json')).map((name) => name.slice(0, -'.json'.length));
  }

  async read(account: string): Promise<StoredRefreshToken | undefined> {
    const file = this.fileFor(account);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    return this.open(file, text, this.key);
  }

  async write(account: string, record: StoredRefreshToken): Promise<void> {
    const file = this.fileFor(account);
    const unreadable = await this.read(account).then(
      () => false,
      (error: unknown) => error instanceof TokenStoreError,
    );
    if (unreadable) await rename(file, `${file}.unreadable-${Date.now()}`);
    await writeFileAtomic(file, this.seal(record), 0o600);
  }

  /** Re-writes every file with this store's key (or in plain text without one), reading with oldKey. */
  async rewriteAll(oldKey: string | undefined): Promise<string[]> {
    const key = oldKey ? deriveKey(oldKey) : undefined;
    const done: string[] = [];
    for (const account of await this.accounts()) {
      const file = this.fileFor(account);
      const record = this.open(file, await readFile(file, 'utf8'), key);
      await writeFileAtomic(file, this.seal(record), 0o600);
      done.push(account);
    }
    return done;
  }

  private seal(record: StoredRefreshToken): string {
    const plain = JSON.stringify(record, null, 2) + '\n';
    if (!this.key) return plain;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    const sealed: SealedFile = { version: 1, cipher: 'aes-256-gcm', iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
    return JSON.stringify(sealed) + '\n';
  }

  private open(file: string, text: string, key: Buffer | undefined): StoredRefreshToken {
    let parsed: Partial<SealedFile & StoredRefreshToken>;
    try {
      parsed = JSON.parse(text) as Partial<SealedFile & StoredRefreshToken>;
    } catch {
      throw new TokenStoreError(`${file} is not valid JSON (damaged or altered)`, 'restore it from a backup or sign the account in again');
    }
    if (parsed.cipher === undefined) {
      if (typeof parsed.refreshToken !== 'string') throw new TokenStoreError(`${file} holds no refresh token`, 'sign the account in again');
      return parsed as StoredRefreshToken;
    }
    if (!key) throw new TokenStoreError(`${file} is encrypted but no tokenKey is configured`, 'set tokenKey (or tokenKeyFile) to the key it was written with');
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(parsed.iv ?? '', 'base64'));
      decipher.setAuthTag(Buffer.from(parsed.tag ?? '', 'base64'));
      const plain = Buffer.concat([decipher.update(Buffer.from(parsed.data ?? '', 'base64')), decipher.final()]).toString('utf8');
      return JSON.parse(plain) as StoredRefreshToken;
    } catch {
      throw new TokenStoreError(`${file} cannot be decrypted: wrong tokenKey, or the file was altered`, 'configure the tokenKey it was written with, or sign the account in again (the old file is kept aside)');
    }
  }
}
