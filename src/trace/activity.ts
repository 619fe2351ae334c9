import type { TraceEvent, TraceSink } from './events.js';

const HOUR_MS = 3_600_000;
const HOURS = 24;
const MAX_ADDRESSES = 8;
const MAX_TRACKED_IDS = 100_000;

export interface HourCounts {
  /** Start of the hour (ms since the epoch). */
  hour: number;
  sent: number;
  deferred: number;
  failed: number;
}

export interface Tally {
  messages: number;
  failures: number;
}

export interface DeviceSeen extends Tally {
  lastLoginAt?: number;
  lastMessageAt?: number;
  /** Client addresses seen, most recent first. */
  addresses: string[];
}

/** What the console's pages read: one replica's counts, or a cluster's added up. */
export interface ActivityView {
  accountToday(account: string): Tally;
  lastDay(account: string): HourCounts[];
  device(user: string): DeviceSeen;
}

/** One replica's counts for these accounts and users, as it sends them to a peer. */
export interface ActivitySnapshot {
  accounts: Record<string, { today: Tally; hours: HourCounts[] }>;
  devices: Record<string, DeviceSeen>;
}

/**
 * What the console's overview and device pages count, kept in memory from the delivery-log events
 * as they happen (and replayed from the log at start): the last 24 hours per account by hour,
 * today per account and per device user, and each device's logins and addresses.
 */
export class Activity implements TraceSink, ActivityView {
  private readonly hours = new Map<string, HourCounts[]>();
  private readonly today = new Map<string, Tally>();
  private readonly devices = new Map<string, DeviceSeen>();
  /** Message id → device user, for today's failures. */
  private readonly users = new Map<string, string>();
  private day = '';

  constructor(private readonly now: () => number = Date.now) {}

  record(event: TraceEvent): void {
    const at = Date.parse(event.at);
    this.rollDay(at);
    const counts = this.hourOf(event.account, at);
    const isToday = event.at.slice(0, 10) === this.day;
    switch (event.event) {
      case 'received': {
        if (event.about) return; // a report the relay wrote is not a device's message
        if (event.user) {
          const device = this.device(event.user);
          device.lastMessageAt = Math.max(device.lastMessageAt ?? 0, at);
          if (event.clientIp) remember(device.addresses, event.clientIp);
          if (isToday) device.messages++;
          if (this.users.size >= MAX_TRACKED_IDS) this.users.clear();
          this.users.set(event.id, event.user);
        }
        if (isToday) this.tally(`account:${event.account}`).messages++;
        return;
      }
      case 'attempt':
        if (counts && event.result === 'delivered') counts.sent++;
        else if (counts && (event.result === 'deferred' || event.result === 'held')) counts.deferred++;
        return;
      case 'refused':
      case 'final':
        if (event.event === 'final' && event.status !== 'failed' && event.status !== 'expired') return;
        if (event.event === 'final' && event.relayWrote) return; // a report about a failure is not another failure
        if (counts) counts.failed++;
        if (!isToday) return;
        this.tally(`account:${event.account}`).failures++;
        {
          const user = this.users.get(event.id);
          if (user) this.device(user).failures++;
        }
        return;
      default:
    }
  }

  login(user: string, clientIp: string): void {
    const device = this.device(user);
    device.lastLoginAt = this.now();
    remember(device.addresses, clientIp);
  }

  /** The last 24 hours for an account, oldest hour first. */
  lastDay(account: string): HourCounts[] {
    const current = Math.floor(this.now() / HOUR_MS) * HOUR_MS;
    const kept = new Map((this.hours.get(account) ?? []).map((counts) => [counts.hour, counts]));
    return Array.from({ length: HOURS }, (_, index) => {
      const hour = current - (HOURS - 1 - index) * HOUR_MS;
      return kept.get(hour) ?? { hour, sent: 0, deferred: 0, failed: 0 };
    });
  }

  accountToday(account: string): Tally {
    this.rollDay(this.now());
    return { ...(this.today.get(`account:${account}`) ?? { messages: 0, failures: 0 }) };
  }

