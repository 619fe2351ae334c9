import type { ResolvedAccount } from '../config/index.js';
import { requestToken } from '../oauth/index.js';
import { ApiClient, ApiRefusal } from '../upstream/index.js';

/** What the provider says it did with a message, per recipient (Exchange: delivered, filteredAsSpam, quarantined, ...). */
export interface ProviderTraceEntry {
  recipient: string;
  status: string;
  receivedAt?: string;
  /** The provider's own events for that recipient, oldest first. */
  details: { at: string; event: string; description: string }[];
}

export type ProviderTraceResult = { entries: ProviderTraceEntry[]; askedAt: string } | { unavailable: string };

/**
 * Microsoft allows 100 message trace requests (list and detail together) per tenant in a 5-minute
 * running window ("Message Trace support using Graph API", Exchange Team blog, January 2026). The
 * console stays well under it, leaving room for the administrator's own tools.
 */
const WINDOW_MS = 5 * 60_000;
const REQUESTS_PER_WINDOW = 60;
/** Details are asked for this many recipients at most (each is one request). */
const DETAILED_RECIPIENTS = 3;
/** A final status is kept this long; one still moving (pending, gettingStatus) a minute. */
const FINAL_TTL_MS = 30 * 60_000;
const MOVING_TTL_MS = 60_000;
const MAX_CACHED = 500;
const FINAL_STATUSES = new Set(['delivered', 'failed', 'quarantined', 'filteredAsSpam', 'expanded']);

/** Request times per tenant (token endpoint): every account of one tenant shares Microsoft's budget. */
const budgets = new Map<string, number[]>();

/**
 * The console's question to Exchange Online: what happened to this Message-ID? Microsoft Graph's
 * message trace (`GET /v1.0/admin/exchange/tracing/messageTraces`, application permission
 * ExchangeMessageTrace.Read.All), asked on demand, cached, and within Microsoft's rate limit. It
 * signs in as the app with the account's own client credential (its sending token is for another
 * resource, or a user).
 */
export class ExchangeMessageTrace {
  private readonly client: ApiClient;
  private token?: { value: string; until: number };
  private readonly cache = new Map<string, { result: ProviderTraceResult; until: number }>();

  constructor(private readonly account: ResolvedAccount) {
    this.client = new ApiClient(account.upstream.apiUrl ?? 'https://graph.microsoft.com', account.upstream.ca, Math.min(account.upstream.timeoutMs, 15_000));
  }

  async lookup(messageId: string, receivedAt: string): Promise<ProviderTraceResult> {
    const cached = this.cache.get(messageId);
    if (cached && cached.until > Date.now()) return cached.result;
    const result = await this.ask(messageId, receivedAt).catch((error: unknown) => ({ unavailable: explain(error) }));
    this.remember(messageId, result);
    return result;
  }

  private async ask(messageId: string, receivedAt: string): Promise<ProviderTraceResult> {
    const wait = this.takeBudget(1);
    if (wait) return { unavailable: `Exchange's message trace was asked ${REQUESTS_PER_WINDOW} times in 5 minutes (Microsoft allows 100 per tenant): try again in ${Math.ceil(wait / 1000)} s` };
    // Exchange records a message within minutes of its arrival; the window reaches from an hour before.
    const from = new Date(Date.parse(receivedAt) - 3_600_000).toISOString();
    const to = new Date(Math.max(Date.now(), Date.parse(receivedAt) + 3_600_000)).toISOString();
    const filter = `messageId eq '${messageId.replace(/'/g, "''")}' and receivedDateTime ge ${from} and receivedDateTime le ${to}`;
    const list = (await this.get(`/v1.0/admin/exchange/tracing/messageTraces?$filter=${encodeURIComponent(filter)}`)) as { value?: TraceRow[] };
    const rows = (list.value ?? []).filter((row) => typeof row.recipientAddress === 'string');
    const entries: ProviderTraceEntry[] = [];
    for (const [index, row] of rows.entries()) {
      const detailed = index < DETAILED_RECIPIENTS && typeof row.id === 'string' && this.takeBudget(1) === 0;
      entries.push({ recipient: row.recipientAddress!, status: String(row.status ?? 'unknown'), receivedAt: row.receivedDateTime, details: detailed ? await this.details(row.id!, row.recipientAddress!) : [] });
    }
    return { entries, askedAt: new Date().toISOString() };
  }

  private async details(traceId: string, recipient: string): Promise<ProviderTraceEntry['details']> {
    const path = `/v1.0/admin/exchange/tracing/messageTraces/${encodeURIComponent(traceId)}/getDetailsByRecipient(recipientAddress='${encodeURIComponent(recipient.replace(/'/g, "''"))}')`;
    const answer = (await this.get(path)) as { value?: { dateTime?: string; event?: string; description?: string }[] };
    return (answer.value ?? []).map((detail) => ({ at: String(detail.dateTime ?? ''), event: String(detail.event ?? ''), description: String(detail.description ?? '') }));
  }

  private async get(path: string): Promise<unknown> {
    const token = await this.appToken();
    const answer = await this.client.request(path, { method: 'GET', headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } });
    if (answer.status === 401) this.token = undefined;
    if (answer.status !== 200) throw ApiRefusal.from(answer);
    return JSON.parse(answer.body.toString('utf8')) as unknown;
  }

  private async appToken(): Promise<string> {
    if (this.token && this.token.until > Date.now()) return this.token.value;
    const { status, body } = await requestToken(this.account, { grant_type: 'client_credentials', scope: 'https://graph.microsoft.com/.default' });
    if (status >= 400 || typeof body.access_token !== 'string') throw new Error(`the token endpoint refused the app's sign-in for Microsoft Graph (${String(body.error ?? status)})`);
    this.token = { value: body.access_token, until: Date.now() + (Number(body.expires_in) || 3600) * 1000 - 60_000 };
    return this.token.value;
  }

  /** 0 when `count` more requests fit in the tenant's window (they are counted), else ms until they do. */
  private takeBudget(count: number): number {
    const now = Date.now();
    const times = (budgets.get(this.account.tokenUrl) ?? []).filter((at) => at > now - WINDOW_MS);
    budgets.set(this.account.tokenUrl, times);
    if (times.length + count > REQUESTS_PER_WINDOW) return times[times.length + count - REQUESTS_PER_WINDOW - 1] + WINDOW_MS - now;
    for (let i = 0; i < count; i++) times.push(now);
    return 0;
  }

  private remember(messageId: string, result: ProviderTraceResult): void {
    const final = 'entries' in result && result.entries.length > 0 && result.entries.every((entry) => FINAL_STATUSES.has(entry.status));
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(messageId, { result, until: Date.now() + (final ? FINAL_TTL_MS : MOVING_TTL_MS) });
  }
}

interface TraceRow {
  id?: string;
  recipientAddress?: string;
  status?: string;
  receivedDateTime?: string;
}

function explain(error: unknown): string {
  if (error instanceof ApiRefusal && error.status === 403) return `Exchange refused the message trace (${error.message}): grant the app the Microsoft Graph application permission ExchangeMessageTrace.Read.All with admin consent`;
  if (error instanceof ApiRefusal) return `Exchange's message trace answered ${error.message}`;
  return `Exchange's message trace could not be asked: ${(error as Error).message}`;
}
