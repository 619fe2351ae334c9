import type { ResolvedAccount } from '../config/index.js';
import type { AccessTokens } from '../oauth/index.js';
import { GmailTransport } from './gmail-transport.js';
import { GraphTransport } from './graph-transport.js';
import { SmtpTransport } from './smtp-transport.js';
import type { Transport } from './transport.js';
import type { Logger } from '../log.js';
import type { SessionSlots } from './smtp-pool.js';

/** The account's transport (upstream.transport). */
export function createTransport(account: ResolvedAccount, tokens: AccessTokens, hostname: string, options: { sessions: SessionSlots; scratchDir: string; logger: Logger }): Transport {
  switch (account.upstream.transport) {
    case 'graph':
      return new GraphTransport(account, tokens, options.scratchDir, options.logger);
    case 'gmail':
      return new GmailTransport(account, tokens);
    default:
      return new SmtpTransport(account, tokens, hostname, options.sessions);
  }
}
