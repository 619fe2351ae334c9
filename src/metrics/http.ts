import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.js';

/**
 * What /readyz and /readyz/accounts report. `ready` means this replica can take mail (a load
 * balancer or Kubernetes sends devices here); it does not depend on the accounts, or one account
 * needing a sign-in would take every replica out of service and devices could not even queue.
 */
export interface ReadinessReport {
  ready: boolean;
  /** Why it cannot take mail: draining, spool full or not writable. */
  problems: string[];
  /** Whether every account can send right now (/readyz/accounts). */
  accountsReady: boolean;
  accounts: Record<string, unknown>;
  /** With cluster: configured, this replica's name, whether the store is reachable, and the replicas. */
  cluster?: { name: string; storeUp: boolean; replicas: unknown[] };
  /** With smtp.workers above 1: how many worker processes there should be, and how many take sessions now. */
  workers?: { configured: number; listening: number };
}

export interface StatusServerOptions {
  host: string;
  port: number;
  /** /metrics: the registry (with worker processes, theirs and the primary's added up). */
  registry: Pick<Registry, 'contentType' | 'metrics'>;
  readiness: () => Promise<ReadinessReport>;
  logger: Logger;
  /** Other pages on the same listener (the admin page); resolves false for paths it does not serve. */
  pages?: (request: IncomingMessage, response: ServerResponse) => Promise<boolean>;
  /** Host names besides the built-in ones under which /metrics and /readyz answer (http.publicUrl's, cluster.advertiseHost, http.allowedHosts). */
  hostNames: string[];
}

/**
 * Names no one can point at an address of their choosing in public DNS: one label (a Kubernetes
 * Service, a LAN host), the special-use suffixes, and this machine's own.
 */
const PRIVATE_NAME = /^(?:[^.]+|.+\.(?:svc|cluster\.local|local|internal|lan|home\.arpa|localhost))$/;

/**
 * Whether a request's Host may read the relay's state. A page on a rebinding domain
 * (evil.example resolving to 127.0.0.1) would carry its own name; an address, a private name or a
 * configured one cannot be one.
 */
export function hostAllowed(header: string | undefined, names: ReadonlySet<string>): boolean {
  if (!header) return true; // HTTP/1.0: no browser
  const host = header.toLowerCase();
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  return isIP(name) !== 0 || PRIVATE_NAME.test(name) || names.has(name);
}

/**
 * /metrics for Prometheus, /healthz (the process answers), /readyz (it can take mail) and
 * /readyz/accounts (every account can send).
 */
export class StatusServer {
  private readonly server: Server;
  private readonly hostNames: Set<string>;

  constructor(private readonly options: StatusServerOptions) {
    this.hostNames = new Set(options.hostNames.map((name) => name.toLowerCase()));
    this.server = createServer((request, response) => {
      this.route(request, response).catch((error: Error) => {
        options.logger.error({ err: error.message, path: request.url }, 'status endpoint failed');
        if (!response.headersSent) response.writeHead(500);
        response.end();
      });
    });
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = (request.url ?? '/').split('?')[0];
    if (!ENDPOINTS.includes(path) && this.options.pages && (await this.options.pages(request, response))) return;
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/healthz' && !hostAllowed(request.headers.host, this.hostNames)) {
      response.writeHead(421, { 'content-type': 'text/plain' }).end(`${path} does not answer under the host name ${request.headers.host}: add it to http.allowedHosts (or use an address).\n`);
      return;
    }
    switch (path) {
      case '/metrics':
        response.writeHead(200, { 'content-type': this.options.registry.contentType });
        response.end(await this.options.registry.metrics());
        return;
      case '/healthz':
        sendJson(response, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const report = await this.options.readiness();
        sendJson(response, report.ready ? 200 : 503, { status: report.ready ? 'ready' : 'not ready', problems: report.problems, accountsReady: report.accountsReady, accounts: report.accounts, cluster: report.cluster, workers: report.workers });
        return;
      }
      case '/readyz/accounts': {
        const report = await this.options.readiness();
        sendJson(response, report.accountsReady ? 200 : 503, { status: report.accountsReady ? 'ready' : 'not ready', accounts: report.accounts });
        return;
      }
      default:
        sendJson(response, 404, { error: 'not found', endpoints: ENDPOINTS });
    }
  }
}

const ENDPOINTS = ['/metrics', '/healthz', '/readyz', '/readyz/accounts'];

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  response.end(JSON.stringify(body, null, 2) + '\n');
}
