import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { sha256Hex, type ClusterTrust } from './trust.js';

const MAX_BODY_BYTES = 16 * 1024;

/**
 * A request from one replica to another is signed over its method, path, sender, receiver, time,
 * nonce and body digest: it is good at that one replica, once, for a minute.
 */
export function signedRequestHeaders(trust: ClusterTrust, from: string, to: string, path: string, bodyDigest: string): Record<string, string> {
  const time = String(Date.now());
  const nonce = trust.nonce();
  return {
    'x-relay-from': from,
    'x-relay-to': to,
    'x-relay-time': time,
    'x-relay-nonce': nonce,
    'x-relay-signature': trust.sign('request', ['POST', path, from, to, time, nonce, bodyDigest]),
  };
}

/** The sender's name and the request's nonce when the request was signed for this replica, recently, and not seen before. */
export function verifiedRequest(trust: ClusterTrust, self: string, headers: IncomingHttpHeaders, path: string, bodyDigest: string): { from: string; nonce: string } | undefined {
  const [from, to, time, nonce, signature] = ['x-relay-from', 'x-relay-to', 'x-relay-time', 'x-relay-nonce', 'x-relay-signature'].map((name) => String(headers[name] ?? ''));
  if (to !== self || !trust.verify('request', ['POST', path, from, to, time, nonce, bodyDigest], signature)) return undefined;
  return trust.accept(nonce, Number(time)) ? { from, nonce } : undefined;
}

/** fetch to another replica: never follows a redirect (a fake peer would turn it into a request elsewhere, body and signature included). */
export async function fetchPeer(url: string, init: RequestInit): Promise<Response> {
  const response = await fetch(url, { ...init, redirect: 'manual' });
  if (response.status >= 300 && response.status < 400) {
    await response.body?.cancel();
    throw new Error(`answered with a redirect (HTTP ${response.status}), which is not followed`);
  }
  return response;
}

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
export function askPeers<T>(peers: { name: string; http: string }[], path: string, question: unknown, links: { self: string; trust: ClusterTrust; timeoutMs: number }): Promise<PeerAnswer<T>[]> {
  const body = JSON.stringify(question);
  const digest = sha256Hex(body);
  const { timeoutMs } = links;
  return Promise.all(
    peers.map(async ({ name, http }): Promise<PeerAnswer<T>> => {
      try {
        const response = await fetchPeer(`http://${http}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...signedRequestHeaders(links.trust, links.self, name, path, digest) },
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

/** The question of a signed internal request to `path`, or undefined when it is not one (bad, stale or replayed signature, too large). */
export async function signedQuestion(request: IncomingMessage, path: string, trust: ClusterTrust, self: string): Promise<unknown> {
  let body = '';
  for await (const chunk of request) {
    body += chunk;
    if (body.length > MAX_BODY_BYTES) return undefined;
  }
  if (!verifiedRequest(trust, self, request.headers, path, sha256Hex(body))) return undefined;
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
  /** Signs requests between replicas (cluster.secret); without it, everything stays local. */
  trust?: ClusterTrust;
  timeoutMs: number;
  logger: Logger;
  /** Counts a refused internal request (smtp_relay_cluster_untrusted_total{kind="request"}). */
  onUntrusted?: () => void;
}

/** Asks the live peers (or those named), and lists who was asked, this replica first. */
export async function fromPeers<T>(links: PeerLinks, path: string, question: unknown, only?: string): Promise<{ answers: { name: string; answer: T }[]; replicas: ReplicaAnswers }> {
  const { trust } = links;
  const peers = trust ? (await links.peers().catch(() => [])).filter((peer) => only === undefined || peer.name === only) : [];
  const asked = trust ? await askPeers<T>(peers, path, question, { self: links.self, trust, timeoutMs: links.timeoutMs }) : [];
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
  if (request.method !== 'POST' || !links.trust) {
    request.resume();
    send(404, { error: 'answers between replicas need cluster:' });
    return true;
  }
  const question = await signedQuestion(request, path, links.trust, links.self);
  if (question === undefined) {
    links.onUntrusted?.();
    links.logger.warn({ clientIp: request.socket.remoteAddress, path }, 'internal request refused: bad, stale or replayed signature, or meant for another replica');
    send(403, { error: 'bad signature' });
    return true;
  }
  const { status = 200, body } = await answer(path, question);
  send(status, body);
  return true;
}
