import type { FailureReason } from './reply.js';

/** Failures that say the relay itself cannot send, as opposed to a verdict on one message. */
const RELAY_PROBLEMS = new Set<FailureReason>(['upstream_auth', 'upstream_tls', 'upstream_unreachable', 'token_unavailable', 'needs_reauth', 'account_misconfigured', 'quota_exhausted']);

export interface DeliveryHealth {
  lastRelayedAt?: string;
  lastProblem?: { at: string; reason: FailureReason; reply: string; hint?: string };
}

/** The latest upstream outcome per account, for /readyz: a relay problem stands until a send succeeds. */
export class HealthBoard {
  private readonly accounts = new Map<string, DeliveryHealth>();

  relayed(account: string): void {
    this.accounts.set(account, { lastRelayedAt: new Date().toISOString() });
  }

  failed(account: string, reason: FailureReason, reply: string, hint?: string): void {
    if (!RELAY_PROBLEMS.has(reason)) return;
    const entry = this.accounts.get(account) ?? {};
    entry.lastProblem = { at: new Date().toISOString(), reason, reply, hint };
    this.accounts.set(account, entry);
  }

  get(account: string): DeliveryHealth {
    return this.accounts.get(account) ?? {};
  }
}
