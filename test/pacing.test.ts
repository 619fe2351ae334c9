import { describe, expect, it } from 'vitest';
import { Pacer } from '../src/upstream/pacing.js';
import { nextDelayMs } from '../src/spool/retry-policy.js';

// Pure timing rules, checked on a clock the test controls (the queue tests check them over sockets).
describe('sending pace', () => {
  it('allows 30 messages a minute (Exchange Online) and no 31st until the first leaves the window', () => {
    const pacer = new Pacer({ messagesPerMinute: 30 });
    const start = 1_000_000;
    for (let i = 0; i < 30; i++) {
      expect(pacer.waitMs(1, start + i * 100)).toBe(0);
      pacer.record(1, start + i * 100);
    }
    expect(pacer.waitMs(1, start + 3000)).toBe(60_000 - 3000);
    expect(pacer.waitMs(1, start + 60_000)).toBe(0);
  });

  it('caps recipients a day and messages a day (Gmail)', () => {
    const pacer = new Pacer({ messagesPerDay: 2000, recipientsPerDay: 10 });
    pacer.record(6, 0);
    expect(pacer.waitMs(4, 1000)).toBe(0);
    expect(pacer.waitMs(5, 1000)).toBe(86_400_000 - 1000);
    const daily = new Pacer({ messagesPerDay: 2 });
    daily.record(1, 0);
    daily.record(1, 10);
    expect(daily.waitMs(1, 20)).toBe(86_400_000 - 20);
  });

  it('lets a message with more recipients than a whole day allows go once the window is empty', () => {
    const pacer = new Pacer({ recipientsPerDay: 10 });
    expect(pacer.waitMs(50, 0)).toBe(0);
  });

  it('backs off exponentially with jitter, up to the maximum delay', () => {
    const policy = { initialDelayMs: 60_000, maxDelayMs: 3_600_000, maxAgeMs: 5 * 86_400_000 };
    expect(nextDelayMs(policy, 1, () => 0.5)).toBe(60_000);
    expect(nextDelayMs(policy, 2, () => 0.5)).toBe(120_000);
    expect(nextDelayMs(policy, 3, () => 0)).toBe(192_000);
    expect(nextDelayMs(policy, 20, () => 1)).toBe(4_320_000);
  });
});
