import { readFile, readdir, rename } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { deriveKey, openText, sealText, type SealedFile } from '../util/sealed-text.js';
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


export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32);
}

/**
 * One JSON file per account under <dataDir>/tokens, mode 0600, replaced atomically; sealed with
 * AES-256-GCM when a tokenKey is configured. A file that cannot be opened (wrong key, altered) is
 * never overwritten: it is moved aside, so nothing is lost.
 */
export class TokenStore {
  private key?: Buffer;
  /** Writes (and re-keying) one at a time, so a re-key never races a rotated token being saved. */
  private writing: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dir: string,
    tokenKey?: string,
  ) {
    this.key = tokenKey ? deriveKey(tokenKey) : undefined;
  }

  /** Whether this store reads and writes with this tokenKey (undefined: plain). */
  usesKey(tokenKey: string | undefined): boolean {
    return tokenKey === undefined ? this.key === undefined : this.key?.equals(deriveKey(tokenKey)) === true;
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

  write(account: string, record: StoredRefreshToken): Promise<void> {
    return this.exclusive(() => this.writeNow(account, record));
  }

  private async writeNow(account: string, record: StoredRefreshToken): Promise<void> {
    const file = this.fileFor(account);
    const unreadable = await this.read(account).then(
      () => false,
      (error: unknown) => error instanceof TokenStoreError,
    );
    if (unreadable) await rename(file, `${file}.unreadable-${Date.now()}`);
    await writeFileAtomic(file, this.seal(record), 0o600);
  }

  /** Re-writes every file with this store's key, reading them with oldKey (plain text without one). */
  rewriteAll(oldKey: string | undefined): Promise<string[]> {
    return this.exclusive(() => this.rekey(this.key, oldKey ? deriveKey(oldKey) : undefined));
  }

  /** Moves a live store to newKey (reading with oldKey, else the current key), and keeps using it. */
  switchKey(newKey: string, oldKey?: string): Promise<string[]> {
    return this.exclusive(() => this.rekey(deriveKey(newKey), oldKey ? deriveKey(oldKey) : this.key));
  }

  private async rekey(writeKey: Buffer | undefined, readKey: Buffer | undefined): Promise<string[]> {
    const records: [string, StoredRefreshToken][] = [];
    for (const account of await this.accounts()) {
      const file = this.fileFor(account);
      records.push([account, this.open(file, await readFile(file, 'utf8'), readKey)]); // all readable before any is rewritten
    }
    this.key = writeKey;
    for (const [account, record] of records) await writeFileAtomic(this.fileFor(account), this.seal(record), 0o600);
    return records.map(([account]) => account);
  }

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const result = this.writing.then(task, task);
    this.writing = result.catch(() => undefined);
    return result;
  }

  private seal(record: StoredRefreshToken): string {
    const plain = JSON.stringify(record, null, 2) + '\n';
    if (!this.key) return plain;
    return JSON.stringify(sealText(this.key, plain)) + '\n';
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
      // With a key set, a plain file is not ours to trust: someone could have put it there.
      if (key) throw new TokenStoreError(`${file} is not encrypted, but tokenKey is set`, 'run `smtp-oauth-relay tokens encrypt` to encrypt the store with the tokenKey');
      return parsed as StoredRefreshToken;
    }
    if (!key) throw new TokenStoreError(`${file} is encrypted but no tokenKey is configured`, 'set tokenKey (or tokenKeyFile) to the key it was written with');
    try {
      return JSON.parse(openText(key, parsed)) as StoredRefreshToken;
    } catch {
      throw new TokenStoreError(`${file} cannot be decrypted: wrong tokenKey, or the file was altered`, 'configure the tokenKey it was written with, or sign the account in again (the old file is kept aside)');
    }
  }
}
