export interface AuthGuardLimits {
  maxPerIp: number;
  maxPerUser: number;
  windowMs: number;
  lockoutMs: number;
}

/** Entries kept per map before the oldest are dropped: a flood of addresses cannot grow memory. */
const MAX_ENTRIES = 10_000;
/** A login from an address that logged in as this user before is not locked out with the user. */
const KNOWN_GOOD_MS = 30 * 86_400_000;
const MAX_DELAY_MS = 3000;

interface Failures {
  times: number[];
  bannedUntil: number;
}

export type Lockout = { scope: 'ip' | 'user'; until: number };

/**
 * Counts failed AUTH per client address and per user name. Past half the limit each further
 * failure is answered more slowly; at the limit the address (or the name) is refused for the
 * lockout. A device that logs in correctly is never slowed: a name's lockout spares the
 * addresses that name has logged in from, so guessing a printer's password from elsewhere cannot
 * lock the printer out.
 */
export class AuthGuard {
  private readonly byIp = new Map<string, Failures>();
  private readonly byUser = new Map<string, Failures>();
  private readonly knownGood = new Map<string, number>();

  constructor(private readonly limits: AuthGuardLimits) {}

  /** The lockout in force for this client (and user name, once known), if any. */
  lockout(ip: string, username?: string, now = Date.now()): Lockout | undefined {
    const ipBan = this.byIp.get(ip)?.bannedUntil ?? 0;
    if (ipBan > now) return { scope: 'ip', until: ipBan };
    if (username === undefined || this.isKnownGood(username, ip, now)) return undefined;
    const userBan = this.byUser.get(username)?.bannedUntil ?? 0;
    return userBan > now ? { scope: 'user', until: userBan } : undefined;
  }

  /** Records a failure; returns how long to wait before answering and any lockout it caused. */
  failed(ip: string, username: string, now = Date.now()): { delayMs: number; lockouts: Lockout['scope'][] } {
    const lockouts: Lockout['scope'][] = [];
    const ipCount = this.record(this.byIp, ip, this.limits.maxPerIp, now, () => lockouts.push('ip'));
    const userCount = this.record(this.byUser, username, this.limits.maxPerUser, now, () => lockouts.push('user'));
    const worst = Math.max(ipCount / this.limits.maxPerIp, userCount / this.limits.maxPerUser);
    const delayMs = worst > 0.5 ? Math.min(MAX_DELAY_MS, Math.round((worst - 0.5) * 2 * MAX_DELAY_MS)) : 0;
    return { delayMs, lockouts };
  }

  succeeded(ip: string, username: string, now = Date.now()): void {
    this.byIp.delete(ip);
    bounded(this.knownGood).set(`${username}\0${ip}`, now);
  }

  banned(now = Date.now()): { ip: number; user: number } {
    const count = (map: Map<string, Failures>) => [...map.values()].filter((entry) => entry.bannedUntil > now).length;
    return { ip: count(this.byIp), user: count(this.byUser) };
  }

  private record(map: Map<string, Failures>, key: string, limit: number, now: number, onLockout: () => void): number {
    const entry = map.get(key) ?? { times: [], bannedUntil: 0 };
    entry.times = entry.times.filter((at) => at > now - this.limits.windowMs);
    entry.times.push(now);
    if (entry.times.length >= limit && entry.bannedUntil <= now) {
      entry.bannedUntil = now + this.limits.lockoutMs;
      entry.times = [];
      onLockout();
    }
    bounded(map).set(key, entry);
    return entry.times.length;
  }

  private isKnownGood(username: string, ip: string, now: number): boolean {
    const at = this.knownGood.get(`${username}\0${ip}`);
    return at !== undefined && now - at < KNOWN_GOOD_MS;
  }
}

function bounded<V>(map: Map<string, V>): Map<string, V> {
  if (map.size >= MAX_ENTRIES) map.delete(map.keys().next().value!);
  return map;
}
