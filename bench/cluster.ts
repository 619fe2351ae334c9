/**
 * What `cluster:` costs: the same relay with and without Redis (a private redis-server), the same
 * client (bench/smtp-load.py, printer-style, 10 senders), queue and direct mode, interleaved; and
 * the Redis commands per message, from the server's own counters.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { DEVICE } from './harness.js';
import { message10k, startRelay } from './load.js';
import { RedisServer } from './redis-server.js';
import { generateClusterSecret } from '../src/cluster-state/index.js';
import { record } from './report.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { packageRoot } from '../src/util/package-root.js';

const run = promisify(execFile);
const COUNT = 600;
const SENDERS = 10;

export async function clusterCost(provider: FakeProvider): Promise<void> {
  const redis = await RedisServer.start().catch(() => undefined);
  if (!redis) {
    process.stdout.write('cluster: skipped, redis-server is not installed (apt-get install redis-server)\n');
    return;
  }
  const messageFile = path.join(await mkdtemp(path.join(os.tmpdir(), 'bench-cluster-')), 'scan.eml');
  await writeFile(messageFile, message10k);
  const stats = redis.client('admin');
  try {
    for (const delivery of ['queue', 'direct'] as const) {
      const common = { delivery, tokenKey: 'bench key, long enough to count', smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } };
      const secret = generateClusterSecret();
      const alone = await startRelay(provider, common);
      const clustered = await startRelay(provider, { ...common, cluster: { ...redis.clusterConfig, secret, name: 'bench' } });
      const rates: Record<'alone' | 'clustered', number[]> = { alone: [], clustered: [] };
      let commands = 0;
      for (let repetition = 0; repetition < 3; repetition++) {
        rates.alone.push(await measure(alone.port, messageFile, provider));
        const before = await commandCount(stats);
        rates.clustered.push(await measure(clustered.port, messageFile, provider));
        commands += (await commandCount(stats)) - before - 2; // less this count's own INFO calls
      }
      await Promise.all([alone.stop('SIGTERM'), clustered.stop('SIGTERM')]);
      const [base, withCluster] = [median(rates.alone), median(rates.clustered)];
      record({ name: `cluster: ${delivery}, printer-style c=${SENDERS}`, value: withCluster, unit: 'msg/s', baseline: base, ratio: withCluster / base, target: '≥ 0.9 × without', met: withCluster >= 0.9 * base });
      record({ name: `cluster: Redis commands per message (${delivery})`, value: commands / (3 * COUNT), unit: 'commands' });
    }
  } finally {
    stats.disconnect();
    await redis.stop();
  }
}

/** Messages/s until the provider has them all (drained). */
async function measure(port: number, messageFile: string, provider: FakeProvider): Promise<number> {
  const before = provider.received.length;
  const started = performance.now();
  await run('python3', [path.join(packageRoot(), 'bench', 'smtp-load.py'), '127.0.0.1', String(port), String(COUNT), String(SENDERS), 'printer', messageFile, 'mfp@printers.local', '--login', DEVICE.username, DEVICE.password]);
  while (provider.received.length - before < COUNT) await new Promise((resolve) => setTimeout(resolve, 2));
  return COUNT / ((performance.now() - started) / 1000);
}

async function commandCount(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return [...info.matchAll(/calls=(\d+)/g)].reduce((sum, match) => sum + Number(match[1]), 0);
}

function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}
