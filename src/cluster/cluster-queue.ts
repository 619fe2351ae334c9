import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { QueueRecord, SpoolArea } from '../spool/index.js';
import { askPeers, signedQuestion, type ReplicaAnswers } from './peers.js';

export const QUEUE_PATH = '/internal/queue';
export const QUEUE_ACTION_PATH = '/internal/queue-action';

/** A message waiting, being delivered or kept after failing, on some replica. */
export interface QueueEntry {
  record: QueueRecord;
  area: SpoolArea;
  inFlight: boolean;
  held: boolean;
  /** The replica whose spool holds it (set in a cluster). */
  replica?: string;
}

export type QueueAction = { action: 'retry'; id: string } | { action: 'delete'; id: string } | { action: 'retry-all'; account: string };
export type QueueActionResult = { count: number } | { outcome: 'deleted' | 'in_flight' | 'not_found' };

/** What this replica's own queue can do (its delivery agent and spool). */
export interface LocalQueue {
  list(): Promise<QueueEntry[]>;
  act(action: QueueAction): Promise<QueueActionResult>;
}

export interface ClusterQueueOptions {
  local: LocalQueue;
  self: string;
  peers: () => Promise<{ name: string; http: string }[]>;
  key?: Buffer;
  timeoutMs: number;
  logger: Logger;
}

/**
 * Every replica's queue from one console: the lists are gathered over a signed internal endpoint,
 * and an action on a message is carried out by the replica whose spool holds it (only the owner
 * ever changes its records, as with the CLI and the control socket).
 */
export class ClusterQueue {
  constructor(private readonly options: ClusterQueueOptions) {}

  async list(): Promise<{ entries: QueueEntry[]; replicas: ReplicaAnswers }> {
    const { local, self } = this.options;
    const mine = (await local.list()).map((entry) => ({ ...entry, replica: self }));
    const asked = await this.ask<QueueEntry[]>(await this.peers(), QUEUE_PATH, {});
    const entries = [...mine, ...asked.flatMap(({ name, answer }) => (answer ?? []).map((entry) => ({ ...entry, replica: name })))];
    return { entries, replicas: [{ name: self, answered: true }, ...asked.map(({ name, error }) => ({ name, answered: !error, error }))] };
  }

  /** An action on one message, by the replica that holds it; Retry all, by every replica. */
  async act(replica: string | undefined, action: QueueAction): Promise<QueueActionResult | { error: string }> {
    const { local, self } = this.options;
    if (action.action === 'retry-all') {
      const counts = [(await local.act(action)) as { count: number }, ...(await this.ask<{ count: number }>(await this.peers(), QUEUE_ACTION_PATH, action)).map(({ answer }) => answer ?? { count: 0 })];
      return { count: counts.reduce((sum, answer) => sum + answer.count, 0) };
    }
    if (!replica || replica === self) return local.act(action);
    const peer = (await this.peers()).find((candidate) => candidate.name === replica);
    if (!peer) return { error: `replica ${replica} is not running (or not heard from): its messages can be changed when it is back` };
    const [answer] = await this.ask<QueueActionResult>([peer], QUEUE_ACTION_PATH, action);
    return answer.answer ?? { error: `replica ${replica} did not answer (${answer.error})` };
  }

  /** POST /internal/queue and /internal/queue-action from a peer; false for other paths. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const path = (request.url ?? '').split('?')[0];
    if (path !== QUEUE_PATH && path !== QUEUE_ACTION_PATH) return false;
    const answer = (status: number, body: unknown) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const { key, local } = this.options;
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
    if (path === QUEUE_PATH) answer(200, await local.list());
    else {
      const action = question as QueueAction;
      const valid = (action.action === 'retry' || action.action === 'delete') ? typeof action.id === 'string' : action.action === 'retry-all' && typeof action.account === 'string';
      if (!valid) answer(400, { error: 'not a queue action' });
      else {
        this.options.logger.info({ action: action.action, from: request.socket.remoteAddress }, 'queue action asked by another replica\'s console');
        answer(200, await local.act(action));
      }
    }
    return true;
  }

  private async peers(): Promise<{ name: string; http: string }[]> {
    return this.options.key ? this.options.peers().catch(() => []) : [];
  }

  private ask<T>(peers: { name: string; http: string }[], path: string, question: unknown) {
    return this.options.key ? askPeers<T>(peers, path, question, this.options.key, this.options.timeoutMs) : Promise.resolve([]);
  }
}
