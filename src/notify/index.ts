export { Notifier, type Channel, type Notification } from './notifier.js';
export { EmailChannel, WebhookChannel } from './channels.js';
export { findProblems, type Problem, type RelaySnapshot } from './problems.js';
