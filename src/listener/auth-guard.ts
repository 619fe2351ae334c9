import { isIPv6 } from 'node:net';

export interface AuthGuardLimits {
  maxPerIp: number;
  maxPerUser: number;
  windowMs: number;
  lockoutMs: number;
}

/** Clients (and user/client pairs) remembered before the oldest unbanned are dropped. */
const MAX_ENTRIES = 10_000;
const MAX_DELAY_MS = 3000;
/**
 * An IPv6 /64 is a whole SLAAC LAN (the printer's too): it is locked out only at this many times
 * maxPerIp, so one guessing host cannot lock its neighbours out, and one host hopping through its
 * own addresses still meets a limit.
 */
const PREFIX_FACTOR = 20;

interface Failures {
  times: number[];
  /** Client: refused until then. User name: under attack until then. */
  bannedUntil: number;
}

export type Lockout = { scope: 'ip' | 'user'; until: number };

/** Failures per user name, and the last failure of each name from each client (user\0client). */
interface NameTable {
  byUser: Map<string, Failures>;
  failedPairs: Map<string, number>;
}
/** A lockout in force: a client (an address, or an IPv6 /64 far past the limit) or a user name under attack. */
export type ActiveLockout = Lockout & { key: string };

/** One login attempt, counted as a failure from the start until it proves right. */
export interface Attempt {
  succeeded(): void;
  /** How long to wait before answering, and the lockouts this failure caused. */
  failed(): { delayMs: number; lockouts: Lockout['scope'][] };
}

/**
 * Counts failed AUTH per client and per user name, and locks out the clients that guess:
 *  - a client address at `maxPerIp` failures within the window is refused for `lockoutMs`, whatever
 *    the password (an IPv6 /64 as a whole at PREFIX_FACTOR times that);
 *  - a user name at `maxPerUser` failures is "under attack" for `lockoutMs`: each client that
 *    failed with that name is refused for it; a client that did not fail is never refused, so no one
 *    can lock a printer out by guessing its name, from anywhere, for any length of time.
 * Attempts count before the (slow) password check, so parallel AUTHs cannot outrun the limit.
 * A name nobody configured is counted the same way, apart (a bounded table of its own): the
 * slow-down and the refusals look the same whether a name exists or not, so they do not reveal
 * real names, and inventing names cannot flush a real user's counters.
 */
export class AuthGuard {
  private readonly byClient = new Map<string, Failures>();
  private readonly configured: NameTable = { byUser: new Map(), failedPairs: new Map() };
  private readonly invented: NameTable = { byUser: new Map(), failedPairs: new Map() };

  constructor(
    private readonly limits: AuthGuardLimits,
    private readonly isKnownUser: (username: string) => boolean,
  ) {}

  /** The lockout in force for this client (and user name, once known), if any. */
  lockout(ip: string, username?: string, now = Date.now()): Lockout | undefined {
    for (const { key, limit } of this.clientLimits(ip)) {
      const entry = this.byClient.get(key);
      if (entry && entry.bannedUntil > now) return { scope: 'ip', until: entry.bannedUntil };
      if (entry && this.recent(entry.times, now).length >= limit) return { scope: 'ip', until: now + this.limits.windowMs };
    }
    if (username === undefined || !this.userUnderAttack(username, now)) return undefined;
    const until = (this.names(username).failedPairs.get(pairKey(username, clientKey(ip))) ?? 0) + this.limits.lockoutMs;
    return until > now ? { scope: 'user', until } : undefined;
  }

  /** Starts an attempt: refused with the lockout in force, else counted until it proves right. */
  begin(ip: string, username: string, now = Date.now()): Lockout | Attempt {
    const locked = this.lockout(ip, username, now);
    if (locked) return locked;
    const client = clientKey(ip);
    const counted = this.countClient(ip, now);
    const known = this.isKnownUser(username);
    const { byUser, failedPairs } = this.names(username);
    const pair = pairKey(username, client);
    const previousPairFailure = failedPairs.get(pair);
    this.userEntry(username, now).times.push(now);
    boundedSet(failedPairs, pair, now);
    return {
      succeeded: () => {
        for (const { entry } of counted) removeOne(entry.times, now);
        removeOne(byUser.get(username)?.times ?? [], now);
        if (previousPairFailure === undefined) failedPairs.delete(pair);
        else failedPairs.set(pair, previousPairFailure);
      },
      failed: () => this.failed(counted, username, known, Date.now()),
    };
  }

  active(now = Date.now()): ActiveLockout[] {
    const clients = [...this.byClient].filter(([, entry]) => entry.bannedUntil > now).map(([key, entry]) => ({ scope: 'ip' as const, key, until: entry.bannedUntil }));
    const users = [...this.configured.byUser].filter(([, entry]) => entry.bannedUntil > now).map(([key, entry]) => ({ scope: 'user' as const, key, until: entry.bannedUntil }));
    return [...clients, ...users];
  }

  /** Forgets a client's or a user name's failures; false when it was not locked out. */
  lift(scope: Lockout['scope'], key: string, now = Date.now()): boolean {
    const map = scope === 'ip' ? this.byClient : this.configured.byUser;
    const entry = map.get(key);
    if (!entry || entry.bannedUntil <= now) return false;
    map.delete(key);
    if (scope === 'user') for (const pair of this.configured.failedPairs.keys()) if (pair.startsWith(`${key}\0`)) this.configured.failedPairs.delete(pair);
    return true;
  }

