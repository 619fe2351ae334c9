import type { IncomingMessage, ServerResponse } from 'node:http';
import type { QueueRecord, SpoolArea } from '../spool/index.js';
import { fromPeers, serveSigned, type PeerLinks, type ReplicaAnswers } from '../cluster-state/index.js';

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

const isAction = (value: Partial<QueueAction>): value is QueueAction =>
  ((value.action === 'retry' || value.action === 'delete') && typeof value.id === 'string') || (value.action === 'retry-all' && typeof value.account === 'string');

/**
 * Every replica's queue from one console: the lists are gathered over a signed internal endpoint,
 * and an action on a message is carried out by the replica whose spool holds it (only the owner
 * ever changes its records, as with the CLI and the control socket).
 */
export class ClusterQueue {
  constructor(private readonly options: PeerLinks & { local: LocalQueue }) {}

  async list(): Promise<{ entries: QueueEntry[]; replicas: ReplicaAnswers }> {
    const { local, self } = this.options;
    const mine = (await local.list()).map((entry) => ({ ...entry, replica: self }));
    const { answers, replicas } = await fromPeers<QueueEntry[]>(this.options, QUEUE_PATH, {});
    return { entries: [...mine, ...answers.flatMap(({ name, answer }) => answer.map((entry) => ({ ...entry, replica: name })))], replicas };
  }

  /** An action on one message, by the replica that holds it; Retry all, by every replica. */
  async act(replica: string | undefined, action: QueueAction): Promise<QueueActionResult | { error: string }> {
    const { local, self } = this.options;
    if (action.action === 'retry-all') {
      const { answers } = await fromPeers<{ count: number }>(this.options, QUEUE_ACTION_PATH, action);
      const here = (await local.act(action)) as { count: number };
      return { count: answers.reduce((sum, { answer }) => sum + answer.count, here.count) };
    }
    if (!replica || replica === self) return local.act(action);
    const { answers, replicas } = await fromPeers<QueueActionResult>(this.options, QUEUE_ACTION_PATH, action, replica);
    const asked = replicas.find((entry) => entry.name === replica);
    if (!asked) return { error: `replica ${replica} is not running (or not heard from): its messages can be changed when it is back` };
    return answers[0]?.answer ?? { error: `replica ${replica} did not answer (${asked.error})` };
  }

  /** POST /internal/queue and /internal/queue-action from a peer; false for other paths. */
  handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const { local, logger } = this.options;
    return serveSigned(request, response, this.options, [QUEUE_PATH, QUEUE_ACTION_PATH], async (path, question) => {
      if (path === QUEUE_PATH) return { body: await local.list() };
      if (!isAction(question as Partial<QueueAction>)) return { status: 400, body: { error: 'not a queue action' } };
      const action = question as QueueAction;
      logger.info({ action: action.action, from: request.socket.remoteAddress }, "queue action asked by another replica's console");
      return { body: await local.act(action) };
    });
  }
}
