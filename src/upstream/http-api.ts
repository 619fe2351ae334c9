import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';

/** An API's answer is read up to this much (its error bodies are small; a mail API returns no mail). */
const MAX_ANSWER_BYTES = 256 * 1024;

interface RequestOptions {
  method: string;
  headers: Record<string, string>;
  body?: Buffer | Readable | AsyncIterable<Buffer>;
  signal?: AbortSignal;
}

export interface ApiAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A provider API refused the request: its HTTP status, its own error code and words, and how long
 * it asked the client to wait (Retry-After), as both Microsoft Graph and Google APIs send them.
 */
export class ApiRefusal extends Error {
  constructor(
    readonly status: number,
    /** Graph's error.code (ErrorAccessDenied, ...), Google's errors[0].reason (rateLimitExceeded, ...). */
    readonly code: string,
    readonly words: string,
    readonly retryAfterMs?: number,
  ) {
    super(`HTTP ${status} ${code}: ${words}`);
    this.name = 'ApiRefusal';
  }

  /** The provider's words as the delivery log and the console show them. */
  get response(): string {
    return this.message;
  }

  static from(answer: ApiAnswer): ApiRefusal {
    const { code, words } = errorOf(answer);
    return new ApiRefusal(answer.status, code, words, retryAfterMs(answer.headers['retry-after']));
  }
}

/**
 * HTTPS requests to one provider API. Redirects are never followed (a 3xx is a refusal like any
 * other): the bearer token and the message go only where the configuration says.
 */
export class ApiClient {
  private readonly ca?: Buffer;

  constructor(
    private readonly baseUrl: string,
    caFile: string | undefined,
    private readonly timeoutMs: number,
  ) {
    this.ca = caFile ? readFileSync(caFile) : undefined;
  }

  /** Sends the request; the body streams, and aborting `signal` before its end leaves the request unfinished. */
  request(path: string, options: RequestOptions): Promise<ApiAnswer> {
    return this.requestUrl(new URL(this.baseUrl + path), options);
  }

  /**
   * A request to a URL the API handed out (an upload session): only over the API's own protocol
   * (https, or http for a local stand-in), and never with the bearer token.
   */
  requestUrl(url: URL, options: RequestOptions): Promise<ApiAnswer> {
    if (url.protocol !== new URL(this.baseUrl).protocol) return Promise.reject(new Error(`the API handed out a ${url.protocol} URL; only ${new URL(this.baseUrl).protocol} is used`));
    const client = url.protocol === 'https:' ? https : http;
    return new Promise<ApiAnswer>((resolve, reject) => {
      const request = client.request(url, { method: options.method, headers: options.headers, ca: this.ca, minVersion: 'TLSv1.2', signal: options.signal, timeout: this.timeoutMs });
      request.on('timeout', () => request.destroy(Object.assign(new Error(`no answer from ${url.host} within ${this.timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })));
      request.on('error', reject);
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size <= MAX_ANSWER_BYTES) chunks.push(chunk);
        });
        response.on('error', reject);
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
      });
      void writeBody(request, options.body).catch((error: unknown) => request.destroy(error as Error));
    });
  }
}

async function writeBody(request: http.ClientRequest, body: Buffer | Readable | AsyncIterable<Buffer> | undefined): Promise<void> {
  if (body === undefined || Buffer.isBuffer(body)) return void request.end(body);
  for await (const chunk of body) {
    if (request.destroyed) return;
    if (!request.write(chunk)) await drainedOrClosed(request);
  }
  if (!request.destroyed) request.end();
}

function drainedOrClosed(request: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      request.off('drain', done);
      request.off('close', done);
      resolve();
    };
    request.on('drain', done);
    request.on('close', done);
  });
}

/** Graph: {error: {code, message}}; Google: {error: {code: 403, message, status, errors: [{reason}]}}. */
function errorOf(answer: ApiAnswer): { code: string; words: string } {
  try {
    const { error } = JSON.parse(answer.body.toString('utf8')) as { error?: { code?: unknown; message?: unknown; status?: unknown; errors?: { reason?: unknown }[] } };
    const reason = error?.errors?.[0]?.reason ?? (typeof error?.code === 'string' ? error.code : error?.status);
    return { code: typeof reason === 'string' ? reason : String(answer.status), words: oneLine(typeof error?.message === 'string' ? error.message : '') };
  } catch {
    return { code: String(answer.status), words: oneLine(answer.body.subarray(0, 200).toString('utf8')) };
  }
}

function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim().slice(0, 500);
}

/** RFC 9110 §10.2.3: seconds, or an HTTP date. */
export function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
