/**
 * The peer features of a cluster (the upper layer), built on the spool: the cluster-wide queue,
 * and the handoff of a stopping replica's queue. What replicas share, and the signed calls
 * between them, are in cluster-state/, below (the cluster-wide log search is the delivery log's).
 */
export { ClusterQueue, type LocalQueue, type QueueAction, type QueueActionResult, type QueueEntry } from './cluster-queue.js';
export { HANDOFF_PATH, HandoffReceiver, handOffQueue } from './handoff.js';
