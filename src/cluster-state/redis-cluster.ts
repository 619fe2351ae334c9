import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { SendingLimits } from '../config/index.js';
import type { Metrics } from '../metrics/metrics.js';
import { openText, sealText, type SealedFile } from '../util/sealed-text.js';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ClusterTrust } from './trust.js';
import { HOLDING_REASONS, type FailureReason } from '../reply.js';
import { LOCAL_SLOT, type ClusterState, type HeldAccount, type ReplicaInfo, type SessionSlot, type SharedAccessToken, type SharedRefreshToken } from './state.js';

export interface RedisClusterOptions {
  url: string;
  password?: string;
  /** CA of a rediss:// server (default: the system's trust store). */
  ca?: string;
  name: string;
  keyPrefix: string;
  /** Signs what this replica writes, checks what it reads, seals shared tokens. */
  trust: ClusterTrust;
  logger: Logger;
  metrics: Metrics;
}

/** A waiter for a session that has not asked again for this long gave up (or its replica died). */
const WAITER_GONE_MS = 2000;

/**
 * The line of waiters for an account's sessions: KEYS[1] holds them by when they first asked (the
 * order), KEYS[2] by when they last asked. Waiters gone quiet leave the line, and so does any
 * entry without both scores, or dated in the future (written by someone else: it could only delay).
 */
const CLEAN_WAITERS = `
local function clean_waiters(line, seen, ms)
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', ms - ${WAITER_GONE_MS})
  redis.call('ZREMRANGEBYSCORE', seen, '(' .. ms, '+inf')
  for _, waiter in ipairs(redis.call('ZRANGE', line, 0, -1)) do
    if not redis.call('ZSCORE', seen, waiter) then redis.call('ZREM', line, waiter) end
  end
end`;

/**
 * A counting semaphore with expiring leases, served in order: a sorted set of holders scored by
 * expiry (the store's clock), and the line of waiters. Expired holders (a replica that died) are
 * dropped before counting, and so are holders said to last longer than a lease can. A free session
 * goes to the longest waiter: a replica that just gave one up does not take it straight back.
 * ARGV: limit, lease ms, holder (the same for every ask of one waiter).
 */
const TAKE_SESSION = `${CLEAN_WAITERS}
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (ms + tonumber(ARGV[2])), '+inf')
clean_waiters(KEYS[2], KEYS[3], ms)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], ARGV[3]) or redis.call('ZCARD', KEYS[2])
if free > 0 and ahead < free then
  redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 1
end
redis.call('ZADD', KEYS[2], 'NX', ms, ARGV[3])
redis.call('ZADD', KEYS[3], ms, ARGV[3])
redis.call('PEXPIRE', KEYS[2], ${WAITER_GONE_MS * 2})
redis.call('PEXPIRE', KEYS[3], ${WAITER_GONE_MS * 2})
return 0`;

/** Whether a replica other than this one (ARGV[1], the prefix of its waiters) waits for one of the account's sessions. */
const SESSIONS_WANTED = `${CLEAN_WAITERS}
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
clean_waiters(KEYS[1], KEYS[2], ms)
for _, waiter in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(waiter, 1, string.len(ARGV[1])) ~= ARGV[1] then return 1 end
end
return 0`;
const RENEW_SESSION = `
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('ZADD', KEYS[1], 'XX', ms + tonumber(ARGV[1]), ARGV[2])`;

const HEARTBEAT_MS = 5000;
const FORGET_AFTER_MS = 3600_000;

/** A session lease lives this long unless renewed (every third of it while the send lasts). */
const SESSION_TTL_MS = 60_000;

/**
 * Sliding windows of the provider's limits, checked and counted in one step: sends (one member per
 * transaction) and recipients (one member "uuid:count" per message) scored by the store's clock.
 * Returns 0 (counted) or the milliseconds until the oldest entry that blocks leaves its window.
 * Entries dated in the future were not written by a replica and are dropped.
 * ARGV: per-minute limit, per-day limit, recipients-per-day limit (0: none), transactions, recipients, uuid.
 */
/** The longest a provider's Retry-After (or a forged pause in the store) stops an account's sends. */
const MAX_PAUSE_MS = 3_600_000;

