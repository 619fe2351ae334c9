import type { IncomingMessage } from 'node:http';
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
