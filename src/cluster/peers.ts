import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { internalSignature, validInternalSignature } from './handoff.js';

const MAX_BODY_BYTES = 16 * 1024;

/** Which replicas were asked: this one first; `error` says why one did not answer. */
export type ReplicaAnswers = { name: string; answered: boolean; error?: string }[];

export interface PeerAnswer<T> {
  name: string;
  answer?: T;
  /** Why it did not answer, in words for the console and the CLI. */
  error?: string;
}

/**
 * Asks each peer the same question at once over a signed internal endpoint (POST JSON), each
 * within the time limit; a peer that does not answer in time is named, never waited for longer.
 */
export function askPeers<T>(peers: { name: string; http: string }[], path: string, question: unknown, key: Buffer, timeoutMs: number): Promise<PeerAnswer<T>[]> {
  const body = JSON.stringify(question);
  return Promise.all(
    peers.map(async ({ name, http }): Promise<PeerAnswer<T>> => {
      const time = String(Date.now());
      try {
        const response = await fetch(`http://${http}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-relay-time': time, 'x-relay-signature': internalSignature(key, [time, path, body]) },
          body,
          signal: AbortSignal.timeout(timeoutMs),
        });
        if (response.status !== 200) return { name, error: `answered HTTP ${response.status}` };
        return { name, answer: (await response.json()) as T };
      } catch (error) {
        return { name, error: (error as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : (error as Error).message };
      }
    }),
  );
}

/** The question of a signed internal request to `path`, or undefined when it is not one (bad or stale signature, too large). */
export async function signedQuestion(request: IncomingMessage, path: string, key: Buffer): Promise<unknown> {
  let body = '';
  for await (const chunk of request) {
    body += chunk;
    if (body.length > MAX_BODY_BYTES) return undefined;
  }
  const time = String(request.headers['x-relay-time'] ?? '');
  if (!validInternalSignature(key, String(request.headers['x-relay-signature'] ?? ''), time, [path, body])) return undefined;
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

/** How one replica reaches the others: its name, the live peers, the shared key, the time limit. */
export interface PeerLinks {
  self: string;
  /** The other live replicas (name, http host:port); none without a cluster. */
  peers: () => Promise<{ name: string; http: string }[]>;
  /** Signs requests between replicas (from tokenKey); without it, everything stays local. */
  key?: Buffer;
  timeoutMs: number;
  logger: Logger;
}

/** Asks the live peers (or those named), and lists who was asked, this replica first. */
export async function fromPeers<T>(links: PeerLinks, path: string, question: unknown, only?: string): Promise<{ answers: { name: string; answer: T }[]; replicas: ReplicaAnswers }> {
  const peers = links.key ? (await links.peers().catch(() => [])).filter((peer) => only === undefined || peer.name === only) : [];
  const asked = links.key ? await askPeers<T>(peers, path, question, links.key, links.timeoutMs) : [];
  return {
    answers: asked.filter((entry): entry is { name: string; answer: T } => entry.answer !== undefined),
    replicas: [{ name: links.self, answered: true }, ...asked.map(({ name, error }) => ({ name, answered: error === undefined, error }))],
  };
}

/**
 * Serves signed internal POSTs at these paths with what `answer` gives for the question; false for
 * any other path. Without a key (no cluster) there is nothing to serve; a bad or stale signature
 * is refused.
 */
export async function serveSigned(request: IncomingMessage, response: ServerResponse, links: PeerLinks, paths: string[], answer: (path: string, question: unknown) => Promise<{ status?: number; body: unknown }>): Promise<boolean> {
  const path = (request.url ?? '').split('?')[0];
  if (!paths.includes(path)) return false;
  const send = (status: number, body: unknown) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  if (request.method !== 'POST' || !links.key) {
    request.resume();
    send(404, { error: 'answers between replicas need cluster: and tokenKey' });
    return true;
  }
  const question = await signedQuestion(request, path, links.key);
  if (question === undefined) {
    links.logger.warn({ clientIp: request.socket.remoteAddress, path }, 'internal request refused: bad or stale signature');
    send(403, { error: 'bad signature' });
    return true;
  }
  const { status = 200, body } = await answer(path, question);
  send(status, body);
  return true;
}
