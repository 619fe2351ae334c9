import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { Config } from '../config/index.js';

/** Where a worker's SMTP listener is (it tells the primary once it listens). */
export interface WorkerAddress {
  address: string;
  port: number;
}

/** Why a worker could not listen, for the primary to report as a single process would. */
export interface ListenFailure {
  code?: string;
  syscall?: string;
  message: string;
}

/** How full the queue is, as the primary tells a worker; `settled`: that worker's commits it has handled since (counted or found known). */
export interface QueueFill {
  bytes: number;
  settled: string[];
}

/**
 * How many processes take devices' sessions: `auto` is every CPU this process may use, its
 * affinity and a container's CPU limit (libuv reads the latter only in some cgroup layouts: under
 * cgroup v1 in Docker, --cpus=1 still gave 2 on a 2-CPU host).
 */
export function workerCount(config: Config): number {
  const { workers } = config.smtp;
  return workers === 'auto' ? Math.min(os.availableParallelism(), cgroupCpuLimit() ?? Infinity) : workers;
}

/** Whole CPUs the cgroup's quota allows (cgroup v2 cpu.max, else v1's CFS quota), at least 1; undefined without a limit. */
function cgroupCpuLimit(): number | undefined {
  const own = /^0::(\/.*)$/m.exec(readOrEmpty('/proc/self/cgroup'))?.[1] ?? '/';
  const v2 = readOrEmpty(`/sys/fs/cgroup${own === '/' ? '' : own}/cpu.max`) || readOrEmpty('/sys/fs/cgroup/cpu.max');
  const v1 = `${readOrEmpty('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')} ${readOrEmpty('/sys/fs/cgroup/cpu/cpu.cfs_period_us')}`;
  return cpusOfQuota(v2 || v1);
}

/** "150000 100000" (quota and period in µs) is 1 CPU; "max 100000" or "-1 100000" is no limit. */
export function cpusOfQuota(text: string): number | undefined {
  const [quota, period] = text.trim().split(/\s+/).map(Number);
  return quota > 0 && period > 0 ? Math.max(1, Math.floor(quota / period)) : undefined;
}

function readOrEmpty(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The folder under the spool's incoming/ that a worker receives into (removed when it dies). */
export function receiverFolder(workerId: number): string {
  return `worker-${workerId}`;
}

/** The ports the primary chose for every worker (a config's 0 resolved once), passed when it forks one. */
export const LISTENING_PORTS_ENV = 'SMTP_OAUTH_RELAY_WORKER_PORTS';

/**
 * The config as one worker applies it: smtp.maxClients is the host's, so each of N workers takes
 * its share (each accepts from the same socket), and every worker listens on the ports the
 * primary chose.
 */
export function workerConfig(config: Config, ports = process.env[LISTENING_PORTS_ENV]): Config {
  const share = Math.max(1, Math.ceil(config.smtp.maxClients / workerCount(config)));
  const [port, implicitPort] = ports ? ports.split(',').map(Number) : [config.smtp.port, config.smtp.tls?.implicitPort];
  const tls = config.smtp.tls && { ...config.smtp.tls, implicitPort };
  return { ...config, smtp: { ...config.smtp, maxClients: share, port, tls } };
}
