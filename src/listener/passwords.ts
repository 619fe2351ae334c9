import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { UserConfig } from '../config/index.js';

// N=2^15, r=8: ~50 ms and 32 MiB per hash, the strength OWASP recommends for scrypt.
const COST = { N: 2 ** 15, r: 8, p: 1 };
const KEY_LENGTH = 32;

function scryptAsync(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key))));
}

function scryptOptions(N: number, r: number, p: number): ScryptOptions {
  return { N, r, p, maxmem: 256 * N * r + 1024 * 1024 };
}

/** `scrypt$N$r$p$salt$hash` (base64), the format `passwordHash` takes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, KEY_LENGTH, scryptOptions(COST.N, COST.r, COST.p));
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64'), key.toString('base64')].join('$');
}

async function verifyHash(password: string, encoded: string): Promise<boolean> {
  const [scheme, N, r, p, salt, hash] = encoded.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const key = await scryptAsync(password, Buffer.from(salt, 'base64'), expected.length, scryptOptions(Number(N), Number(r), Number(p)));
  return timingSafeEqual(key, expected);
}

const REMEMBERED_LOGINS = 10_000;

/**
 * Checks device credentials. Printers open a new session and AUTH for every scan, and a
 * deliberately slow hash on each would cap throughput at a few messages a second; so a successful
 * check is remembered in memory as an HMAC under a per-process random key (never the password
 * itself), and only a new or changed password pays for scrypt.
 */
export class DeviceAuthenticator {
  private readonly users: Map<string, UserConfig>;
  private readonly memoKey = randomBytes(32);
  private readonly remembered = new Set<string>();
  private dummyHash?: Promise<string>;

  constructor(users: UserConfig[]) {
    this.users = new Map(users.map((user) => [user.username, user]));
  }

  /** The user when the password is right, otherwise undefined (unknown users take the same path). */
  async verify(username: string, password: string): Promise<UserConfig | undefined> {
    const user = this.users.get(username);
    const memo = this.digest(username, password, user?.passwordHash ?? user?.password ?? '');
    if (user && this.remembered.has(memo)) return user;
    if (!user) {
      // An unknown name costs as much as a wrong password, so timing does not reveal user names.
      this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
      await verifyHash(password, await this.dummyHash);
      return undefined;
    }
    const ok = user.passwordHash ? await verifyHash(password, user.passwordHash) : this.sameSecret(password, user.password ?? '');
    if (!ok) return undefined;
    if (this.remembered.size >= REMEMBERED_LOGINS) this.remembered.clear();
    this.remembered.add(memo);
    return user;
  }

  private digest(...parts: string[]): string {
    return createHmac('sha256', this.memoKey).update(parts.join('\0')).digest('base64');
  }

  private sameSecret(given: string, expected: string): boolean {
    // Digests have equal lengths, so the comparison leaks neither content nor length.
    return timingSafeEqual(Buffer.from(this.digest(given), 'base64'), Buffer.from(this.digest(expected), 'base64'));
  }
}