  /**
   * A failed login another replica saw: counted here too, so that guessing spread over replicas
   * meets the same limits as guessing at one. Returns the lockouts it caused here.
   */
  noteFailureElsewhere(ip: string, username: string, now = Date.now()): Lockout['scope'][] {
    const counted = this.countClient(ip, now);
    this.userEntry(username, now).times.push(now);
    boundedSet(this.names(username).failedPairs, pairKey(username, clientKey(ip)), now);
    return this.failed(counted, username, this.isKnownUser(username), now).lockouts;
  }

  /** The client's address, and for IPv6 its /64, each with its limit. */
  private clientLimits(ip: string): { key: string; limit: number }[] {
    const address = clientKey(ip);
    const prefix = ipv6Prefix(address);
    return [{ key: address, limit: this.limits.maxPerIp }, ...(prefix ? [{ key: prefix, limit: this.limits.maxPerIp * PREFIX_FACTOR }] : [])];
  }

  /** A failure counted for the client's address (and /64), first the address. */
  private countClient(ip: string, now: number): { entry: Failures; limit: number }[] {
    return this.clientLimits(ip).map(({ key, limit }) => {
      const entry = this.clientEntry(key, now);
      entry.times.push(now);
      return { entry, limit };
    });
  }

  private failed(counted: { entry: Failures; limit: number }[], username: string, known: boolean, now: number): { delayMs: number; lockouts: Lockout['scope'][] } {
    const lockouts: Lockout['scope'][] = [];
    for (const { entry, limit } of counted) {
      if (this.recent(entry.times, now).length >= limit && entry.bannedUntil <= now) {
        entry.bannedUntil = now + this.limits.lockoutMs;
        entry.times.length = 0; // the lockout is the penalty (no delay on top); afterwards the client starts afresh
        if (!lockouts.includes('ip')) lockouts.push('ip');
      }
    }
    const clientCount = counted[0].entry.times.length;
    const user = this.userEntry(username, now);
    const userCount = user.times.length;
    if (userCount >= this.limits.maxPerUser) {
      // An invented name is refused the same way; only a real one is a lockout to report.
      if (user.bannedUntil <= now && known) lockouts.push('user');
      user.bannedUntil = now + this.limits.lockoutMs;
    }
    const worst = Math.max(clientCount / this.limits.maxPerIp, userCount / this.limits.maxPerUser);
    const delayMs = worst > 0.5 ? Math.min(MAX_DELAY_MS, Math.round((worst - 0.5) * 2 * MAX_DELAY_MS)) : 0;
    return { delayMs, lockouts };
  }

  private userUnderAttack(username: string, now: number): boolean {
    const entry = this.names(username).byUser.get(username);
    return entry !== undefined && (entry.bannedUntil > now || this.recent(entry.times, now).length >= this.limits.maxPerUser);
  }

  private recent(times: number[], now: number): number[] {
    const since = now - this.limits.windowMs;
    while (times.length > 0 && times[0] <= since) times.shift();
    return times;
  }

  private clientEntry(client: string, now: number): Failures {
    let entry = this.byClient.get(client);
    if (!entry) {
      if (this.byClient.size >= MAX_ENTRIES) this.evictClient(now);
      entry = { times: [], bannedUntil: 0 };
      this.byClient.set(client, entry);
    }
    this.recent(entry.times, now);
    return entry;
  }

  /** Drops the oldest client that is not locked out; a ban is never what makes room. */
  private evictClient(now: number): void {
    for (const [key, entry] of this.byClient) {
      if (entry.bannedUntil <= now) {
        this.byClient.delete(key);
        return;
      }
    }
    this.byClient.delete(this.byClient.keys().next().value!);
  }

  /** The table a name's failures go to: the configured names', or the invented ones'. */
  private names(username: string): NameTable {
    return this.isKnownUser(username) ? this.configured : this.invented;
  }

  private userEntry(username: string, now: number): Failures {
    const { byUser } = this.names(username);
    let entry = byUser.get(username);
    if (!entry) {
      // Only the invented names can be many: the oldest is forgotten first.
      if (byUser.size >= MAX_ENTRIES) byUser.delete(byUser.keys().next().value!);
      entry = { times: [], bannedUntil: 0 };
      byUser.set(username, entry);
    }
    this.recent(entry.times, now);
    return entry;
  }
}

/** Each client address counts on its own (IPv6 in one spelling, an IPv4-mapped one as IPv4). */
export function clientKey(ip: string): string {
  const address = ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
  return isIPv6(address) ? expandIPv6(address).join(':') : address;
}

/** The /64 of an IPv6 client key ("2001:db8:0:1::/64"), or undefined for IPv4. */
function ipv6Prefix(key: string): string | undefined {
  return key.includes(':') ? `${key.split(':').slice(0, 4).join(':')}::/64` : undefined;
}

function expandIPv6(address: string): string[] {
  const [head, tail = ''] = address.split('%')[0].split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') && tail ? tail.split(':') : [];
  const missing = 8 - left.length - right.length;
  const groups = address.includes('::') ? [...left, ...Array<string>(missing).fill('0'), ...right] : left;
  return groups.map((group) => group.toLowerCase().replace(/^0+(?=.)/, ''));
}

function pairKey(username: string, client: string): string {
  return `${username}\0${client}`;
}

function removeOne(times: number[], at: number): void {
  const index = times.lastIndexOf(at);
  if (index >= 0) times.splice(index, 1);
}

function boundedSet(map: Map<string, number>, key: string, value: number): void {
  map.delete(key);
  if (map.size >= MAX_ENTRIES) map.delete(map.keys().next().value!);
  map.set(key, value);
}
