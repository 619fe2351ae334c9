import type { UserConfig } from '../config/index.js';
import { reject, type SmtpError } from '../reply.js';

/**
 * Where a device may send: at most so many recipients a message, and, when the user lists
 * allowRecipients, only to those addresses or domains. A stolen printer password then cannot
 * spam the world.
 */
export class RecipientPolicy {
  private readonly allowLists = new WeakMap<UserConfig, { addresses: Set<string>; domains: Set<string> }>();

  constructor(private readonly defaultMax: number) {}

  check(user: UserConfig, address: string, alreadyAccepted: number): SmtpError | undefined {
    if (alreadyAccepted >= (user.maxRecipients ?? this.defaultMax)) {
      return reject('policy', 452, '4.5.3', 'Too many recipients for one message; send the rest in another');
    }
    if (!user.allowRecipients) return undefined;
    const { addresses, domains } = this.allowListOf(user);
    const lower = address.toLowerCase();
    if (addresses.has(lower) || domains.has(lower.slice(lower.lastIndexOf('@') + 1))) return undefined;
    return reject('policy', 550, '5.7.1', 'Recipient not allowed for this device');
  }

  private allowListOf(user: UserConfig) {
    let list = this.allowLists.get(user);
    if (!list) {
      const entries = (user.allowRecipients ?? []).map((entry) => entry.toLowerCase().trim());
      list = {
        addresses: new Set(entries.filter((entry) => /^[^@]+@/.test(entry))),
        domains: new Set(entries.filter((entry) => !/^[^@]+@/.test(entry)).map((entry) => entry.replace(/^@/, ''))),
      };
      this.allowLists.set(user, list);
    }
    return list;
  }
}
