import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { UserConfig } from '../config/index.js';
import { Limiter } from '../util/limiter.js';

// N=2^15, r=8: ~50 ms and 32 MiB per hash, the strength OWASP recommends for scrypt.
const COST = { N: 2 ** 15, r: 8, p: 1 };
const KEY_LENGTH = 32;

/**
 * Every scrypt in the process (device AUTH, the admin password) waits its turn here: a flood of
 * wrong passwords then costs the flood its own time, not the spool's file I/O, which shares
 * libuv's four-thread pool with scrypt. Past the queue's length an attempt is turned away.
 */
const hashing = new Limiter(2, 256);

function scryptAsync(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return hashing.run(() => new Promise((resolve, reject) => scrypt(password, salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key)))));
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
 *
 * Every check that is not remembered costs exactly one scrypt: a wrong password for a user with a
 * `passwordHash`, for a user with a plain `password` (compared as scrypt digests under a process
 * salt), and for a user name that does not exist. Timing then reveals neither user names nor which
 * kind of secret a user has.
 */
export class DeviceAuthenticator {
  private readonly users: Map<string, UserConfig>;
  private readonly memoKey = randomBytes(32);
  private readonly remembered = new Set<string>();
  private readonly plainSalt = randomBytes(16);
  private readonly plainDigests = new Map<string, Promise<Buffer>>();
  private readonly dummyHash: Promise<string>;
  /** Checks under way, by login: the same login sent many times at once is checked once. */
  private readonly checking = new Map<string, Promise<UserConfig | undefined>>();

  constructor(users: UserConfig[]) {
    this.users = new Map(users.map((user) => [user.username, user]));
    // Computed up front, so that even a first wrong guess costs one scrypt like any other.
    this.dummyHash = hashPassword(randomBytes(16).toString('hex'));
    this.dummyHash.catch(() => undefined);
    for (const user of users) {
      if (user.passwordHash || user.password === undefined) continue;
      const digest = scryptAsync(user.password, this.plainSalt, KEY_LENGTH, scryptOptions(COST.N, COST.r, COST.p));
      digest.catch(() => undefined);
      this.plainDigests.set(user.username, digest);
    }
  }

  has(username: string): boolean {
    return this.users.has(username);
  }

  user(username: string): UserConfig | undefined {
    return this.users.get(username);
  }

  /**
   * The user when the password is right, otherwise undefined (unknown users take the same path).
   * Rejects with LimiterBusyError when too many checks are waiting.
   */
  async verify(username: string, password: string): Promise<UserConfig | undefined> {
    const user = this.users.get(username);
    const memo = this.memoOf(username, password);
    if (user && this.remembered.has(memo)) return user;
    let pending = this.checking.get(memo);
    if (!pending) {
      pending = this.checkOnce(user, password, memo).finally(() => this.checking.delete(memo));
      this.checking.set(memo, pending);
    }
    return pending;
  }

  /** Whether verify() would cost no scrypt: this login is remembered, or being checked already. */
  costsNothing(username: string, password: string): boolean {
    const memo = this.memoOf(username, password);
    return (this.users.has(username) && this.remembered.has(memo)) || this.checking.has(memo);
  }

  private async checkOnce(user: UserConfig | undefined, password: string, memo: string): Promise<UserConfig | undefined> {
    const ok = user ? await this.check(user, password) : (await verifyHash(password, await this.dummyHash)) && false;
    if (!user || !ok) return undefined;
    if (this.remembered.size >= REMEMBERED_LOGINS) this.remembered.clear();
    this.remembered.add(memo);
    return user;
  }

  private memoOf(username: string, password: string): string {
    const user = this.users.get(username);
    return this.digest(username, password, user?.passwordHash ?? user?.password ?? '');
  }

  private async check(user: UserConfig, password: string): Promise<boolean> {
    if (user.passwordHash) return verifyHash(password, user.passwordHash);
    const expected = this.plainDigests.get(user.username);
    if (!expected) return false;
    const given = await scryptAsync(password, this.plainSalt, KEY_LENGTH, scryptOptions(COST.N, COST.r, COST.p));
    return timingSafeEqual(given, await expected);
  }

  private digest(...parts: string[]): string {
    return createHmac('sha256', this.memoKey).update(parts.join('\0')).digest('base64');
  }
}
