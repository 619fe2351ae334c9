import os from 'node:os';
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { LocalCluster, type ClusterState, type ReplicaInfo } from './state.js';
import { RedisCluster } from './redis-cluster.js';
import { ClusterTrust, decodeClusterSecret } from './trust.js';

/**
 * What replicas share (the lower layer of a cluster): tokens, pace, session slots, held accounts,
 * lockouts, the registry, the trust that signs them, and signed calls between replicas. The embedded default is this process
 * alone; `cluster:` puts it in Redis/Valkey. The peer features built on the spool and the delivery
 * log (handoff, the cluster-wide queue and search) are in cluster/, above.
 */

/** How long a starting replica waits for the store before it counts itself alone. */
const STORE_WAIT_MS = 5000;

export { LocalCluster, type ClusterState, type HeldAccount, type ReplicaInfo, type SessionSlot, type SharedAccessToken, type SharedRefreshToken, type UpstreamShare } from './state.js';
export { ClusterTrust, generateClusterSecret, sha256Hex } from './trust.js';
export { fetchPeer, fromPeers, serveSigned, signedRequestHeaders, verifiedRequest, type PeerLinks, type ReplicaAnswers } from './peers.js';

/** What replicas prove themselves with (cluster.secret), or undefined without a cluster. */
export function clusterTrust(config: Config): ClusterTrust | undefined {
  const secret = config.cluster?.secret && decodeClusterSecret(config.cluster.secret);
  return config.cluster && secret ? new ClusterTrust(secret, config.cluster.keyPrefix) : undefined;
}

/**
 * The cluster the config asks for: Redis/Valkey with `cluster:`, else this process alone. A
 * replica waits (briefly) for the store before it goes on, so that it starts as one of many.
 */
export async function startCluster(config: Config, trust: ClusterTrust | undefined, logger: Logger, metrics: Metrics): Promise<ClusterState> {
  const name = config.cluster?.name ?? os.hostname();
  if (!config.cluster || !trust) {
    metrics.clusterUp.set(1);
    return new LocalCluster(name);
  }
  const { redis, redisPassword, redisCa, keyPrefix } = config.cluster;
  const cluster = new RedisCluster({ url: redis, password: redisPassword, ca: redisCa, name, keyPrefix, trust, logger, metrics });
  if (!(await cluster.connected(STORE_WAIT_MS))) logger.warn({ redis: redactedUrl(redis) }, 'cluster store not reachable at start; working alone until it is');
  return cluster;
}

/** A Redis URL for the log: the password, if it carries one, left out. */
function redactedUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/** The other replicas with a recent heartbeat. */
export async function livePeerReplicas(cluster: ClusterState): Promise<ReplicaInfo[]> {
  return (await cluster.replicas()).filter((replica) => replica.name !== cluster.name && !replica.stale);
}