  device(user: string): DeviceSeen {
    let device = this.devices.get(user);
    if (!device) {
      device = { messages: 0, failures: 0, addresses: [] };
      this.devices.set(user, device);
    }
    return device;
  }

  snapshot(accounts: string[], users: string[]): ActivitySnapshot {
    return {
      accounts: Object.fromEntries(accounts.map((account) => [account, { today: this.accountToday(account), hours: this.lastDay(account) }])),
      devices: Object.fromEntries(users.map((user) => [user, { ...this.device(user), addresses: [...this.device(user).addresses] }])),
    };
  }

  private tally(key: string): Tally {
    let tally = this.today.get(key);
    if (!tally) this.today.set(key, (tally = { messages: 0, failures: 0 }));
    return tally;
  }

  /** The hour's counters, or undefined for an event older than the chart. */
  private hourOf(account: string, at: number): HourCounts | undefined {
    const hour = Math.floor(at / HOUR_MS) * HOUR_MS;
    if (hour <= this.now() - HOURS * HOUR_MS) return undefined;
    const list = this.hours.get(account) ?? [];
    let counts = list.find((entry) => entry.hour === hour);
    if (!counts) {
      // A new hour: the hours that fell off the chart go now, not on every event.
      list.push((counts = { hour, sent: 0, deferred: 0, failed: 0 }));
      this.hours.set(account, list.filter((entry) => entry.hour > this.now() - HOURS * HOUR_MS));
    }
    return counts;
  }

  /** At midnight (UTC) today's tallies start again. */
  private rollDay(at: number): void {
    const day = new Date(Math.max(at, this.now())).toISOString().slice(0, 10);
    if (day === this.day) return;
    this.day = day;
    this.today.clear();
    for (const device of this.devices.values()) device.messages = device.failures = 0;
  }
}

function remember(addresses: string[], address: string): void {
  const index = addresses.indexOf(address);
  if (index >= 0) addresses.splice(index, 1);
  addresses.unshift(address);
  addresses.length = Math.min(addresses.length, MAX_ADDRESSES);
}

const later = (a?: number, b?: number) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));
/** A count from another replica's answer: a number, whatever was sent (it ends up in the console's markup). */
const count = (value: unknown) => (Number.isFinite(Number(value)) ? Number(value) : 0);

/** Several replicas' counts as one: tallies and hours added, the latest login and message, every address. */
export function mergeActivity(snapshots: ActivitySnapshot[]): ActivityView {
  const empty: Tally = { messages: 0, failures: 0 };
  return {
    accountToday: (account) =>
      snapshots.reduce((sum, snapshot) => {
        const today = snapshot.accounts[account]?.today ?? empty;
        return { messages: sum.messages + count(today.messages), failures: sum.failures + count(today.failures) };
      }, empty),
    lastDay: (account) => {
      const byHour = new Map<number, HourCounts>();
      for (const hour of snapshots.flatMap((snapshot) => snapshot.accounts[account]?.hours ?? [])) {
        const sum = byHour.get(hour.hour) ?? { hour: hour.hour, sent: 0, deferred: 0, failed: 0 };
        byHour.set(hour.hour, { hour: hour.hour, sent: sum.sent + count(hour.sent), deferred: sum.deferred + count(hour.deferred), failed: sum.failed + count(hour.failed) });
      }
      return [...byHour.values()].sort((a, b) => a.hour - b.hour).slice(-HOURS);
    },
    device: (user) =>
      snapshots.reduce<DeviceSeen>(
        (sum, snapshot) => {
          const seen = snapshot.devices[user];
          if (!seen) return sum;
          const addresses = [...new Set([...sum.addresses, ...seen.addresses])].slice(0, MAX_ADDRESSES);
          return { messages: sum.messages + count(seen.messages), failures: sum.failures + count(seen.failures), lastLoginAt: later(sum.lastLoginAt, count(seen.lastLoginAt) || undefined), lastMessageAt: later(sum.lastMessageAt, count(seen.lastMessageAt) || undefined), addresses };
        },
        { messages: 0, failures: 0, addresses: [] },
      ),
  };
}
