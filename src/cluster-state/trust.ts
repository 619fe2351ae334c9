import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

export { decodeClusterSecret, generateClusterSecret } from '../util/cluster-secret.js';

/**
 * What replicas believe of each other. Whoever can write to Redis, or reach a replica's HTTP port,
 * may at worst delay mail: every registry entry, announcement, shared token and peer request is
 * authenticated with a key derived (HKDF-SHA256, one key per purpose) from the cluster secret, which
 * only the replicas hold. Requests and announcements carry a nonce and a time, and a nonce is
 * accepted once.
 */

export type TrustPurpose = 'registry' | 'announce' | 'request' | 'receipt' | 'seal';

/** A request or announcement this far from our clock is refused (replicas run NTP). */
export const MAX_SKEW_MS = 60_000;
/** Nonces remembered at most (a flood of forged ones cannot grow memory without bound). */
const MAX_NONCES = 100_000;

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export class ClusterTrust {
  private readonly keys = new Map<TrustPurpose, Buffer>();
  /** Nonce → when it may be forgotten (past the skew window it would be refused anyway). */
  private readonly seen = new Map<string, number>();

  /** `context` separates clusters that share a secret by mistake (the key prefix). */
  constructor(secret: Buffer, context: string) {
    for (const purpose of ['registry', 'announce', 'request', 'receipt', 'seal'] as const) {
      this.keys.set(purpose, Buffer.from(hkdfSync('sha256', secret, `smtp-oauth-relay cluster ${context}`, `smtp-oauth-relay ${purpose} v2`, 32)));
    }
  }

  /** The AES-256 key that seals tokens shared in the store. */
  get sealKey(): Buffer {
    return this.keys.get('seal')!;
  }

  sign(purpose: TrustPurpose, parts: string[]): string {
    return createHmac('sha256', this.keys.get(purpose)!).update(parts.map((part) => `${part.length}:${part}`).join('\n')).digest('base64url');
  }

  verify(purpose: TrustPurpose, parts: string[], signature: string): boolean {
    const expected = Buffer.from(this.sign(purpose, parts));
    const given = Buffer.from(signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  nonce(): string {
    return randomBytes(16).toString('base64url');
  }

  /** True once for a nonce whose time is within the skew window; false for a replay or a stale time. */
  accept(nonce: string, at: number): boolean {
    const now = Date.now();
    if (!nonce || !Number.isFinite(at) || Math.abs(now - at) > MAX_SKEW_MS || this.seen.has(nonce)) return false;
    if (this.seen.size >= MAX_NONCES) this.forgetExpired(now);
    if (this.seen.size >= MAX_NONCES) return false; // a flood of valid signatures: refuse rather than forget a live nonce
    this.seen.set(nonce, now + 2 * MAX_SKEW_MS);
    return true;
  }

  private forgetExpired(now: number): void {
    for (const [nonce, until] of this.seen) if (until < now) this.seen.delete(nonce);
  }
}
