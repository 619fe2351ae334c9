import type { IncomingMessage, ServerResponse } from 'node:http';
import { fromPeers, serveSigned, type PeerLinks, type ReplicaAnswers } from '../cluster-state/index.js';
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

export interface ClusterLogOptions extends PeerLinks {
  log: TraceLog;
  activity: Activity;
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
    const { answers, replicas } = await fromPeers<FoundEvents>(this.options, TRACE_PATH, query);
    const events: (TraceEvent & { replica?: string })[] = local.events.map((event) => ({ ...event, replica: this.options.self }));
    for (const { name, answer } of answers) for (const event of answer.events) events.push({ ...event, replica: name });
    const truncated = local.truncated || answers.some(({ answer }) => answer.truncated);
    return { messages: selectMessages(events, query), replicas, truncated: truncated || undefined };
  }

  /** Today's counts, the 24-hour chart and the devices, added up over the replicas that answered. */
  async activity(accounts: string[], users: string[]): Promise<{ view: ActivityView; replicas: ReplicaAnswers }> {
    const { answers, replicas } = await fromPeers<ActivitySnapshot>(this.options, ACTIVITY_PATH, { accounts, users });
    if (answers.length === 0) return { view: this.options.activity, replicas };
    return { view: mergeActivity([this.options.activity.snapshot(accounts, users), ...answers.map(({ answer }) => answer)]), replicas };
  }

  /** POST /internal/trace and /internal/activity from a peer; false for other paths. */
  handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    return serveSigned(request, response, this.options, [TRACE_PATH, ACTIVITY_PATH], async (path, question) => {
      if (path === TRACE_PATH) return { body: await this.options.log.events(question as TraceQuery) };
      const { accounts, users } = question as { accounts: unknown; users: unknown };
      const names = (list: unknown) => (Array.isArray(list) ? list.filter((item): item is string => typeof item === 'string').slice(0, 10_000) : []);
      return { body: this.options.activity.snapshot(names(accounts), names(users)) };
    });
  }
}
