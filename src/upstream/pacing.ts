import type { SendingLimits } from '../config/index.js';

const MINUTE = 60_000;
const DAY = 86_400_000;

/**
 * Sliding-window limits per account (messages a minute, messages and recipients a day), so the
 * relay paces itself under the provider's ceilings instead of collecting 4.x throttling replies.
 * Counts live in memory: after a restart the windows start empty.
 */
export class Pacer {
  private readonly sends: number[] = [];
  private readonly recipients: { at: number; count: number }[] = [];

  constructor(private readonly limits: SendingLimits) {}

  /**
   * Milliseconds until a message to this many recipients may go (0: now). A message sent in
   * several transactions (more recipients than one takes) counts as that many messages, as the
   * provider counts them; never more than a whole window, or it could never go.
   */
  waitMs(recipientCount: number, now = Date.now(), transactions = 1): number {
    this.prune(now);
    let wait = 0;
    const { messagesPerMinute, messagesPerDay, recipientsPerDay } = this.limits;
    if (messagesPerMinute !== undefined) {
      wait = Math.max(wait, windowWait(this.sends.filter((at) => at > now - MINUTE), messagesPerMinute, transactions, MINUTE, now));
    }
    if (messagesPerDay !== undefined) wait = Math.max(wait, windowWait(this.sends, messagesPerDay, transactions, DAY, now));
    if (recipientsPerDay !== undefined) {
      let total = recipientCount + this.recipients.reduce((sum, entry) => sum + entry.count, 0);
      for (const entry of this.recipients) {
        if (total <= recipientsPerDay) break;
        total -= entry.count;
        wait = Math.max(wait, entry.at + DAY - now);
      }
    }
    return Math.max(0, wait);
  }

  record(recipientCount: number, now = Date.now(), transactions = 1): void {
    for (let i = 0; i < transactions; i++) this.sends.push(now);
    this.recipients.push({ at: now, count: recipientCount });
  }

  private prune(now: number): void {
    while (this.sends.length && this.sends[0] <= now - DAY) this.sends.shift();
    while (this.recipients.length && this.recipients[0].at <= now - DAY) this.recipients.shift();
  }
}

/** How long until `needed` more sends fit in a window that allows `limit` (sends: oldest first). */
function windowWait(sends: number[], limit: number, needed: number, window: number, now: number): number {
  const need = Math.min(needed, limit);
  const over = sends.length + need - limit;
  return over > 0 ? sends[over - 1] + window - now : 0;
}
