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

/** How many processes take devices' sessions: `auto` is every CPU this process may use. */
export function workerCount(config: Config): number {
  const { workers } = config.smtp;
  return workers === 'auto' ? os.availableParallelism() : workers;
}

/** The folder under the spool's incoming/ that a worker receives into (removed when it dies). */
export function receiverFolder(workerId: number): string {
  return `worker-${workerId}`;
}

/** Where the first workers listen, for their replacements (set by the primary when it forks one). */
export const LISTENING_PORTS_ENV = 'SMTP_OAUTH_RELAY_WORKER_PORTS';

/**
 * The config as one worker applies it: smtp.maxClients is the host's, so each of N workers takes
 * its share (each accepts from the same socket). A replacement listens on the ports the
 * first workers got, also where the config says 0 (any free port): if every worker had died, the
 * socket would otherwise come back on another port.
 */
export function workerConfig(config: Config, ports = process.env[LISTENING_PORTS_ENV]): Config {
  const share = Math.max(1, Math.ceil(config.smtp.maxClients / workerCount(config)));
  const [port, implicitPort] = ports ? ports.split(',').map(Number) : [config.smtp.port, config.smtp.tls?.implicitPort];
  const tls = config.smtp.tls && { ...config.smtp.tls, implicitPort };
  return { ...config, smtp: { ...config.smtp, maxClients: share, port, tls } };
}
