import { PassThrough, Transform, type Readable } from 'node:stream';
import type { Envelope, SendReceipt, Upstream } from './upstream.js';

/** A device silent this long mid-DATA gives up its upstream session (the message is staged, sent once whole). */
const STALL_MS = 2000;
/** Nor may one device's DATA hold an upstream session longer than this. */
const STREAM_LIMIT_MS = 15_000;

/**
 * Direct mode's upstream leg, overlapped with the device's DATA: the message goes upstream as it
 * arrives (through `tee`, placed after the rewrite), from the moment the rewrite has decided the
 * envelope sender. Only finish() lets the final dot go out; abandon() closes the upstream
 * connection before it, so an oversized, refused or broken-off message never completes upstream.
 * The one retry (a stale pooled connection, a refused token) reads the whole message afresh.
 *
 * A device that trickles its DATA must not hold one of the mailbox's few upstream sessions (Exchange
 * allows 3) while other devices wait: when it stalls or takes too long, the upstream transaction is
 * dropped before its final dot and the message, staged meanwhile, goes as an ordinary send once whole.
 */
export class LiveSend {
  private readonly stream = new PassThrough();
  private readonly abort = new AbortController();
  private sending?: Promise<SendReceipt>;
  private whole!: { resolve: (open: () => Readable) => void; reject: (reason: unknown) => void };
  /** Set once the device was too slow: the rest is only staged, and finish() sends afresh. */
  private detached = false;
  private stallTimer?: NodeJS.Timeout;
  private streamTimer?: NodeJS.Timeout;
  private readonly wholeMessage = new Promise<() => Readable>((resolve, reject) => (this.whole = { resolve, reject }));

  /** Passes the message on unchanged and copies it upstream (waiting when the upstream is slower). */
  readonly tee = new Transform({
    transform: (chunk: Buffer, _encoding, done) => {
      if (this.detached) return done(null, chunk);
      this.sending ??= this.begin();
      this.watchPace();
      this.copy(chunk).then(() => done(null, chunk), done);
    },
  });

  /** @param envelope asked once the first rewritten bytes exist (the sender is decided by then). */
  constructor(
    private readonly upstream: Upstream,
    private readonly envelope: () => Envelope,
  ) {
    this.wholeMessage.catch(() => undefined); // read only by a retry
  }

  /** The message is whole and may complete upstream: the final dot goes, the upstream's verdict comes back. */
  finish(open: () => Readable): Promise<SendReceipt> {
    this.stopWatching();
    this.whole.resolve(open);
    // Nothing streamed, or the device was too slow for streaming: an ordinary send of the whole message.
    if (!this.sending || this.detached) return this.upstream.send(this.envelope(), open);
    this.stream.end();
    return this.sending;
  }

  /** The message will not go out: the upstream transaction is dropped before its final dot. */
  abandon(reason: unknown): void {
    this.stopWatching();
    this.whole.reject(reason);
    this.abort.abort(reason);
    this.stream.destroy();
  }

  /** Each chunk restarts the stall timer; the first starts the overall limit. */
  private watchPace(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.detach(), STALL_MS).unref();
    this.streamTimer ??= setTimeout(() => this.detach(), STREAM_LIMIT_MS).unref();
  }

  private stopWatching(): void {
    clearTimeout(this.stallTimer);
    clearTimeout(this.streamTimer);
  }

  /** The upstream transaction goes before its final dot (the upstream discards it); its session is free. */
  private detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.stopWatching();
    this.sending?.catch(() => undefined);
    this.abort.abort(new Error('the device is slow: its message is staged and sent once whole'));
    this.stream.destroy();
  }

  private begin(): Promise<SendReceipt> {
    const sending = this.upstream.send(this.envelope(), (attempt) => (attempt === 1 ? this.stream : this.wholeMessage.then((open) => open())), this.abort.signal);
    // Awaited in finish() (not at all when abandoned). A send that failed before it read the copy
    // (the pace, a login) must not leave the device waiting on a copy nobody reads.
    sending.catch(() => this.stream.destroy());
    return sending;
  }

  /** Once the first attempt has failed, nobody reads the copy: the device is not held up for it. */
  private copy(chunk: Buffer): Promise<void> {
    if (this.stream.destroyed || this.stream.write(chunk)) return Promise.resolve();
    return new Promise((resolve) => {
      const go = () => {
        this.stream.off('drain', go);
        this.stream.off('close', go);
        resolve();
      };
      this.stream.on('drain', go);
      this.stream.on('close', go);
    });
  }
}
