/**
 * More than one event loop on a host (smtp.workers): worker processes take the devices' sessions,
 * the primary owns the queue, tokens, session slots, pace and the console, one of each for the host.
 */
export { WorkerPool, type PrimaryParts } from './worker-pool.js';
export { HostShare } from './host-share.js';
export { runWorker } from './worker.js';
export { workerCount, receiverFolder, cpusOfQuota } from './protocol.js';
