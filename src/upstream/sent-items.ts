import type { Logger } from '../log.js';
import { ApiRefusal, type ApiAnswer } from './http-api.js';

/** Exchange files the sent copy within seconds; it is looked for after each of these waits. */
const TRIES_MS = [2_000, 10_000, 30_000, 120_000];

type Call = (path: string, options: { method: string; headers?: Record<string, string> }) => Promise<ApiAnswer>;

/**
 * upstream.saveToSentItems: false on a Graph account. Graph's MIME send always files a copy in the
 * mailbox's Sent Items (its JSON send has a switch, its MIME send none); a scanner's thousands of
 * copies are deleted afterwards, found by their Message-ID. That needs Mail.ReadWrite: refused, it is
 * said once, with the fix, and the mail is not affected.
 */
export class SentItemsCleaner {
  private readonly timers = new Set<NodeJS.Timeout>();
  private refusalLogged = false;

  constructor(
    private readonly call: Call,
    private readonly user: string,
    private readonly logger: Logger,
  ) {}

  /** Looks for the sent copy of `messageId` in the background and deletes it. */
  remove(messageId: string, attempt = 0): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.tryRemove(messageId).then(
        (found) => {
          if (!found && attempt + 1 < TRIES_MS.length) this.remove(messageId, attempt + 1);
        },
        (error: unknown) => this.noteFailure(error),
      );
    }, TRIES_MS[attempt]).unref();
    this.timers.add(timer);
  }

  close(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private async tryRemove(messageId: string): Promise<boolean> {
    const filter = encodeURIComponent(`internetMessageId eq '${messageId.replace(/'/g, "''")}'`);
    const answer = await this.call(`/v1.0/users/${this.user}/mailFolders/SentItems/messages?$filter=${filter}&$select=id`, { method: 'GET' });
    const copies = ((JSON.parse(answer.body.toString('utf8')) as { value?: { id?: unknown }[] }).value ?? []).map((copy) => String(copy.id));
    for (const id of copies) await this.call(`/v1.0/users/${this.user}/messages/${encodeURIComponent(id)}`, { method: 'DELETE' });
    return copies.length > 0;
  }

  private noteFailure(error: unknown): void {
    if (error instanceof ApiRefusal && error.status === 403) {
      if (this.refusalLogged) return;
      this.refusalLogged = true;
      this.logger.warn({ upstream: error.message, hint: 'grant the app Microsoft Graph Mail.ReadWrite (or RBAC for Applications "Application Mail.ReadWrite" on the mailbox), or set upstream.saveToSentItems: true' }, 'cannot delete the sent copies Graph files in Sent Items; mail is not affected');
      return;
    }
    this.logger.warn({ err: (error as Error).message }, 'a sent copy in Sent Items was not deleted');
  }
}