const PACE = `
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return math.min(paused, ${MAX_PAUSE_MS}) end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local minute, day = 60000, 86400000
local perMinute, perDay, rcptPerDay = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sends, rcpts = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - day)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms - day)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. ms, '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. ms, '+inf')
local wait = 0
local function window(limit, span)
  if limit == 0 then return end
  local inWindow = redis.call('ZRANGEBYSCORE', KEYS[1], ms - span, '+inf', 'WITHSCORES')
  local count = #inWindow / 2
  local over = count + math.min(sends, limit) - limit
  if over > 0 then wait = math.max(wait, tonumber(inWindow[over * 2]) + span - ms) end
end
window(perMinute, minute)
window(perDay, day)
if rcptPerDay > 0 then
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local total = rcpts
  for i = 1, #entries, 2 do total = total + tonumber(string.match(entries[i], ':(%d+)$')) end
  local i = 1
  while total > rcptPerDay and i < #entries do
    total = total - tonumber(string.match(entries[i], ':(%d+)$'))
    wait = math.max(wait, tonumber(entries[i + 1]) + day - ms)
    i = i + 2
  end
end
if wait > 0 then return wait end
for n = 1, sends do redis.call('ZADD', KEYS[1], ms, ARGV[6] .. ':' .. n) end
redis.call('ZADD', KEYS[2], ms, ARGV[6] .. ':' .. rcpts)
redis.call('PEXPIRE', KEYS[1], day)
redis.call('PEXPIRE', KEYS[2], day)
return 0`;

/**
 * Takes a lease (SET NX PX), first dropping one that would outlive any lease a replica takes (no
 * expiry, or a longer one): written by someone else, it could only stop the cluster for good.
 */
const TAKE_LEASE = `
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0`;

/** Only the holder may release a lease (a lease that expired and was taken by another stays). */
const RELEASE_IF_MINE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;

/**
 * Shared state in Redis or Valkey. Commands fail at once while the store is unreachable (no
 * offline queue) and time out after a second, so a dead or hung store never holds up mail: every
 * method then answers as the embedded default would, and the client keeps reconnecting.
 */
export class RedisCluster implements ClusterState {
  private readonly redis: Redis;
  /** Subscriptions need a connection of their own (RESP2). */
  private readonly subscriber: Redis;
  private readonly signInListeners: ((account: string) => void)[] = [];
  private readonly authFailureListeners: ((ip: string, username: string) => void)[] = [];
  private readonly heldListeners: ((event: HeldAccount) => void)[] = [];
  private readonly unlockListeners: ((scope: 'ip' | 'user', key: string) => void)[] = [];
  /** Where replicas announce sign-ins and failed logins (the client's keyPrefix does not apply to channels). */
  private readonly signInChannel: string;
  private readonly authFailureChannel: string;
  private readonly heldChannel: string;
  private readonly unlockChannel: string;
  private readonly trust: ClusterTrust;
  private readonly log: Logger;
  /** Registry entries already counted as untrusted (each is counted once, not on every read). */
  private readonly untrustedEntries = new Set<string>();
  private wasUp?: boolean;
  private heartbeat?: NodeJS.Timeout;

  constructor(private readonly options: RedisClusterOptions) {
    this.log = options.logger.child({ cluster: options.name });
    this.trust = options.trust;
    const { url, username, password } = splitCredentials(options.url);
    this.redis = new Redis(url, {
      username,
      password: options.password ?? password,
      tls: url.startsWith('rediss://') ? { ca: options.ca ? readFileSync(options.ca) : undefined, minVersion: 'TLSv1.2' } : undefined,
      keyPrefix: options.keyPrefix,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1000,
      connectTimeout: 2000,
      retryStrategy: (attempt) => Math.min(250 * attempt, 2000),
    });
    options.metrics.clusterUp.set(0);
    for (const kind of ['registry', 'announcement', 'record', 'request']) options.metrics.clusterUntrusted.inc({ kind }, 0);
    this.redis.on('ready', () => this.noteUp(true));
    this.redis.on('close', () => this.noteUp(false));
    this.redis.on('error', () => undefined); // reported once per outage by noteUp
    this.subscriber = this.redis.duplicate({ enableOfflineQueue: true }); // resubscribes by itself after an outage
    this.subscriber.on('error', () => undefined);
    this.signInChannel = `${options.keyPrefix}sign-in`;
    this.authFailureChannel = `${options.keyPrefix}auth-failures`;
    this.heldChannel = `${options.keyPrefix}account-held`;
    this.unlockChannel = `${options.keyPrefix}unlocks`;
    this.subscriber.subscribe(this.signInChannel, this.authFailureChannel, this.heldChannel, this.unlockChannel).catch(() => undefined);
    this.subscriber.on('message', (channel: string, text: string) => this.heard(channel, text));
  }

