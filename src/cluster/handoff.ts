import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { QueueRecord, Spool } from '../spool/index.js';
import { fetchPeer, sha256Hex, signedRequestHeaders, verifiedRequest, type ClusterTrust } from '../cluster-state/index.js';

/**
 * Scale-down without stranded mail: a stopping replica hands each message still queued to a live
 * peer over HTTP. The body is the record (recipients already delivered, attempts, received time)
 * on one line, then the message. The peer commits it to its own spool (fsync) and answers with a
 * receipt signed over the id, the content's digest and the request's nonce; only on that receipt
 * does the sender delete its copy. A peer is one the registry lists as signed by a replica, and a
 * request is good at that one peer, once.
 */
export const HANDOFF_PATH = '/internal/handoff';
const REQUEST_TIMEOUT_MS = 30_000;
/** A record with thousands of long recipients fits; anything larger is not a record. */
const MAX_RECORD_BYTES = 4 * 1024 * 1024;
/** Queue ids (and report ids) are letters and digits; anything else never reaches a file name. */
const SAFE_ID = /^[0-9A-Za-z]{8,64}$/;
/** Ids taken over lately: a repeated handoff of one is answered with a receipt, never committed twice. */
const REMEMBER_ADOPTED_MS = 24 * 3600_000;

function receiptParts(receiver: string, id: string, digest: string, nonce: string): string[] {
  return [receiver, id, digest, nonce];
}

export interface HandoffOptions {
  spool: Spool;
  trust: ClusterTrust;
  /** This replica's name (the sender of each request). */
  self: string;
  /** The live peers (name, HTTP host:port), asked once. */
  peers: () => Promise<{ name: string; http: string }[]>;
  logger: Logger;
  /** Gives up (the rest stays on this volume) at this time. */
  deadline: number;
  /** Told of each message a peer committed (for the delivery log). */
  onHandedOver?: (record: QueueRecord, peer: string) => void;
}

/** Hands every queued message to a peer; returns how many went and how many stay here. */
export async function handOffQueue(options: HandoffOptions): Promise<{ handedOff: number; kept: number }> {
  const { spool, logger } = options;
  // A failure being finished (its report) is settled where it started; everything else may move.
  const records = (await spool.list('queue')).filter((record) => !record.failedAt);
  if (records.length === 0) return { handedOff: 0, kept: 0 };
  const peers = await options.peers();
  if (peers.length === 0) {
    logger.warn({ messages: records.length }, 'no live peer to hand the queue to; the messages stay on this volume until the relay runs again (or `queue handoff`)');
    return { handedOff: 0, kept: records.length };
  }
  let handedOff = 0;
  let turn = 0;
  for (const record of records) {
    if (Date.now() > options.deadline) break;
    for (let tried = 0; tried < peers.length; tried++) {
      const peer = peers[turn++ % peers.length];
      const accepted = await sendTo(peer, record, options).catch((error: Error) => {
        logger.warn({ id: record.id, peer: peer.name, err: error.message }, 'handoff to a peer failed; trying another');
        return false;
      });
      if (!accepted) continue;
      await spool.deleteMessage(record.id);
      options.onHandedOver?.(record, peer.name);
      handedOff++;
      break;
    }
  }
  const kept = records.length - handedOff;
  logger[kept ? 'warn' : 'info']({ handedOff, kept, peers: peers.map((peer) => peer.name) }, 'queue handed over to the peers');
  return { handedOff, kept };
}

