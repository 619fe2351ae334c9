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

  /** Milliseconds until a message to this many recipients may go (0: now). */
  waitMs(recipientCount: number, now = Date.now()): number {
    this.prune(now);
    let wait = 0;
    const { messagesPerMinute, messagesPerDay, recipientsPerDay } = this.limits;
    if (messagesPerMinute !== undefined) {
      const lastMinute = this.sends.filter((at) => at > now - MINUTE);
      if (lastMinute.length >= messagesPerMinute) wait = Math.max(wait, lastMinute[lastMinute.length - messagesPerMinute] + MINUTE - now);
    }
    if (messagesPerDay !== undefined && this.sends.length >= messagesPerDay) {
      wait = Math.max(wait, this.sends[this.sends.length - messagesPerDay] + DAY - now);
    }
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

  record(recipientCount: number, now = Date.now()): void {
    this.sends.push(now);
    this.recipients.push({ at: now, count: recipientCount });
  }

  private prune(now: number): void {
    while (this.sends.length && this.sends[0] <= now - DAY) this.sends.shift();
    while (this.recipients.length && this.recipients[0].at <= now - DAY) this.recipients.shift();
  }
}
