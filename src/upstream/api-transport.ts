import type { Readable } from 'node:stream';
import type { ResolvedAccount, TransportName } from '../config/index.js';
import type { AccessTokens } from '../oauth/index.js';
import type { SmtpError } from '../reply.js';
import { classifyApiError } from './api-replies.js';
import { ApiClient, ApiRefusal, type ApiAnswer } from './http-api.js';
import type { Envelope, SendReceipt, Transport } from './transport.js';

/**
 * What Microsoft Graph and the Gmail API transports share: the bearer token from the token
 * manager (dropped when the API refuses it, so the one retry asks for a fresh one), the provider's
 * Retry-After, and the reading of refusals.
 */
export abstract class ApiTransport implements Transport {
  abstract readonly name: Exclude<TransportName, 'smtp'>;
  readonly maxRecipientsPerAttempt = undefined;
  readonly deliversToHeader = true;
  readonly sessionsPerConnection = false;
  protected readonly client: ApiClient;

  constructor(
    protected readonly account: ResolvedAccount,
    private readonly tokens: AccessTokens,
  ) {
    this.client = new ApiClient(account.upstream.apiUrl!, account.upstream.ca, account.upstream.timeoutMs);
  }

  abstract deliver(envelope: Envelope, message: Readable, signal?: AbortSignal): Promise<SendReceipt>;

  /** One authorised request; a refusal (any status but 2xx) rejects with the provider's words. */
  protected async call(path: string, options: { method: string; headers?: Record<string, string>; body?: Buffer | AsyncIterable<Buffer>; signal?: AbortSignal }): Promise<ApiAnswer> {
    const token = await this.tokens.getToken();
    const answer = await this.client.request(path, { ...options, headers: { ...options.headers, Authorization: `Bearer ${token}` } });
    if (answer.status >= 200 && answer.status < 300) return answer;
    if (answer.status === 401) this.tokens.invalidate(token);
    throw ApiRefusal.from(answer);
  }

  /** The mailbox in a URL path. */
  protected get user(): string {
    return encodeURIComponent(this.account.mailbox);
  }

  worthOneRetry(error: unknown): boolean {
    return error instanceof ApiRefusal && error.status === 401;
  }

  pauseAsked(error: unknown): number | undefined {
    return error instanceof ApiRefusal && (error.status === 429 || error.status === 503) ? error.retryAfterMs : undefined;
  }

  classify(error: unknown, account: string): SmtpError {
    return classifyApiError(error, account, this.name);
  }

  close(): void {}
}