  get name(): string {
    return this.options.name;
  }

  /**
   * Resolves once the store answers, or after `timeoutMs`. Taken before the first token request:
   * a replica that started before its connection was up would count itself alone and refresh
   * beside the others.
   */
  async connected(timeoutMs: number): Promise<boolean> {
    if (this.up) return true;
    return new Promise((resolve) => {
      const done = (up: boolean) => {
        clearTimeout(timer);
        this.redis.off('ready', onReady);
        resolve(up);
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(this.up), timeoutMs);
      this.redis.on('ready', onReady);
    });
  }

  get up(): boolean {
    return this.redis.status === 'ready';
  }

  readonly sharesSessions = true;

  /** With the store down: 0, so the replica's own pacing (the queue's) is what applies. */
  async pace(account: string, limits: SendingLimits, transactions: number, recipients: number): Promise<number> {
    const { messagesPerMinute = 0, messagesPerDay = 0, recipientsPerDay = 0 } = limits;
    const wait = await this.quietly(() =>
      this.redis.eval(PACE, 3, `pace:${account}:sends`, `pace:${account}:recipients`, `pace:${account}:pause`, messagesPerMinute, messagesPerDay, recipientsPerDay, transactions, recipients, randomUUID()),
    );
    return typeof wait === 'number' ? wait : 0;
  }

  /** Only lengthens a pause (PEXPIRE GT); a pause someone else wrote can delay sends, for an hour at most. */
  async pauseSending(account: string, ms: number): Promise<void> {
    const key = `pace:${account}:pause`;
    const span = Math.min(Math.max(1, Math.round(ms)), MAX_PAUSE_MS);
    await this.quietly(() => this.redis.multi().set(key, '1', 'PX', span, 'NX').pexpire(key, span, 'GT').exec());
  }

  /** With the store down the slot is granted: each replica's own limit (upstream.maxConnections) applies. */
  async takeSession(account: string, limit: number, waiter: string, queue = true): Promise<SessionSlot | undefined> {
    const key = `sessions:${account}`;
    const holder = `${this.name}:${waiter}`;
    const taken = await this.quietly(() => this.redis.eval(TAKE_SESSION, 3, key, `${key}:line`, `${key}:asked`, limit, SESSION_TTL_MS, holder));
    if (taken === undefined) return LOCAL_SLOT;
    if (taken !== 1) {
      if (!queue) await this.quietly(() => this.redis.multi().zrem(`${key}:line`, holder).zrem(`${key}:asked`, holder).exec());
      return undefined;
    }
    const renewal = setInterval(() => void this.quietly(() => this.redis.eval(RENEW_SESSION, 1, key, SESSION_TTL_MS, holder)), SESSION_TTL_MS / 3).unref();
    return {
      release: async () => {
        clearInterval(renewal);
        await this.quietly(() => this.redis.zrem(key, holder));
      },
    };
  }

  /** With the store down: no (each replica's own limit applies). */
  async sessionsWanted(account: string): Promise<boolean> {
    const key = `sessions:${account}`;
    return (await this.quietly(() => this.redis.eval(SESSIONS_WANTED, 2, `${key}:line`, `${key}:asked`, `${this.name}:`))) === 1;
  }

  async sharedAccessToken(account: string): Promise<SharedAccessToken | undefined> {
    const token = await this.readSealed<SharedAccessToken>(`token:${account}`);
    return token && Date.now() < token.refreshAt ? token : undefined;
  }

  async shareAccessToken(account: string, token: SharedAccessToken): Promise<void> {
    const ttl = Math.max(1, token.expiresAt - Date.now());
    await this.quietly(() => this.redis.set(`token:${account}`, this.seal(`token:${account}`, token), 'PX', ttl));
  }

  sharedRefreshToken(account: string): Promise<SharedRefreshToken | undefined> {
    return this.readSealed<SharedRefreshToken>(`refresh:${account}`);
  }

  async shareRefreshToken(account: string, token: SharedRefreshToken): Promise<void> {
    await this.quietly(() => this.redis.set(`refresh:${account}`, this.seal(`refresh:${account}`, token)));
  }

  async takeRefreshLease(account: string, ttlMs: number): Promise<boolean> {
    const taken = await this.quietly(() => this.redis.eval(TAKE_LEASE, 1, `lease:token:${account}`, this.name, ttlMs));
    return taken === undefined || taken === 1; // store down: refresh here (single-flight within the replica)
  }

