import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto';

/** Secrets at rest (the token store) and in a shared store (the cluster), sealed with the configured tokenKey. */
export interface SealedFile {
  version: 1;
  cipher: 'aes-256-gcm';
  iv: string;
  tag: string;
  data: string;
}

const GCM_TAG_BYTES = 16;

/** The AES-256 key for a configured tokenKey (any long string; stretched with scrypt). */
export function deriveKey(tokenKey: string): Buffer {
  return scryptSync(tokenKey, 'smtp-oauth-relay token store v1', 32);
}

/**
 * AES-256-GCM with a fresh IV: what the token store writes, and what a cluster shares. `context`
 * (associated data: where the value lives) must be given again to open it, so a sealed value
 * copied to another account's key does not open there.
 */
export function sealText(key: Buffer, plain: string, context?: string): SealedFile {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  if (context !== undefined) cipher.setAAD(Buffer.from(context));
  const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return { version: 1, cipher: 'aes-256-gcm', iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/** The text sealed by sealText; throws when the key is wrong or anything was altered. */
export function openText(key: Buffer, sealed: Partial<SealedFile>, context?: string): string {
  const tag = Buffer.from(sealed.tag ?? '', 'base64');
  if (tag.length !== GCM_TAG_BYTES) throw new Error('short tag'); // a truncated tag would weaken the check
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv ?? '', 'base64'), { authTagLength: GCM_TAG_BYTES });
  decipher.setAuthTag(tag);
  if (context !== undefined) decipher.setAAD(Buffer.from(context));
  return Buffer.concat([decipher.update(Buffer.from(sealed.data ?? '', 'base64')), decipher.final()]).toString('utf8');
}

