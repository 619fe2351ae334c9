import type { Readable } from 'node:stream';
import type { ResolvedAccount, UserConfig } from '../config/index.js';
import type { QueueAction, QueueActionResult, QueueEntry } from '../cluster/index.js';
import type { ReplicaInfo } from '../cluster-state/index.js';
import type { DeliveryHealth } from '../health.js';
import type { ActiveLockout } from '../listener/index.js';
import type { TokenManager } from '../oauth/index.js';
import type { AccountQueueState } from '../spool/index.js';
import type { ActivityView, ReplicaAnswers, TraceQuery, TraceSearchResult } from '../trace/index.js';
import type { Upstream } from '../upstream/index.js';
import type { ProviderTraceResult } from '../provider-trace/index.js';

export interface AdminAccount {
  account: ResolvedAccount;
  tokens: TokenManager;
  upstream: Upstream;
}

/** A message waiting in the queue, being delivered, or kept after failing (on `replica`, in a cluster). */
export type SpooledMessage = QueueEntry;

/**
 * What the console reads and asks of the running relay. Every action goes through the daemon's
 * own parts (the delivery agent, the listener): the console never edits a file behind their back.
 */
export interface ConsoleSources {
  accounts: Map<string, AdminAccount>;
  queueState(account: string): AccountQueueState;
  health(account: string): DeliveryHealth;
  /** Today's counts, the 24-hour chart and the devices: of every replica that answered, added up. */
  activity(): Promise<{ view: ActivityView; replicas: ReplicaAnswers }>;
  /** Waiting and in-flight messages, then the failed area: of every replica that answered. */
  queue(): Promise<{ entries: SpooledMessage[]; replicas: ReplicaAnswers }>;
  /** A message in this replica's spool: its record and content. */
  openSpooled(id: string): Promise<{ message: SpooledMessage; open: () => Readable } | undefined>;
  /** Retry, delete (by the replica that holds the message) or retry all (everywhere). */
  queueAction(replica: string | undefined, action: QueueAction): Promise<QueueActionResult | { error: string }>;
  searchTrace(query: TraceQuery): Promise<TraceSearchResult>;
  /** What the provider says it did with a message (trace.providerLookup); undefined for an account that does not ask. */
  providerTrace(account: string, messageId: string, receivedAt: string): Promise<ProviderTraceResult> | undefined;
  /** The configured device users (as of the last reload). */
  users(): UserConfig[];
  lockouts(): ActiveLockout[];
  unlock(scope: ActiveLockout['scope'], key: string): boolean;
  /** The cluster's replicas; undefined without `cluster:`. */
  replicas(): Promise<ReplicaInfo[] | undefined>;
}
