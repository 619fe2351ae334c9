import path from 'node:path';
import type { TraceQuery } from '../trace/index.js';

/**
 * What the CLI asks of a running daemon. The daemon owns the spool and the token store while it
 * runs: the CLI never rewrites a record the daemon may be changing, it asks.
 */
export type ControlRequest =
  /** Is a daemon answering on this data folder? */
  | { op: 'ping' }
  | { op: 'queue-retry'; id?: string }
  | { op: 'queue-delete'; id: string }
  /** Re-writes the token store with newKey (reading with oldKey, else the daemon's own key). */
  | { op: 'tokens-rekey'; newKey: string; oldKey?: string }
  /** Searches the delivery log (of every replica, in a cluster); the output is a TraceSearchResult as JSON. */
  | { op: 'trace-search'; query: TraceQuery }
  /** The changed config keys the last SIGHUP could not apply (one a line). */
  | { op: 'pending-restart' };

export interface ControlReply {
  /** The CLI's exit code. */
  code: number;
  output: string;
}

/** The daemon's control socket: owner-only, inside the data folder it guards. */
export function controlSocketPath(dataDir: string): string {
  return path.join(path.resolve(dataDir), 'run', 'control.sock');
}

/** Unix socket paths are limited to 107 bytes on Linux. */
export const MAX_SOCKET_PATH = 107;
