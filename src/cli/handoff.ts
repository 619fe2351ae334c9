import os from 'node:os';
import type { LoadedConfig } from '../config/index.js';
import { askDaemon } from '../control/index.js';
import { handOffQueue } from '../cluster/index.js';
import { clusterTrust, livePeerReplicas, startCluster } from '../cluster-state/index.js';
import { createLogger } from '../log.js';
import { createMetrics } from '../metrics/index.js';
import { Spool } from '../spool/index.js';

const STORE_WAIT_MS = 10_000;
const HANDOFF_LIMIT_MS = 10 * 60_000;

/**
 * `queue handoff --data-dir DIR`: the queue of a replica that will not run again (an orphaned
 * volume, e.g. a one-off Kubernetes Job mounting a removed replica's claim) goes to the live
 * replicas, exactly as a stopping replica hands over its own.
 */
export async function handoffCommand(loaded: LoadedConfig, dataDir: string, write: (text: string) => void): Promise<number> {
  const { config } = loaded;
  const trust = clusterTrust(config);
  if (!config.cluster || !trust) {
    write('queue handoff needs cluster: in the config (with its secret), the same as the replicas have\n');
    return 2;
  }
  if (await askDaemon(dataDir, { op: 'ping' }, 2000).catch(() => undefined)) {
    write(`a relay is running on ${dataDir}: stop it instead (a stopping relay hands its queue over itself)\n`);
    return 2;
  }
  const logger = createLogger('info');
  const name = `handoff-${os.hostname()}-${process.pid}`;
  const cluster = await startCluster({ ...config, cluster: { ...config.cluster, name } }, trust, logger, createMetrics([]));
  try {
    const giveUpAt = Date.now() + STORE_WAIT_MS;
    while (!cluster.up && Date.now() < giveUpAt) await new Promise((resolve) => setTimeout(resolve, 100));
    if (!cluster.up) {
      write(`cannot reach the cluster store at ${new URL(config.cluster.redis).host}\n`);
      return 1;
    }
    const spool = new Spool(dataDir);
    await spool.init(); // recovery first: partial files go, an earlier layout is converted
    const { handedOff, kept } = await handOffQueue({ spool, trust, self: name, peers: () => livePeerReplicas(cluster), logger, deadline: Date.now() + HANDOFF_LIMIT_MS });
    write(`${handedOff} message(s) handed over, ${kept} kept in ${dataDir}\n`);
    return kept > 0 ? 1 : 0;
  } finally {
    await cluster.close();
  }
}
