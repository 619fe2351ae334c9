import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { askPeers, signedQuestion, type ReplicaAnswers } from '../cluster/index.js';
import type { MessageTrace, TraceEvent } from './events.js';
import type { FoundEvents, TraceLog } from './file-trace-log.js';
import { selectMessages, type TraceQuery } from './query.js';
import { mergeActivity, type Activity, type ActivitySnapshot, type ActivityView } from './activity.js';

export const TRACE_PATH = '/internal/trace';
export const ACTIVITY_PATH = '/internal/activity';

export type { ReplicaAnswers };

export interface TraceSearchResult {
  messages: MessageTrace[];
  /** Set when a replica's part was cut at its cap: older matches may be missing (narrow the search). */
  truncated?: boolean;
  replicas: ReplicaAnswers;
}

export interface ClusterLogOptions {
  log: TraceLog;
  activity: Activity;
  /** This replica's name. */
  self: string;
  /** The other live replicas (name, http host:port); none without a cluster. */
  peers: () => Promise<{ name: string; http: string }[]>;
  /** Signs requests between replicas (from tokenKey); without it, everything stays local. */
  key?: Buffer;
  timeoutMs: number;
  logger: Logger;
}

/**
 * The delivery log and the console's counts, for the whole cluster from any replica: the peers are
 * asked in parallel over signed internal endpoints, each within the time limit, and the answers
 * merged (a message handed over on scale-down has events on two replicas; a device's messages are
 * spread over all of them). A replica that does not answer is named.
 */
export class ClusterLog {
  constructor(private readonly options: ClusterLogOptions) {}

  async search(query: TraceQuery): Promise<TraceSearchResult> {
    const local = await this.options.log.events(query);
    const { answers, replicas } = await this.fromPeers<FoundEvents>(TRACE_PATH, query);
    const events: (TraceEvent & { replica?: string })[] = local.events.map((event) => ({ ...event, replica: this.options.self }));
    for (const { name, answer } of answers) for (const event of answer.events) events.push({ ...event, replica: name });
    const truncated = local.truncated || answers.some(({ answer }) => answer.truncated);
    return { messages: selectMessages(events, query), replicas, truncated: truncated || undefined };
  }

  /** Today's counts, the 24-hour chart and the devices, added up over the replicas that answered. */
  async activity(accounts: string[], users: string[]): Promise<{ view: ActivityView; replicas: ReplicaAnswers }> {
    const { answers, replicas } = await this.fromPeers<ActivitySnapshot>(ACTIVITY_PATH, { accounts, users });
    if (answers.length === 0) return { view: this.options.activity, replicas };
    return { view: mergeActivity([this.options.activity.snapshot(accounts, users), ...answers.map(({ answer }) => answer)]), replicas };
  }

  /** POST /internal/trace and /internal/activity from a peer; false for other paths. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const path = (request.url ?? '').split('?')[0];
    if (path !== TRACE_PATH && path !== ACTIVITY_PATH) return false;
    const answer = (status: number, body: unknown) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const { key } = this.options;
    if (request.method !== 'POST' || !key) {
      request.resume();
      answer(404, { error: 'answers between replicas need cluster: and tokenKey' });
      return true;
    }
    const question = await signedQuestion(request, path, key);
    if (question === undefined) {
      this.options.logger.warn({ clientIp: request.socket.remoteAddress, path }, 'internal request refused: bad or stale signature');
      answer(403, { error: 'bad signature' });
      return true;
    }
    if (path === TRACE_PATH) answer(200, await this.options.log.events(question as TraceQuery));
    else {
      const { accounts, users } = question as { accounts: unknown; users: unknown };
      const names = (list: unknown) => (Array.isArray(list) ? list.filter((item): item is string => typeof item === 'string').slice(0, 10_000) : []);
      answer(200, this.options.activity.snapshot(names(accounts), names(users)));
    }
    return true;
  }

  private async fromPeers<T>(path: string, question: unknown): Promise<{ answers: { name: string; answer: T }[]; replicas: ReplicaAnswers }> {
    const { self, key, timeoutMs } = this.options;
    const peers = key ? await this.options.peers().catch(() => []) : [];
    const asked = key ? await askPeers<T>(peers, path, question, key, timeoutMs) : [];
    return {
      answers: asked.filter((entry): entry is { name: string; answer: T } => entry.answer !== undefined),
      replicas: [{ name: self, answered: true }, ...asked.map(({ name, error }) => ({ name, answered: error === undefined, error }))],
    };
  }
}
