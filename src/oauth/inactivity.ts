const DAY = 86_400_000;
/** Microsoft ends refresh tokens unused for 90 days; Google after six months. */
const UNUSED_LIMIT_DAYS: Record<string, number> = { microsoft: 90, google: 180 };
const WARN_DAYS_BEFORE = 14;

export interface UnusedExpiry {
  /** When the refresh token dies if it is not used before. */
  at: number;
  daysLeft: number;
  /** Set within two weeks of that day. */
  warning?: string;
}

/** When a refresh token last used at `lastUsed` dies unused, for providers that publish it. */
export function unusedExpiry(provider: string, lastUsed: number | undefined, now = Date.now()): UnusedExpiry | undefined {
  const limit = UNUSED_LIMIT_DAYS[provider];
  if (!limit || lastUsed === undefined) return undefined;
  const at = lastUsed + limit * DAY;
  const daysLeft = Math.max(0, Math.floor((at - now) / DAY));
  const warning = daysLeft <= WARN_DAYS_BEFORE ? `the refresh token dies in ${daysLeft} day(s) unless it is used: check why refreshes fail, or sign in again` : undefined;
  return { at, daysLeft, warning };
}
