import { PassThrough, Transform, type Readable } from 'node:stream';
import type { Envelope, SendReceipt, Upstream } from './upstream.js';

/**
 * Direct mode's upstream leg, overlapped with the device's DATA: the message goes upstream as it
 * arrives (through `tee`, placed after the rewrite), from the moment the rewrite has decided the
 * envelope sender. Only finish() lets the final dot go out; abandon() closes the upstream
 * connection before it, so an oversized, refused or broken-off message never completes upstream.
 * The one retry (a stale pooled connection, a refused token) reads the whole message afresh.
 */
export class LiveSend {
  private readonly stream = new PassThrough();
  private readonly abort = new AbortController();
  private sending?: Promise<SendReceipt>;
  private whole!: { resolve: (open: () => Readable) => void; reject: (reason: unknown) => void };
  private readonly wholeMessage = new Promise<() => Readable>((resolve, reject) => (this.whole = { resolve, reject }));

  /** Passes the message on unchanged and copies it upstream (waiting when the upstream is slower). */
  readonly tee = new Transform({
    transform: (chunk: Buffer, _encoding, done) => {
      this.sending ??= this.begin();
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
    this.whole.resolve(open);
    if (!this.sending) return this.upstream.send(this.envelope(), open); // nothing streamed: an ordinary send
    this.stream.end();
    return this.sending;
  }

  /** The message will not go out: the upstream transaction is dropped before its final dot. */
  abandon(reason: unknown): void {
    this.whole.reject(reason);
    this.abort.abort(reason);
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
