import { isIP, type Socket } from 'node:net';

/** PROXY protocol v2's signature (HAProxy send-proxy-v2, AWS NLB, Azure load balancers). */
const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
/** Addresses and a few TLVs: more than this is not a header anyone sends. */
const MAX_BODY = 1024;

export type ProxyV2 = { kind: 'not-v2' } | { kind: 'local' } | { kind: 'proxied'; address: string; port: number };

/**
 * Reads a PROXY v2 header off the socket (its first bytes): the client's address, 'local' for the
 * proxy's own connection (a health check), or 'not-v2' with every byte put back (a v1 header is
 * then smtp-server's to read). Throws on a malformed header.
 */
export async function readProxyV2(socket: Socket): Promise<ProxyV2> {
  const head = await readBytes(socket, 16, true);
  if (!head) return { kind: 'not-v2' };
  const length = head.readUInt16BE(14);
  if (head[12] >> 4 !== 2 || length > MAX_BODY) throw new Error('Invalid PROXY v2 header');
  const body = (await readBytes(socket, length, false)) ?? Buffer.alloc(0);
  if (body.length < length) throw new Error('PROXY v2 header cut short');
  if ((head[12] & 0x0f) === 0) return { kind: 'local' };
  const family = head[13] >> 4;
  if (family === 1 && length >= 12) return { kind: 'proxied', address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) };
  if (family === 2 && length >= 36) {
    const groups = Array.from({ length: 8 }, (_, i) => body.readUInt16BE(i * 2).toString(16));
    const address = groups.join(':');
    if (!isIP(address)) throw new Error('Invalid PROXY v2 source address');
    return { kind: 'proxied', address, port: body.readUInt16BE(32) };
  }
  return { kind: 'local' }; // AF_UNSPEC or a family without an IP address: the connection's own
}

/**
 * Exactly `count` bytes from the socket, the rest put back. With `signature`, undefined (and
 * everything put back) as soon as the bytes stop matching the v2 signature.
 */
function readBytes(socket: Socket, count: number, signature: boolean): Promise<Buffer | undefined> {
  if (count === 0) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const finish = (result: Buffer | undefined, rest: Buffer) => {
      cleanup();
      if (rest.length) socket.unshift(rest);
      resolve(result);
    };
    const onReadable = () => {
      for (let chunk = socket.read() as Buffer | null; chunk; chunk = socket.read() as Buffer | null) {
        got = Buffer.concat([got, chunk]);
        const compared = Math.min(got.length, SIGNATURE.length);
        if (signature && !got.subarray(0, compared).equals(SIGNATURE.subarray(0, compared))) return finish(undefined, got);
        if (got.length >= count) return finish(got.subarray(0, count), got.subarray(count));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('connection closed before the PROXY header'));
    };
    const cleanup = () => {
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    onReadable();
  });
}