/** True once the peer sent a valid receipt for this message: committed there, so ours may go. */
async function sendTo(peer: { name: string; http: string }, record: QueueRecord, { spool, trust, self }: HandoffOptions): Promise<boolean> {
  const sha256 = createHash('sha256');
  for await (const chunk of spool.openMessage(record)) sha256.update(chunk as Buffer);
  const digest = sha256.digest('hex');
  const recordLine = JSON.stringify(record);
  const headers = signedRequestHeaders(trust, self, peer.name, HANDOFF_PATH, `${sha256Hex(recordLine)}:${digest}`);
  const content = Readable.from(
    (async function* () {
      yield Buffer.from(`${recordLine}\n`);
      yield* spool.openMessage(record);
    })(),
  );
  const response = await fetchPeer(`http://${peer.http}${HANDOFF_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'x-relay-sha256': digest, ...headers },
    body: Readable.toWeb(content) as ReadableStream,
    duplex: 'half',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  } as RequestInit & { duplex: 'half' });
  const answer = (await response.json().catch(() => ({}))) as { committed?: string; receipt?: string; error?: string };
  if (response.status !== 200) throw new Error(`answered HTTP ${response.status}${answer.error ? `: ${answer.error}` : ''}`);
  if (answer.committed !== record.id || typeof answer.receipt !== 'string' || !trust.verify('receipt', receiptParts(peer.name, record.id, digest, headers['x-relay-nonce']), answer.receipt)) {
    throw new Error('answered without a valid receipt; the message stays here');
  }
  return true;
}

export interface ReceiverOptions {
  spool: Spool;
  trust?: ClusterTrust;
  /** This replica's name: a request signed for another is refused. */
  self: string;
  /** A draining replica takes nothing (two replicas stopping must not trade messages). */
  draining: () => boolean;
  /** Whether this replica can deliver for the record's account. */
  serves: (account: string) => boolean;
  /** The committed message, for the delivery agent. */
  adopted: (record: QueueRecord) => void;
  /** Counts a refused request (smtp_relay_cluster_untrusted_total{kind="request"}). */
  onUntrusted?: () => void;
  logger: Logger;
}


/** Takes handed-over messages: POST /internal/handoff. */
export class HandoffReceiver {
  /** Ids taken over, and when (oldest first): a repeat gets a receipt, never a second commit. */
  private readonly adoptedIds = new Map<string, number>();

  constructor(private readonly options: ReceiverOptions) {}

  /** False for any other path. */
  handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    return receiveHandoff(request, response, this.options, this.adoptedIds);
  }
}

async function receiveHandoff(request: IncomingMessage, response: ServerResponse, options: ReceiverOptions, adoptedIds: Map<string, number>): Promise<boolean> {
  if ((request.url ?? '').split('?')[0] !== HANDOFF_PATH) return false;
  const answer = (status: number, error: string) => {
    request.resume();
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error }));
    return true;
  };
  if (request.method !== 'POST') return answer(405, 'POST only');
  if (!options.trust) return answer(404, 'handoff needs cluster:');
  if (options.draining()) return answer(503, 'draining');
  const trust = options.trust;
  const digest = String(request.headers['x-relay-sha256'] ?? '');
  const head = await readRecordLine(request);
  const verified = head && verifiedRequest(trust, options.self, request.headers, HANDOFF_PATH, `${sha256Hex(head.line)}:${digest}`);
  if (!head || !verified) {
    options.onUntrusted?.();
    options.logger.warn({ clientIp: request.socket.remoteAddress }, 'handoff refused: bad, stale or replayed signature, or meant for another replica');
    return answer(403, 'bad signature');
  }
  const record = parseRecord(head.line);
  if (!record) return answer(400, 'bad record');
  if (!options.serves(record.account)) return answer(409, `account ${record.account} is not configured here`);
  const committed = () => {
    request.resume();
    const receipt = trust.sign('receipt', receiptParts(options.self, record.id, digest, verified.nonce));
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ committed: record.id, receipt }));
    return true;
  };
  // A repeated handoff (the sender missed our receipt): it may delete its copy; nothing is committed twice.
  if (adoptedIds.has(record.id) || (await options.spool.has(record.id))) return committed();
  try {
    await options.spool.adopt(record, head.rest, (sha256) => {
      if (sha256 !== digest) throw new Error('content does not match its signed digest');
    });
  } catch (error) {
    options.logger.error({ id: record.id, err: (error as Error).message }, 'handed-over message not taken');
    return answer(500, 'not committed');
  }
  rememberAdopted(adoptedIds, record.id);
  options.logger.info({ id: record.id, account: record.account, from: verified.from }, 'message taken over from a stopping replica');
  options.adopted(record);
  return committed();
}

function rememberAdopted(adoptedIds: Map<string, number>, id: string): void {
  const now = Date.now();
  for (const [known, at] of adoptedIds) {
    if (now - at < REMEMBER_ADOPTED_MS) break; // oldest first
    adoptedIds.delete(known);
  }
  adoptedIds.set(id, now);
}

function parseRecord(line: string): QueueRecord | undefined {
  try {
    const record = JSON.parse(line) as QueueRecord;
    return SAFE_ID.test(record.id) && Number.isInteger(record.size) && record.size >= 0 && typeof record.account === 'string' ? record : undefined;
  } catch {
    return undefined;
  }
}

/** The body's first line (the record) and a stream of the rest (the message), or undefined past MAX_RECORD_BYTES. */
async function readRecordLine(body: AsyncIterable<Buffer>): Promise<{ line: string; rest: Readable } | undefined> {
  const chunks = body[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  for (;;) {
    const next = await chunks.next();
    if (next.done) return undefined;
    head = Buffer.concat([head, next.value]);
    const newline = head.indexOf(10);
    if (newline >= 0) {
      const first = head.subarray(newline + 1);
      const rest = Readable.from(
        (async function* () {
          if (first.length) yield first;
          for (let chunk = await chunks.next(); !chunk.done; chunk = await chunks.next()) yield chunk.value;
        })(),
      );
      return { line: head.subarray(0, newline).toString('utf8'), rest };
    }
    if (head.length > MAX_RECORD_BYTES) return undefined;
  }
}
