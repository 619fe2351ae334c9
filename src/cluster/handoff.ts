import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { QueueRecord, Spool } from '../spool/index.js';

/**
 * Scale-down without stranded mail: a stopping replica hands each message still queued to a live
 * peer over HTTP. The peer commits it to its own spool (fsync) before it answers 200, and only
 * then does the sender delete its copy; the record travels along (recipients already delivered,
 * attempts, received time), so nothing is sent twice. Requests are signed with a key derived from
 * tokenKey, which every replica of a cluster shares.
 */
export const HANDOFF_PATH = '/internal/handoff';
const MAX_CLOCK_SKEW_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** Queue ids (and report ids) are letters and digits; anything else never reaches a file name. */
const SAFE_ID = /^[0-9A-Za-z]{8,64}$/;

export function handoffKey(tokenKey: string): Buffer {
  return createHash('sha256').update(`smtp-oauth-relay handoff v1\0${tokenKey}`).digest();
}

/** The HMAC one replica puts on an internal request (handoff, trace search) for another. */
export function internalSignature(key: Buffer, parts: string[]): string {
  return createHmac('sha256', key).update(parts.join('\n')).digest('hex');
}

/** Whether a request's signature and its time (within a few minutes of ours) are right. */
export function validInternalSignature(key: Buffer, signed: string, time: string, parts: string[]): boolean {
  const expected = Buffer.from(internalSignature(key, [time, ...parts]), 'hex');
  const given = Buffer.from(signed, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected) && Math.abs(Date.now() - Number(time)) <= MAX_CLOCK_SKEW_MS;
}

export interface HandoffOptions {
  spool: Spool;
  key: Buffer;
  /** HTTP addresses (host:port) of the live peers, asked once. */
  peers: () => Promise<string[]>;
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
        logger.warn({ id: record.id, peer, err: error.message }, 'handoff to a peer failed; trying another');
        return false;
      });
      if (!accepted) continue;
      await spool.deleteMessage(record.id);
      options.onHandedOver?.(record, peer);
      handedOff++;
      break;
    }
  }
  const kept = records.length - handedOff;
  logger[kept ? 'warn' : 'info']({ handedOff, kept, peers }, 'queue handed over to the peers');
  return { handedOff, kept };
}

async function sendTo(peer: string, record: QueueRecord, { spool, key }: HandoffOptions): Promise<boolean> {
  const sha256 = createHash('sha256');
  for await (const chunk of spool.openMessage(record)) sha256.update(chunk as Buffer);
  const digest = sha256.digest('hex');
  const encoded = Buffer.from(JSON.stringify(record)).toString('base64url');
  const time = String(Date.now());
  const response = await fetch(`http://${peer}${HANDOFF_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'message/rfc822', 'x-relay-time': time, 'x-relay-record': encoded, 'x-relay-sha256': digest, 'x-relay-signature': internalSignature(key, [time, encoded, digest]) },
    body: Readable.toWeb(spool.openMessage(record)) as ReadableStream,
    duplex: 'half',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  } as RequestInit & { duplex: 'half' });
  await response.arrayBuffer();
  return response.status === 200;
}

export interface ReceiverOptions {
  spool: Spool;
  key?: Buffer;
  /** A draining replica takes nothing (two replicas stopping must not trade messages). */
  draining: () => boolean;
  /** Whether this replica can deliver for the record's account. */
  serves: (account: string) => boolean;
  /** The committed message, for the delivery agent. */
  adopted: (record: QueueRecord) => void;
  logger: Logger;
}

/** POST /internal/handoff; false for any other path. */
export async function receiveHandoff(request: IncomingMessage, response: ServerResponse, options: ReceiverOptions): Promise<boolean> {
  if ((request.url ?? '').split('?')[0] !== HANDOFF_PATH) return false;
  const answer = (status: number, error: string) => {
    request.resume();
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error }));
    return true;
  };
  if (request.method !== 'POST') return answer(405, 'POST only');
  if (!options.key) return answer(404, 'handoff needs cluster: and tokenKey');
  if (options.draining()) return answer(503, 'draining');
  const [time, encoded, digest, signed] = ['x-relay-time', 'x-relay-record', 'x-relay-sha256', 'x-relay-signature'].map((name) => String(request.headers[name] ?? ''));
  if (!validInternalSignature(options.key, signed, time, [encoded, digest])) {
    options.logger.warn({ clientIp: request.socket.remoteAddress }, 'handoff refused: bad or stale signature');
    return answer(403, 'bad signature');
  }
  const record = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as QueueRecord;
  if (!SAFE_ID.test(record.id) || !Number.isInteger(record.size) || record.size < 0) return answer(400, 'bad record');
  if (!options.serves(record.account)) return answer(409, `account ${record.account} is not configured here`);
  if (await options.spool.has(record.id)) return answer(200, 'already here'); // a repeated handoff: the sender may delete its copy
  try {
    await options.spool.adopt(record, request, (sha256) => {
      if (sha256 !== digest) throw new Error('content does not match its signed digest');
    });
  } catch (error) {
    options.logger.error({ id: record.id, err: (error as Error).message }, 'handed-over message not taken');
    return answer(500, 'not committed');
  }
  options.logger.info({ id: record.id, account: record.account, from: request.socket.remoteAddress }, 'message taken over from a stopping replica');
  options.adopted(record);
  response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ committed: record.id }));
  return true;
}
