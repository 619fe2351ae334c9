import { randomBytes } from 'node:crypto';

/** Bytes of randomness a cluster secret must carry at least. */
export const MIN_SECRET_BYTES = 32;

/**
 * The secret's bytes: base64 (or base64url) or hex text of at least 32 bytes with some variety,
 * else undefined (a word, a short key or a repeated byte is not a secret).
 */
export function decodeClusterSecret(text: string): Buffer | undefined {
  const trimmed = text.trim();
  const bytes = /^[0-9a-f]+$/i.test(trimmed) && trimmed.length % 2 === 0 ? Buffer.from(trimmed, 'hex') : /^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed) ? Buffer.from(trimmed, 'base64') : undefined;
  if (!bytes || bytes.length < MIN_SECRET_BYTES || new Set(bytes).size < MIN_SECRET_BYTES / 2) return undefined;
  return bytes;
}

/** A new cluster secret: 32 random bytes, base64. */
export function generateClusterSecret(): string {
  return randomBytes(MIN_SECRET_BYTES).toString('base64');
}
