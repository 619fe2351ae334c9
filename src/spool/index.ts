export { Spool, type StagedMessage, type SpoolArea } from './spool.js';
export { DeliveryAgent, type AccountQueueState, type BounceSettings } from './delivery-agent.js';
export { newQueueRecord, pendingRecipients, type QueueRecord } from './record.js';
export { readHeaderBlock } from './header-block.js';
export type { RetryPolicy } from './retry-policy.js';
export { summarizeMessage, type MessageSummary } from './message-summary.js';
