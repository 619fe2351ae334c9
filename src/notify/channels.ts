import type { Channel, Notification } from './notifier.js';

const WEBHOOK_TIMEOUT_MS = 10_000;

/**
 * A generic JSON POST. `text` is what Slack- and Teams-style incoming webhooks show; the other
 * fields are for anything that reads JSON. The URL is a secret (it carries the hook's key): it is
 * never logged, only its host.
 */
export class WebhookChannel implements Channel {
  readonly name = 'webhook';
  private readonly url: URL;
  /** `user:password@` in the URL, sent as HTTP Basic (fetch refuses, and would name, a URL carrying them). */
  private readonly authorization?: string;

  constructor(url: string) {
    this.url = new URL(url);
    if (this.url.username || this.url.password) {
      this.authorization = `Basic ${Buffer.from(`${decodeURIComponent(this.url.username)}:${decodeURIComponent(this.url.password)}`).toString('base64')}`;
      this.url.username = '';
      this.url.password = '';
    }
  }

  async send(notification: Notification): Promise<void> {
    const where = `webhook at ${this.url.host}`;
    const response = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(this.authorization ? { authorization: this.authorization } : {}) },
      body: JSON.stringify(notification),
      signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
      redirect: 'error', // a redirect would carry the notification (and the credentials) elsewhere
    }).catch((error: Error & { cause?: { code?: string } }) => {
      // The error's own text may quote the URL (its path is the hook's key): only its kind is kept.
      throw new Error(`${where} unreachable (${error.cause?.code ?? error.name})`);
    });
    await response.arrayBuffer();
    if (!response.ok) throw new Error(`${where} answered HTTP ${response.status}`);
  }
}

/** An e-mail to bounces.postmaster, queued like a delivery report through an account that can send. */
export class EmailChannel implements Channel {
  readonly name = 'email';

  constructor(private readonly queueNotice: (subject: string, text: string) => Promise<void>) {}

  send(notification: Notification): Promise<void> {
    const status = notification.status === 'resolved' ? 'Resolved' : notification.status === 'event' ? 'Event' : notification.severity === 'critical' ? 'Critical' : 'Warning';
    const text = [`${notification.title}.`, '', notification.details, '', `Relay: ${notification.relay}`, `Time: ${notification.at}`, '', 'Open the relay console for the details (Overview, Messages, Queue, Devices).'].join('\n');
    return this.queueNotice(`[smtp-oauth-relay] ${status}: ${notification.title}`, text);
  }
}
