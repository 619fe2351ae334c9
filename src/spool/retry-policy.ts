export interface RetryPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  maxAgeMs: number;
}

/**
 * Exponential backoff with ±20% jitter, so that messages deferred together (a throttling storm)
 * do not all come back in the same second.
 */
export function nextDelayMs(policy: RetryPolicy, attempts: number, random = Math.random): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export function isExpired(policy: RetryPolicy, receivedAt: string, now = Date.now()): boolean {
  return now - Date.parse(receivedAt) >= policy.maxAgeMs;
}