  async releaseRefreshLease(account: string): Promise<void> {
    await this.quietly(() => this.redis.eval(RELEASE_IF_MINE, 1, `lease:token:${account}`, this.name));
  }

  async claimOnce(key: string, ttlMs: number): Promise<boolean> {
    const taken = await this.quietly(() => this.redis.eval(TAKE_LEASE, 1, `once:${key}`, this.name, ttlMs));
    return taken === undefined || taken === 1;
  }

  startHeartbeat(describe: () => Omit<ReplicaInfo, 'lastSeen' | 'stale'>): void {
    const beat = () => {
      const entry = JSON.stringify({ ...describe(), lastSeen: new Date().toISOString() });
      void this.quietly(() => this.redis.hset('replicas', this.name, JSON.stringify({ entry, signature: this.trust.sign('registry', [this.name, entry]) })));
    };
    beat();
    this.heartbeat = setInterval(beat, HEARTBEAT_MS).unref();
  }

  /**
   * Replicas seen within the last hour; those silent for three heartbeats are marked stale. An
   * entry not signed by a replica (a forged address a stopping replica would hand mail to) is
   * ignored, logged and counted once.
   */
  async replicas(): Promise<ReplicaInfo[]> {
    const entries = (await this.quietly(() => this.redis.hgetall('replicas'))) ?? {};
    const now = Date.now();
    return Object.entries(entries)
      .flatMap(([field, text]) => {
        const replica = verifiedReplica(this.trust, field, text);
        if (!replica) this.noteUntrusted('registry', `${field}\n${text}`, { replica: field.slice(0, 100) });
        return replica ? [replica] : [];
      })
      .filter((replica) => now - Date.parse(replica.lastSeen) < FORGET_AFTER_MS)
      .map((replica) => ({ ...replica, stale: now - Date.parse(replica.lastSeen) > 3 * HEARTBEAT_MS || undefined }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async announceSignIn(account: string): Promise<void> {
    await this.publish(this.signInChannel, { account });
  }

  onSignIn(listener: (account: string) => void): void {
    this.signInListeners.push(listener);
  }

  announceHeld(event: HeldAccount): void {
    void this.publish(this.heldChannel, { ...event });
  }

  onHeld(listener: (event: HeldAccount) => void): void {
    this.heldListeners.push(listener);
  }

  announceAuthFailure(ip: string, username: string): void {
    void this.publish(this.authFailureChannel, { ip, username });
  }

  onAuthFailure(listener: (ip: string, username: string) => void): void {
    this.authFailureListeners.push(listener);
  }

  announceUnlock(scope: 'ip' | 'user', key: string): void {
    void this.publish(this.unlockChannel, { scope, key });
  }

  onUnlock(listener: (scope: 'ip' | 'user', key: string) => void): void {
    this.unlockListeners.push(listener);
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.quietly(() => this.redis.hdel('replicas', this.name)); // stopped on purpose: not stale, gone
    this.subscriber.disconnect();
    this.redis.disconnect();
  }

  /** An announcement signed by this replica, with a nonce and the time: the others obey it once. */
  private async publish(channel: string, event: Record<string, unknown>): Promise<void> {
    const body = JSON.stringify({ ...event, from: this.name, at: Date.now(), nonce: this.trust.nonce() });
    await this.quietly(() => this.redis.publish(channel, JSON.stringify({ body, signature: this.trust.sign('announce', [channel, body]) })));
  }

  /** The announcement's content when a replica signed it for this channel, recently, and it was not heard before. */
  private verifiedAnnouncement(channel: string, text: string): AnnouncedEvent | undefined {
    const { body, signature } = JSON.parse(text) as { body?: unknown; signature?: unknown };
    if (typeof body !== 'string' || typeof signature !== 'string' || !this.trust.verify('announce', [channel, body], signature)) return undefined;
    const event = JSON.parse(body) as AnnouncedEvent;
    if (event.from === this.name) return event; // our own, echoed back
    return this.trust.accept(String(event.nonce), Number(event.at)) ? event : undefined;
  }

  private heard(channel: string, text: string): void {
    try {
      const event = this.verifiedAnnouncement(channel, text);
      if (!event) return this.noteUntrusted('announcement', text, { channel });
      if (event.from === this.name) return;
      if (channel === this.signInChannel && typeof event.account === 'string') {
        this.log.info({ account: event.account, from: event.from }, 'account signed in on another replica');
        for (const listener of this.signInListeners) listener(event.account);
      } else if (channel === this.heldChannel && typeof event.account === 'string' && HOLDING_REASONS.has(event.reason as FailureReason)) {
        this.log.warn({ account: event.account, reason: event.reason, from: event.from }, 'account held on another replica; holding it here too');
        const held = { account: event.account, reason: event.reason as FailureReason, reply: String(event.reply ?? ''), hint: event.hint };
        for (const listener of this.heldListeners) listener(held);
      } else if (channel === this.authFailureChannel && typeof event.ip === 'string' && typeof event.username === 'string') {
        for (const listener of this.authFailureListeners) listener(event.ip, event.username);
      } else if (channel === this.unlockChannel && (event.scope === 'ip' || event.scope === 'user') && typeof event.key === 'string') {
        this.log.info({ scope: event.scope, key: event.key, from: event.from }, 'lockout lifted on another replica; lifted here too');
        for (const listener of this.unlockListeners) listener(event.scope, event.key);
      }
    } catch {
      this.log.warn({ channel }, 'unreadable announcement on a cluster channel');
    }
  }

  /** Something in the store that no replica wrote (or a replay): ignored, logged and counted. */
  private noteUntrusted(kind: 'registry' | 'announcement' | 'record', what: string, detail: Record<string, unknown>): void {
    if (kind === 'registry') {
      if (this.untrustedEntries.has(what)) return;
      if (this.untrustedEntries.size > 1000) this.untrustedEntries.clear();
      this.untrustedEntries.add(what);
    }
    this.options.metrics.clusterUntrusted.inc({ kind });
    this.log.warn({ kind, ...detail }, 'ignored a cluster entry no replica signed (or a replay): someone else can write to the cluster store');
  }

  private noteUp(up: boolean): void {
    this.options.metrics.clusterUp.set(up ? 1 : 0);
    if (up === this.wasUp) return;
    if (up) this.log.info('cluster store reachable; limits and tokens are shared');
    else if (this.wasUp !== undefined) this.log.warn('cluster store unreachable; this replica works on its own until it is back (mail is still accepted and delivered)');
    this.wasUp = up;
  }

  /** A store command whose failure only means "nothing shared": undefined instead of an error. */
  private async quietly<T>(command: () => Promise<T>): Promise<T | undefined> {
    if (this.redis.status !== 'ready') return undefined;
    try {
      return await command();
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, 'cluster store command failed');
      return undefined;
    }
  }

  /** Sealed for the key it is stored under: a value copied to another account's key does not open there. */
  private seal(key: string, value: unknown): string {
    return JSON.stringify(sealText(this.trust.sealKey, JSON.stringify(value), key));
  }

  private async readSealed<T>(key: string): Promise<T | undefined> {
    const text = await this.quietly(() => this.redis.get(key));
    if (!text) return undefined;
    try {
      return JSON.parse(openText(this.trust.sealKey, JSON.parse(text) as Partial<SealedFile>, key)) as T;
    } catch {
      this.noteUntrusted('record', key, { key });
      return undefined;
    }
  }
}

/**
 * The URL without its credentials, and them apart: ioredis reads `redis://relay@host` as a
 * password (the pre-ACL form), so an ACL user name given in the URL would be sent as one.
 */
function splitCredentials(text: string): { url: string; username?: string; password?: string } {
  const url = new URL(text);
  const username = decodeURIComponent(url.username) || undefined;
  const password = decodeURIComponent(url.password) || undefined;
  url.username = '';
  url.password = '';
  return { url: url.toString(), username, password };
}

interface AnnouncedEvent {
  from: string;
  at: number;
  nonce: string;
  account?: string;
  ip?: string;
  username?: string;
  reason?: string;
  reply?: string;
  hint?: string;
  scope?: string;
  key?: string;
}

/** A registry entry the replica of that name signed, or undefined (forged, altered, damaged). */
function verifiedReplica(trust: ClusterTrust, field: string, text: string): ReplicaInfo | undefined {
  try {
    const { entry, signature } = JSON.parse(text) as { entry?: unknown; signature?: unknown };
    if (typeof entry !== 'string' || typeof signature !== 'string' || !trust.verify('registry', [field, entry], signature)) return undefined;
    const replica = JSON.parse(entry) as ReplicaInfo;
    return replica.name === field && typeof replica.lastSeen === 'string' && typeof replica.http === 'string' ? replica : undefined;
  } catch {
    return undefined;
  }
}
