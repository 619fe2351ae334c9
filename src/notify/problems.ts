import type { AccountTokenStatus, CredentialExpiry } from '../oauth/index.js';
import type { AccountQueueState } from '../spool/index.js';
import type { DeliveryHealth } from '../health.js';
import type { ActiveLockout } from '../listener/index.js';

/** Something an admin should hear about, keyed so that it is told once while it lasts. */
export interface Problem {
  key: string;
  severity: 'critical' | 'warning';
  title: string;
  /** What is wrong in the relay's and the provider's words, and what to do. */
  details: string;
  account?: string;
}

/** What the relay knows right now, as the problems are read from it. */
export interface RelaySnapshot {
  accounts: {
    name: string;
    mailbox: string;
    token: AccountTokenStatus;
    delivery: DeliveryHealth;
    queue?: AccountQueueState;
    credentials: CredentialExpiry[];
  }[];
  spool: { bytes: number; limit: number };
  /** Undefined without `cluster:`. */
  clusterUp?: boolean;
  lockouts: ActiveLockout[];
  /** When the delivery log last failed to write, if ever. */
  logDroppedAt?: number;
}

const DAY_MS = 86_400_000;
/** The same thresholds as deploy/monitoring/alerts.yaml. */
const EXPIRY_WARNING_MS = 14 * DAY_MS;
const OLD_QUEUE_MS = 30 * 60_000;
const SPOOL_SHARE = 0.8;
const LOG_DROP_WINDOW_MS = 15 * 60_000;

const day = (at: number) => new Date(at).toISOString().slice(0, 10);

function accountProblems(account: RelaySnapshot['accounts'][number], now: number): Problem[] {
  const problems: Problem[] = [];
  const { name, token, queue, delivery } = account;
  const hint = token.hint ?? delivery.lastProblem?.hint;
  // The provider's words: the token endpoint's when the token is the problem, else the last send's.
  const said = (token.state === 'ready' ? undefined : token.lastError) ?? delivery.lastProblem?.reply;
  if (queue?.held || token.state === 'needs_reauth' || token.state === 'unavailable') {
    const title = token.state === 'needs_reauth' ? `Account ${name} needs a sign-in` : queue?.held ? `Mail for account ${name} is held (${queue.heldFor ?? 'waiting'})` : `Account ${name} cannot get an access token`;
    const fix = hint ?? (token.state === 'needs_reauth' ? `Sign in on the console (Set up) or run: smtp-oauth-relay login ${name}` : 'See the console Overview.');
    problems.push({ key: `account:${name}`, severity: 'critical', account: name, title, details: `${said ? `The provider said: ${said.replace(/\.?$/, '.')} ` : ''}What to do: ${fix.replace(/\.?$/, '.')} Queued mail goes out by itself once it works.` });
  }
  const lifetimes: [string, number][] = account.credentials.map((expiry) => [expiry.credential === 'certificate' ? 'certificate' : 'client secret', expiry.expiresAt]);
  if (token.refreshTokenExpiresAt) lifetimes.push(['refresh token (Google app in Testing)', Date.parse(token.refreshTokenExpiresAt)]);
  if (token.refreshTokenUnusedExpiry) lifetimes.push(['refresh token (unused)', Date.parse(token.refreshTokenUnusedExpiry)]);
  for (const [what, at] of lifetimes) {
    if (at - now > EXPIRY_WARNING_MS) continue;
    const fix = what.startsWith('refresh token (Google') ? 'publish the Google OAuth consent screen ("In production"), then sign in again' : what.startsWith('refresh token') ? 'find out why refreshes fail, or sign in again' : 'renew it at the provider and update the config (credentialExpiresAt)';
    problems.push({ key: `expiry:${name}:${what}`, severity: 'warning', account: name, title: `The ${what} of account ${name} ${at < now ? 'has expired' : `stops working on ${day(at)}`}`, details: `What to do: ${fix}.` });
  }
  if (queue?.oldestReceivedAt && !queue.held && now - Date.parse(queue.oldestReceivedAt) > OLD_QUEUE_MS) {
    problems.push({ key: `queue-old:${name}`, severity: 'warning', account: name, title: `A message for ${name} has waited over 30 minutes`, details: `Last problem: ${said ?? 'none recorded'}. See the console's Queue page, or: smtp-oauth-relay trace --status deferred --since 2h` });
  }
  return problems;
}

/** The problems that stand right now; each stays in the list while it lasts. */
export function findProblems(snapshot: RelaySnapshot, now = Date.now()): Problem[] {
  const problems = snapshot.accounts.flatMap((account) => accountProblems(account, now));
  const { bytes, limit } = snapshot.spool;
  if (bytes > limit * SPOOL_SHARE) {
    problems.push({ key: 'spool', severity: 'warning', title: `The spool is ${Math.round((bytes / limit) * 100)}% full`, details: 'Mail is piling up, usually behind a held account. Past queue.maxSize devices get 452 and retry.' });
  }
  if (snapshot.clusterUp === false) {
    problems.push({ key: 'cluster-store', severity: 'warning', title: 'The cluster store (Redis/Valkey) is unreachable', details: 'Mail still flows; each replica applies the limits on its own until the store is back.' });
  }
  if (snapshot.logDroppedAt !== undefined && now - snapshot.logDroppedAt < LOG_DROP_WINDOW_MS) {
    problems.push({ key: 'delivery-log', severity: 'warning', title: 'The delivery log cannot be written', details: 'The disk under dataDir is full or read-only. Mail is not affected, but trace and the console miss events: free space.' });
  }
  for (const lockout of snapshot.lockouts) {
    const who = lockout.scope === 'ip' ? `client address ${lockout.key}` : `device user ${lockout.key}`;
    problems.push({ key: `lockout:${lockout.scope}:${lockout.key}`, severity: 'warning', title: `Logins from ${who} are locked out after wrong passwords`, details: 'A device with a wrong password, or someone guessing. Fix the device, then Unlock it on the console (Devices).' });
  }
  return problems;
}
