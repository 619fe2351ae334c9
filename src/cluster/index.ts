import os from 'node:os';
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { LocalCluster, type ClusterState, type ReplicaInfo } from './cluster.js';
import { RedisCluster } from './redis-cluster.js';

export { LocalCluster, type ClusterState, type HeldAccount, type ReplicaInfo, type SessionSlot, type SharedAccessToken, type SharedRefreshToken } from './cluster.js';

/** The cluster the config asks for: Redis/Valkey with `cluster:`, else this process alone. */
export function startCluster(config: Config, logger: Logger, metrics: Metrics): ClusterState {
  const name = config.cluster?.name ?? os.hostname();
  if (!config.cluster) {
    metrics.clusterUp.set(1);
    return new LocalCluster(name);
  }
  const { redis, redisPassword, keyPrefix } = config.cluster;
  return new RedisCluster({ url: redis, password: redisPassword, name, keyPrefix, tokenKey: config.tokenKey, logger, metrics });
}

export { fromPeers, serveSigned, type PeerLinks, type ReplicaAnswers } from './peers.js';
export { ClusterQueue, type LocalQueue, type QueueAction, type QueueActionResult, type QueueEntry } from './cluster-queue.js';
export { HANDOFF_PATH, handOffQueue, handoffKey, receiveHandoff } from './handoff.js';

/** The other replicas with a recent heartbeat. */
export async function livePeerReplicas(cluster: ClusterState): Promise<ReplicaInfo[]> {
  return (await cluster.replicas()).filter((replica) => replica.name !== cluster.name && !replica.stale);
}

/** HTTP addresses of the other replicas with a recent heartbeat. */
export async function livePeers(cluster: ClusterState): Promise<string[]> {
  return (await livePeerReplicas(cluster)).map((replica) => replica.http);
}
