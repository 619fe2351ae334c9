import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';

/**
 * Below this size a message being received stays in memory; above it, it goes to a file. Small
 * messages (most scans of a page or two) then cost no file operations in direct mode, and memory
 * stays bounded: at most this much per session in flight, whatever the message size.
 */
export const SPILL_THRESHOLD = 256 * 1024;

/** Collects a message in memory up to the threshold, then continues it in a file. */
export class SpillWriter extends Writable {
  private chunks: Buffer[] = [];
  private handle?: FileHandle;
  /** The chunk being kept: a hang-up may destroy the writer while its file is being opened. */
  private keeping: Promise<void> = Promise.resolve();
  bytes = 0;

  /** @param reserve asked for room before each chunk is kept; it throws when there is none. */
  constructor(
    private readonly file: string,
    private readonly reserve: (bytes: number) => Promise<void>,
  ) {
    super();
  }

  /** The whole message, when it stayed in memory. */
  get memory(): Buffer | undefined {
    return this.handle ? undefined : Buffer.concat(this.chunks, this.bytes);
  }

  get spilled(): boolean {
    return this.handle !== undefined;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.keeping = this.keep(chunk);
    this.keeping.then(() => callback(), callback);
  }

  private async keep(chunk: Buffer): Promise<void> {
    await this.reserve(chunk.length);
    this.bytes += chunk.length;
    if (!this.handle && this.bytes <= SPILL_THRESHOLD) this.chunks.push(chunk);
    else await this.spill(chunk);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.handle) return callback();
    this.handle.close().then(() => callback(), callback);
  }

  /**
   * Waits for the chunk being kept (its file may be opening right now), then closes the file: once
   * 'close' is emitted, `bytes` and `spilled` are final and no descriptor is left to the GC.
   */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.keeping
      .catch(() => undefined)
      .then(() => this.handle?.close())
      .then(() => callback(error), () => callback(error));
  }

  /** Resolves once the writer is closed (finished or destroyed) and its state is final. */
  settled(): Promise<void> {
    return this.closed ? Promise.resolve() : new Promise((resolve) => this.once('close', () => resolve()));
  }

  private async spill(chunk: Buffer): Promise<void> {
    if (!this.handle) {
      this.handle = await open(this.file, 'w', 0o600);
      const held = this.chunks;
      this.chunks = [];
      for (const part of held) await this.handle.write(part);
    }
    await this.handle.write(chunk);
  }
}
