import type { Logger } from '../log.js';
import type { DeliveryAgent } from '../spool/index.js';
import type { TokenStore } from '../oauth/index.js';
import type { ControlReply, ControlRequest } from './protocol.js';
import type { ClusterLog } from '../trace/index.js';

export interface DaemonParts {
  agent: DeliveryAgent;
  store: TokenStore;
  logger: Logger;
  /** The changed config keys the last SIGHUP could not apply. */
  pendingRestart: () => string[];
  clusterLog: ClusterLog;
}

/** What the running daemon does for each CLI request: the daemon changes its own records. */
export function daemonCommands({ agent, store, logger, pendingRestart, clusterLog }: DaemonParts): (request: ControlRequest) => Promise<ControlReply> {
  return async (request) => {
    switch (request.op) {
      case 'queue-retry': {
        const count = agent.retryNow(request.id);
        if (request.id && count === 0) return { code: 1, output: `${request.id}: not waiting in the queue (delivered, failed, being delivered, or unknown)\n` };
        return { code: 0, output: `${count} message(s) scheduled for delivery now\n` };
      }
      case 'queue-delete': {
        const outcome = await agent.delete(request.id);
        if (outcome === 'deleted') return { code: 0, output: `${request.id} deleted\n` };
        if (outcome === 'in_flight') return { code: 1, output: `${request.id} is being delivered right now; try again in a moment\n` };
        return { code: 1, output: `${request.id}: no such message in the queue or the failed area\n` };
      }
      case 'tokens-rekey': {
        const accounts = await store.switchKey(request.newKey, request.oldKey);
        logger.info({ accounts }, 'token store re-encrypted at the request of `tokens encrypt`');
        return { code: 0, output: `${accounts.length} token file(s) now encrypted with the configured tokenKey (by the running relay): ${accounts.join(', ') || 'none'}\n` };
      }
      case 'trace-search':
        // The output is the search result as JSON: the CLI formats it (or prints it with --json).
        return { code: 0, output: JSON.stringify(await clusterLog.search(request.query)) };
      case 'pending-restart':
        return { code: 0, output: pendingRestart().join('\n') };
      default:
        return { code: 2, output: 'unknown request\n' };
    }
  };
}
