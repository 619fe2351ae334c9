import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { internalSignature, validInternalSignature } from '../cluster/index.js';
import type { MessageTrace, TraceEvent } from './events.js';
import type { FoundEvents, TraceLog } from './file-trace-log.js';
import { selectMessages, type TraceQuery } from './query.js';

export const TRACE_PATH = '/internal/trace';
const MAX_QUERY_BYTES = 16 * 1024;

export interface TraceSearchResult {
  messages: MessageTrace[];
  /** Set when a replica's part was cut at its cap: older matches may be missing (narrow the search). */
  truncated?: boolean;
  /** Replicas asked: this one first; `error` says why one did not answer. */
  replicas: { name: string; answered: boolean; error?: string }[];
}

export interface TraceSearchOptions {
  log: TraceLog;
  /** This replica's name. */
  self: string;
  /** The other live replicas (name, http host:port); none without a cluster. */
  peers: () => Promise<{ name: string; http: string }[]>;
  /** Signs requests between replicas (from tokenKey); without it, searches stay local. */
  key?: Buffer;
  timeoutMs: number;
  logger: Logger;
}

/**
 * A delivery-log search on any replica covers every replica: the peers are asked in parallel over
 * the signed internal endpoint, each within the time limit, and the events merged per message
 * (a message handed over on scale-down has events on two replicas).
 */
export class TraceSearch {
  constructor(private readonly options: TraceSearchOptions) {}

  async search(query: TraceQuery): Promise<TraceSearchResult> {
    const { log, self, key } = this.options;
    const peers = key ? await this.options.peers().catch(() => []) : [];
    const [local, ...remote] = await Promise.all([log.events(query), ...peers.map((peer) => this.ask(peer.http, query))]);
    const events: (TraceEvent & { replica?: string })[] = local.events.map((event) => ({ ...event, replica: self }));
    let truncated = local.truncated;
    const replicas: TraceSearchResult['replicas'] = [{ name: self, answered: true }];
    remote.forEach((answer, index) => {
      const name = peers[index].name;
      if ('error' in answer) {
        replicas.push({ name, answered: false, error: answer.error });
        return;
      }
      replicas.push({ name, answered: true });
      truncated ||= answer.truncated;
      for (const event of answer.events) events.push({ ...event, replica: name });
    });
    return { messages: selectMessages(events, query), replicas, truncated: truncated || undefined };
  }

  /** POST /internal/trace from a peer: this replica's events for the query. False for other paths. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    if ((request.url ?? '').split('?')[0] !== TRACE_PATH) return false;
    const answer = (status: number, body: unknown) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const { key } = this.options;
    if (request.method !== 'POST' || !key) {
      request.resume();
      answer(404, { error: 'trace search between replicas needs cluster: and tokenKey' });
      return true;
    }
    const body = await readLimited(request, MAX_QUERY_BYTES);
    const time = String(request.headers['x-relay-time'] ?? '');
    if (body === undefined || !validInternalSignature(key, String(request.headers['x-relay-signature'] ?? ''), time, ['trace', body])) {
      this.options.logger.warn({ clientIp: request.socket.remoteAddress }, 'trace search refused: bad or stale signature');
      answer(403, { error: 'bad signature' });
      return true;
    }
    answer(200, await this.options.log.events(JSON.parse(body) as TraceQuery));
    return true;
  }

  private async ask(http: string, query: TraceQuery): Promise<FoundEvents | { error: string }> {
    const body = JSON.stringify(query);
    const time = String(Date.now());
    try {
      const response = await fetch(`http://${http}${TRACE_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-relay-time': time, 'x-relay-signature': internalSignature(this.options.key!, [time, 'trace', body]) },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      if (response.status !== 200) return { error: `answered HTTP ${response.status}` };
      return (await response.json()) as FoundEvents;
    } catch (error) {
      const name = (error as Error).name;
      return { error: name === 'TimeoutError' ? `no answer within ${this.options.timeoutMs / 1000} s` : (error as Error).message };
    }
  }
}

async function readLimited(request: IncomingMessage, limit: number): Promise<string | undefined> {
  let body = '';
  for await (const chunk of request) {
    body += chunk;
    if (body.length > limit) return undefined;
  }
  return body;
}
