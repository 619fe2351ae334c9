/** Thrown when more work is waiting than the limiter queues: the caller should come back later. */
export class LimiterBusyError extends Error {
  constructor() {
    super('too much work waiting; try again later');
    this.name = 'LimiterBusyError';
  }
}

/**
 * At most `concurrency` tasks at once, at most `maxWaiting` queued behind them. Used to keep slow
 * CPU work that runs in libuv's thread pool (scrypt) from starving the file I/O that shares it.
 */
export class Limiter {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly maxWaiting: number,
  ) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency) {
      this.running++;
    } else {
      if (this.waiting.length >= this.maxWaiting) throw new LimiterBusyError();
      await new Promise<void>((resolve) => this.waiting.push(resolve)); // a finishing task hands over its slot
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
