import { Transform, type TransformCallback } from 'node:stream';

/**
 * Counts the bytes of DATA and stops passing them on past the limit, while still draining the
 * device's stream so the session can be answered 552. Nothing of an oversized message is kept.
 */
export class SizeGuard extends Transform {
  bytes = 0;

  constructor(private readonly limit: number) {
    super();
  }

  get exceeded(): boolean {
    return this.bytes > this.limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, this.exceeded ? undefined : chunk);
  }
}
