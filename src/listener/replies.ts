import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/**
 * smtp-server derives the enhanced status code of a handler's error from the reply code alone
 * (550 → 5.1.1), so the upstream's own 5.7.60 or our 4.3.1 would be shown twice or wrongly.
 * Replies whose text already starts with an enhanced code keep it and get no second one.
 */
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;
type Send = (code: number, data: unknown, context?: unknown) => void;
const prototype = SMTPConnection.prototype as unknown as { send: Send & { ownEnhancedCodes?: true } };

if (!prototype.send.ownEnhancedCodes) {
  const originalSend = prototype.send;
  const send = function (this: unknown, code: number, data: unknown, context?: unknown) {
    const hasOwn = context === undefined && typeof data === 'string' && ENHANCED_PREFIX.test(data);
    return originalSend.call(this, code, data, hasOwn ? false : context);
  } as Send & { ownEnhancedCodes?: true };
  send.ownEnhancedCodes = true;
  prototype.send = send;
}
