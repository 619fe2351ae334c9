/** The IPC link between the primary process and one worker: each end is a process, or a cluster Worker seen from the primary. */
export interface ProcessPort {
  send(message: unknown): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

/** A handler's failure as it crosses to the other process: a token error keeps its kind and hint. */
export interface CrossedError {
  name: string;
  message: string;
  kind?: string;
  hint?: string;
}

type Message =
  | { relay: 'ask'; id: number; kind: string; body: unknown }
  | { relay: 'answer'; id: number; body?: unknown; error?: CrossedError }
  | { relay: 'tell'; kind: string; body: unknown };

export type Handler = (body: never) => unknown;

/**
 * Questions with answers (a token, a session slot) and one-way notes (a committed message, a
 * delivery log event) between two processes. Each end answers the kinds it has handlers for;
 * notes from one process arrive in the order they were sent.
 */
export class Channel {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (body: unknown) => void; reject: (error: Error) => void; timer?: NodeJS.Timeout }>();

  constructor(
    private readonly port: ProcessPort,
    private readonly handlers: Record<string, Handler>,
    /** Turns a failure from the other side back into the error type it was. */
    private readonly revive: (error: CrossedError) => Error = (error) => Object.assign(new Error(error.message), { name: error.name }),
  ) {
    port.on('message', (message) => this.receive(message as Message));
  }

  ask<T>(kind: string, body: unknown, timeoutMs?: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => this.settle(id, { error: { name: 'TimeoutError', message: `no answer to ${kind} within ${timeoutMs} ms` } }), timeoutMs);
      this.waiting.set(id, { resolve: resolve as (body: unknown) => void, reject, timer });
      if (!this.post({ relay: 'ask', id, kind, body })) this.settle(id, { error: { name: 'Error', message: 'the other process is gone' } });
    });
  }

  tell(kind: string, body: unknown): void {
    this.post({ relay: 'tell', kind, body });
  }

  /** False when the other process is gone (the channel closed). */
  private post(message: Message): boolean {
    try {
      return this.port.send(message);
    } catch {
      return false;
    }
  }

  /** The other process is gone: nothing waiting will be answered. */
  close(): void {
    for (const id of [...this.waiting.keys()]) this.settle(id, { error: { name: 'Error', message: 'the other process is gone' } });
  }

  private receive(message: Message): void {
    if (message?.relay === 'answer') return this.settle(message.id, message);
    if (message?.relay !== 'ask' && message?.relay !== 'tell') return; // not ours (prom-client, node:cluster)
    const handler = this.handlers[message.kind] as ((body: unknown) => unknown) | undefined;
    const result = new Promise((resolve) => resolve(handler ? handler(message.body) : undefined));
    if (message.relay === 'tell') {
      result.catch(() => undefined); // a note's handler reports its own failures
      return;
    }
    result.then(
      (body) => this.post({ relay: 'answer', id: message.id, body }),
      (error: Error & { kind?: string; hint?: string }) => this.post({ relay: 'answer', id: message.id, error: { name: error.name, message: error.message, kind: error.kind, hint: error.hint } }),
    );
  }

  private settle(id: number, answer: { body?: unknown; error?: CrossedError }): void {
    const waiting = this.waiting.get(id);
    if (!waiting) return;
    this.waiting.delete(id);
    clearTimeout(waiting.timer);
    if (answer.error) waiting.reject(this.revive(answer.error));
    else waiting.resolve(answer.body);
  }
}
