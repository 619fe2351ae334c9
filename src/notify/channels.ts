import type { Channel, Notification } from './notifier.js';

const WEBHOOK_TIMEOUT_MS = 10_000;

/**
 * A generic JSON POST. `text` is what Slack- and Teams-style incoming webhooks show; the other
 * fields are for anything that reads JSON. The URL is a secret (it carries the hook's key): it is
 * never logged, only its host.
 */
export class WebhookChannel implements Channel {
  readonly name = 'webhook';

  constructor(private readonly url: string) {}

  async send(notification: Notification): Promise<void> {
    const response = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(notification),
      signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
    }).catch((error: Error) => {
      throw new Error(`webhook at ${new URL(this.url).host} unreachable: ${error.message}`);
    });
    await response.arrayBuffer();
    if (!response.ok) throw new Error(`webhook at ${new URL(this.url).host} answered HTTP ${response.status}`);
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
